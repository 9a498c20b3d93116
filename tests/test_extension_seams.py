"""The modality and evaluator seams, end to end: a modality and an evaluator written outside
the library (in this test's folder, as a user's own package) are found by name from a config
and run through `python -m ssl_jax.main`, training and evaluation, with no library file edited.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A modality with its own data source and no TensorFlow: 8x8 grey images of noise with one
# bright horizontal bar whose row is the class; it reuses the image modality's device side.
BARS_MODALITY = '''
import math

import numpy as np

from ssl_jax.data.inputs import DatasetInfo
from ssl_jax.modalities.image import Image

SIDE, CLASSES, SIZES = 8, 4, {"train": 256, "test": 96}


def examples(split):
  rng = np.random.default_rng(0 if split == "train" else 1)
  labels = rng.integers(0, CLASSES, SIZES[split]).astype(np.int32)
  images = rng.integers(0, 60, (SIZES[split], SIDE, SIDE, 1)).astype(np.uint8)
  for row, label in enumerate(labels):
    images[row, 2 * label:2 * label + 2, :, 0] = 230
  return images, labels


class Bars(Image):

  def dataset_info(self, config):
    return DatasetInfo(SIZES["train"], SIZES["test"], CLASSES, (SIDE, SIDE, 1),
                       tuple(f"bar {c}" for c in range(CLASSES)))

  def train_batches(self, inputs, *, start_step, process_index, process_count):
    config = inputs.config
    images, labels = examples("train")
    step = start_step
    while True:
      rows = np.random.default_rng([config.seed, process_index, step]).integers(
          0, len(labels), config.batch_size // process_count)
      yield {"views": np.repeat(images[rows][:, None], config.data.num_views, axis=1),
             "label": labels[rows]}
      step += 1

  def eval_batches(self, inputs, split, *, batch_size, process_index, process_count):
    images, labels = examples(split)
    shards = np.array_split(np.arange(len(labels)), process_count)
    mine = shards[process_index]
    for start in range(0, math.ceil(max(map(len, shards)) / batch_size) * batch_size,
                       batch_size):
      rows = mine[start:start + batch_size]
      pad = batch_size - len(rows)
      yield {"image": np.concatenate([images[rows], np.zeros((pad, SIDE, SIDE, 1), np.uint8)]),
             "label": np.concatenate([labels[rows], np.zeros((pad,), np.int32)]),
             "mask": np.arange(batch_size) < len(rows)}


MODALITY = Bars()
'''

# An evaluator: nearest class mean on one feature source's frozen features.
NEAREST_MEAN_EVALUATOR = '''
import numpy as np

from ssl_jax.errors import UserError
from ssl_jax.evaluators import FEATURE_SOURCES, Evaluator as EvaluatorBase, Output


class Evaluator(EvaluatorBase):

  def check(self):
    if self.settings.source not in FEATURE_SOURCES:
      raise UserError(f"config.evals.{self.name}.source must be one of {FEATURE_SOURCES}, "
                      f"got {self.settings.source!r}")

  def run(self, context):
    (train_x, train_y), (test_x, test_y) = context.features(self.settings.source)
    means = np.stack([train_x[train_y == c].mean(axis=0) for c in range(context.num_classes)])
    predicted = np.argmin(((test_x[:, None] - means[None]) ** 2).sum(-1), axis=1)
    np.save(self.settings.dump, np.concatenate([test_x, test_y[:, None]], axis=1))
    return Output(
        rows=[{"features": self.settings.source, "protocol": "nearest_mean",
               "labels_per_class": None, "accuracy": round(float(np.mean(predicted == test_y)), 6),
               "std": 0.0, "seeds": 1}],
        sections={"nearest_mean": {"test_examples": int(len(test_y)), "classes": len(means)}})
'''

CONFIG = '''
import ml_collections

from configs import simclr


def get_config(arg=None):
  c = simclr.get_config("digits")
  c.unlock()
  c.dataset = "bars"
  c.data.modality = "toy_extension.bars"
  c.encoder.widths = (8, 16)
  c.projector.update(hidden_dim=16, output_dim=8)
  c.update(batch_size=32, total_steps=4, log_every_steps=2, checkpoint_every_steps=4,
           mesh="data:1")
  c.optimizer.warmup_steps = 1
  c.eval.feature_sources = ("ssl", "raw")
  c.evals.probes.update(protocols=("knn",), labels_per_class=(0,), seeds=1)
  c.evals.finetune.fractions = ()
  c.evals.plots.enabled = False
  c.evals.nearest = ml_collections.ConfigDict(dict(
      type="toy_extension.nearest_mean", source="raw", dump=arg))
  c.lock()
  return c
'''


@pytest.fixture
def extension(tmp_path):
  package = tmp_path / "toy_extension"
  package.mkdir()
  (package / "__init__.py").write_text("")
  (package / "bars.py").write_text(textwrap.dedent(BARS_MODALITY))
  (package / "nearest_mean.py").write_text(textwrap.dedent(NEAREST_MEAN_EVALUATOR))
  config = tmp_path / "bars_config.py"
  config.write_text(textwrap.dedent(CONFIG))
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), ROOT])}
  return config, env


def _main(config, env, workdir, *overrides):
  return subprocess.run(
      [sys.executable, "-m", "ssl_jax.main", f"--config={config}:{workdir}/dump.npy",
       f"--workdir={workdir}", *overrides], cwd=ROOT, env=env, capture_output=True, text=True,
      timeout=600)


@pytest.mark.slow
def test_a_users_modality_and_evaluator_run_through_main(extension, tmp_path):
  config, env = extension
  workdir = tmp_path / "run"
  workdir.mkdir()
  result = _main(config, env, workdir)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.load(open(workdir / "eval" / "report.json"))
  assert report["dataset"] == "bars" and report["checkpoint_step"] == 4
  assert report["nearest_mean"] == {"test_examples": 96, "classes": 4}
  rows = {(r["features"], r["protocol"]): r["accuracy"] for r in report["results"]}
  assert set(rows) == {("ssl", "knn"), ("raw", "knn"), ("raw", "nearest_mean")}
  # The raw features the evaluator saw are the modality's own test images, in order.
  import numpy as np  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, str(tmp_path))
  from toy_extension import bars  # pylint: disable=g-import-not-at-top
  images, labels = bars.examples("test")
  dumped = np.load(workdir / "dump.npy")
  np.testing.assert_allclose(dumped[:, :-1], images.reshape(96, -1) / 255.0, rtol=1e-6)
  np.testing.assert_array_equal(dumped[:, -1], labels)
  means = np.stack([bars.examples("train")[0].reshape(256, -1)[
      bars.examples("train")[1] == c].mean(axis=0) / 255.0 for c in range(4)])
  expected = np.mean(np.argmin(((images.reshape(96, 1, -1) / 255.0 - means[None]) ** 2).sum(-1),
                               axis=1) == labels)
  assert rows[("raw", "nearest_mean")] == pytest.approx(expected, abs=1e-6)
  assert expected > 0.9  # the bar's row is the class
  assert "| nearest_mean | all |" in open(workdir / "eval" / "report.md").read()


def test_a_users_evaluator_settings_are_checked_before_training(extension, tmp_path):
  config, env = extension
  workdir = tmp_path / "bad"
  workdir.mkdir()
  result = _main(config, env, workdir, "--config.evals.nearest.source=nope")
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert "error: config.evals.nearest.source must be one of" in result.stderr
  assert not (workdir / "checkpoints").exists()
