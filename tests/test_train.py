"""The trainer: resume == uninterrupted, NaN stop, mock TFDS, evaluate (sharded == single device
for every method is in test_joint_embedding.py, so only the evaluation test, which restores
and evaluates on the mesh, compiles for 8 devices)."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import simclr
from ssl_jax import checkpoint as checkpoint_lib
from ssl_jax import evaluate, main, methods, train
from ssl_jax.errors import TrainingDivergedError
from tiny_configs import override, tiny_digits


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tensorflow_datasets"))


def test_resume_20_then_40_equals_40_at_once(tmp_path, data_dir):
  common = {"checkpoint_every_steps": 10, "log_every_steps": 10, "optimizer.decay_steps": 40,
            "mesh": "data:1"}
  interrupted = str(tmp_path / "interrupted")
  train.run(tiny_digits(data_dir, total_steps=20, **common), interrupted)
  assert checkpoint_lib.Checkpointer(interrupted, read_only=True).latest_step() == 20
  resumed = train.run(tiny_digits(data_dir, total_steps=40, **common), interrupted)
  at_once = train.run(tiny_digits(data_dir, total_steps=40, **common), str(tmp_path / "at_once"))
  assert int(resumed["step"]) == int(at_once["step"]) == 40
  for a, b in zip(jax.tree.leaves(resumed["params"]), jax.tree.leaves(at_once["params"])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
  steps = sorted(int(name) for name in os.listdir(os.path.join(interrupted, "checkpoints"))
                 if name.isdigit())
  assert steps == [20, 30, 40]  # keep_checkpoints = 3
  rows = [json.loads(line) for line in open(os.path.join(interrupted, "metrics.jsonl"))]
  assert [r["step"] for r in rows] == [10, 20, 30, 40]
  assert {"loss", "lr", "images_per_second", "eta_seconds", "probe_accuracy"} <= set(rows[0])


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data_dir, monkeypatch):
  build = methods.build

  def build_with_nan_after_step_4(config, length):
    method = build(config, length)

    def loss(params, extra, batch, rng, step):
      value, output = method.loss(params, extra, batch, rng, step)
      return jax.numpy.where(step >= 4, jax.numpy.nan, value), output

    return methods.Method(init=method.init, loss=loss, represent=method.represent)

  monkeypatch.setattr(methods, "build", build_with_nan_after_step_4)
  workdir = str(tmp_path / "run")
  config = tiny_digits(data_dir, total_steps=10, log_every_steps=2, checkpoint_every_steps=2,
                       mesh="data:1")
  with pytest.raises(TrainingDivergedError, match=r"loss is nan at step 6.*step 4\) is kept"):
    train.run(config, workdir)
  checkpoints = checkpoint_lib.Checkpointer(workdir, read_only=True)
  assert checkpoints.latest_step() == 4


@pytest.mark.parametrize("variant,num_examples", [("cifar10", 32), ("imagenet2012", 16)])
def test_one_step_on_mock_tfds(tmp_path, variant, num_examples):
  """SimCLR's real backbones (ResNet-18 CIFAR stem, ResNet-50) and pipelines on one device:
  compiling ResNet-50's step for 8 fake devices takes over twice as long, and the sharded
  step is tested with tiny networks elsewhere."""
  config = simclr.get_config(f"{variant},runlocal=True")
  config.unlock()
  override(config, total_steps=1, evaluate_at_end=False, batch_size=8, mesh="data:1")
  if variant == "imagenet2012":
    override(config, **{"data.image_size": 64, "data.eval_resize": 72})
  with tfds.testing.mock_data(num_examples=num_examples):
    state = train.run(config, str(tmp_path / variant))
  assert int(state["step"]) == 1
  row = json.loads(open(tmp_path / variant / "metrics.jsonl").readline())
  assert row["step"] == 1 and np.isfinite(row["loss"])
  # Logits differ by at most 2 / T, so NT-Xent lies within log(2N - 1) +- 2 / T (N = 8).
  assert abs(row["loss"] - np.log(15)) <= 2 / config.simclr.temperature


def test_pretrain_then_evaluate_from_checkpoint(tmp_path, data_dir):
  workdir = str(tmp_path / "run")
  config = tiny_digits(data_dir, total_steps=12, evaluate_at_end=True)
  config.expected.targets = ({"cell": "linear@all", "accuracy": 50.0, "source": "a test",
                              "compute": "none"},)
  main.run(config, workdir)
  report = json.load(open(os.path.join(workdir, "eval", "report.json")))
  # The published target beside the achieved cell and their difference.
  (compared,) = report["expected"]["targets"]
  achieved = 100 * next(r["accuracy"] for r in report["results"]
                        if (r["features"], r["protocol"], r["labels_per_class"]) ==
                        ("ssl", "linear", None))
  assert compared["achieved"] == pytest.approx(achieved)
  assert compared["difference"] == pytest.approx(achieved - 50.0)
  assert "## Expected (published) vs achieved" in open(
      os.path.join(workdir, "eval", "report.md")).read()
  del report["expected"]
  assert report["dataset"] == "digits" and report["checkpoint_step"] == 12
  rows = {(r["features"], r["protocol"], r["labels_per_class"]): r for r in report["results"]}
  assert set(rows) == {(f, p, n) for f in ("ssl", "random_init", "raw")
                       for p in ("linear", "knn", "label_propagation", "fewshot")
                       for n in (1, None)}
  for (_, _, per_class), row in rows.items():
    assert set(row) == {"features", "protocol", "labels_per_class", "accuracy", "std", "seeds"}
    assert row["seeds"] == 2
    assert 0.0 <= row["accuracy"] <= 1.0
  # Raw pixels with all labels are a strong baseline on digits (scikit-learn: 97.2% logistic).
  assert rows[("raw", "linear", None)]["accuracy"] > 0.94
  assert rows[("raw", "knn", None)]["accuracy"] > 0.94
  # Even a 12-step network is far better than chance.
  assert rows[("ssl", "linear", None)]["accuracy"] > 0.5
  assert "| label_propagation | 1 |" in open(os.path.join(workdir, "eval", "report.md")).read()

  # The documented re-evaluation command, in a fresh process, restores the same checkpoint
  # to the same numbers. Only the `ssl` source, the one read from the checkpoint (`raw` and
  # `random_init` do not depend on it); its report goes beside the original, which it
  # leaves as it was.
  original = open(os.path.join(workdir, "eval", "report.json")).read()
  overrides = {"eval.feature_sources": "('ssl',)"}
  result = subprocess.run([sys.executable, "-m", "ssl_jax.evaluate", f"--workdir={workdir}",
                           *(f"--config.{key}={value}" for key, value in overrides.items())],
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert open(os.path.join(workdir, "eval", "report.json")).read() == original
  again = json.load(open(os.path.join(evaluate.report_dir(workdir, overrides), "report.json")))
  assert again["overrides"] == overrides
  first = [r for r in report["results"] if r["features"] == "ssl"]
  assert len(first) == 8 and [(r["features"], r["protocol"], r["labels_per_class"])
                              for r in again["results"]] == [
      (r["features"], r["protocol"], r["labels_per_class"]) for r in first]
  for first_row, second_row in zip(first, again["results"]):
    assert abs(first_row["accuracy"] - second_row["accuracy"]) < 0.01, (first_row, second_row)
