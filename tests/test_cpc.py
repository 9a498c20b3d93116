"""CPC on sequences: the InfoNCE loss against a NumPy reading of the paper's Eq. 4, causality of
the context, sharded = single-device steps, the `sequences` builder, the sequence pipeline's
exact resumption, one step of speech_commands on mock TFDS data, and a run end to end."""
import itertools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import cpc as cpc_config
from ssl_jax import config_lib, evaluate, losses, train
from ssl_jax.data import inputs as inputs_lib
from ssl_jax.data.builders import sequences
from ssl_jax.methods import cpc
from tests.tiny_configs import assert_sharded_equals_single_device, override, steps_on_meshes


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def _tiny(data_dir, variant="japanese_vowels,runlocal=True", **dotted):
  config = cpc_config.get_config(variant)
  config.unlock()
  return override(config, **{
      "data.data_dir": data_dir, "batch_size": 16, "total_steps": 3, "evaluate_at_end": False,
      "mesh": "data:1", "cpc.widths": (8, 8), "cpc.context_width": 8,
      "cpc.prediction_steps": 2, "evals.probes.protocols": ("linear", "knn"),
      "evals.probes.labels_per_class": (5,), "evals.probes.seeds": 1, **dotted})


def _reference_info_nce(predictions, targets, valid):
  """Eq. 4 read literally: for every recorded target z_{i,t+k}, -log of its score
  exp(z^T W_k c_t) over the scores of all recorded z_{j,t+k} of the batch; mean over queries."""
  num_steps, batch, length, _ = predictions.shape
  terms, correct = [], np.zeros(num_steps)
  for k in range(1, num_steps + 1):
    hits = count = 0
    for i in range(batch):
      for t in range(length - k):
        if not valid[i, t + k]:
          continue
        candidates = [j for j in range(batch) if valid[j, t + k]]
        scores = np.array([targets[j, t + k] @ predictions[k - 1, i, t] for j in candidates])
        positive = candidates.index(i)
        terms.append(-(scores[positive] - np.log(np.sum(np.exp(scores)))))
        hits += int(np.argmax(scores) == positive)
        count += 1
    correct[k - 1] = hits / count
  return np.mean(terms), correct


def test_info_nce_matches_the_papers_equation_4():
  rng = np.random.default_rng(0)
  predictions = rng.normal(size=(3, 5, 7, 4)).astype(np.float32)
  targets = rng.normal(size=(5, 7, 4)).astype(np.float32)
  valid = np.arange(7)[None, :] < np.array([7, 5, 7, 2, 6])[:, None]
  loss, accuracy = losses.cpc_info_nce(jnp.asarray(predictions), jnp.asarray(targets),
                                       jnp.asarray(valid))
  expected_loss, expected_accuracy = _reference_info_nce(predictions, targets, valid)
  np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
  np.testing.assert_allclose(accuracy, expected_accuracy, rtol=1e-6)


def test_context_at_step_t_never_sees_later_frames(data_dir):
  config = _tiny(data_dir, **{"cpc.strides": (2, 1), "cpc.kernels": (4, 3)})
  model = cpc.network(config)
  signal = jax.random.normal(jax.random.PRNGKey(0), (2, 29, 12))
  params = model.init(jax.random.PRNGKey(1), signal)["params"]
  _, context, _ = model.apply({"params": params}, signal)
  t = 6  # encoded step 6 reads frames 0..13 (stride 2)
  changed = signal.at[:, 2 * (t + 1):].set(5.0)
  _, changed_context, _ = model.apply({"params": params}, changed)
  np.testing.assert_allclose(changed_context[:, :t + 1], context[:, :t + 1], atol=1e-6)
  assert not np.allclose(changed_context[:, t + 1:], context[:, t + 1:])


def test_sharded_step_equals_single_device(data_dir):
  config = _tiny(data_dir, mesh="data:-1")
  rng = np.random.default_rng(0)
  batches = [{"signal": rng.normal(size=(16, 29, 12)).astype(np.float32),
              "length": rng.integers(7, 30, size=(16,)).astype(np.int32),
              "label": rng.integers(0, 9, size=(16,)).astype(np.int32)} for _ in range(2)]
  length = config_lib.training_length(config, 270)
  results = steps_on_meshes(config, batches, (29, 12), length)
  assert_sharded_equals_single_device(results)


def test_builder_parses_the_ts_format():
  text = """# a comment
@problemName Toy
@univariate false
@dimensions 2
@equalLength false
@classLabel true up down
@data
1.0,2.0,3.0:4.0,5.0,6.0:down
-1.5,0.5:2.5,3.5:up
"""
  problem = sequences.parse_ts(text)
  assert problem.class_names == ("up", "down")
  assert problem.labels == [1, 0]
  np.testing.assert_array_equal(problem.series[0], [[1, 4], [2, 5], [3, 6]])
  np.testing.assert_array_equal(problem.series[1], [[-1.5, 2.5], [0.5, 3.5]])
  np.testing.assert_array_equal(sequences.pad_series(problem.series[1], 3),
                                [[-1.5, 2.5], [0.5, 3.5], [0, 0]])


@pytest.mark.parametrize("name,sizes,shape,classes", [
    ("japanese_vowels", (270, 370), (29, 12), 9), ("basic_motions", (40, 40), (100, 6), 4)])
def test_real_files_give_the_documented_sizes(data_dir, name, sizes, shape, classes):
  builder = tfds.builder(f"sequences/{name}", data_dir=data_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  assert (builder.info.splits["train"].num_examples,
          builder.info.splits["test"].num_examples) == sizes
  assert builder.info.features["signal"].shape == shape
  assert builder.info.features["label"].num_classes == classes
  lengths = [int(ex["length"]) for ex in tfds.as_numpy(builder.as_dataset(split="test"))]
  assert max(lengths) == shape[0] and (min(lengths) == 7 if name == "japanese_vowels" else True)


def test_pipeline_standardises_and_resumes_exactly(data_dir):
  config = _tiny(data_dir)
  inputs = inputs_lib.Inputs(config)
  assert inputs.info().input_shape == (29, 12) and inputs.info().num_classes == 9
  stream = lambda start, count: list(itertools.islice(inputs.train_batches(
      start_step=start, process_index=0, process_count=1), count))
  whole, resumed = stream(0, 20), stream(17, 3)  # 16 steps per epoch: crosses an epoch
  for expected, got in zip(whole[17:], resumed):
    for key in ("signal", "length", "label"):
      np.testing.assert_array_equal(expected[key], got[key], err_msg=key)
  assert not np.array_equal(whole[0]["signal"], whole[16]["signal"])
  epoch = whole[:16]
  frames = np.concatenate([b["signal"][i, :n] for b in epoch for i, n in enumerate(b["length"])])
  np.testing.assert_allclose(frames.mean(0), 0, atol=0.05)
  np.testing.assert_allclose(frames.std(0), 1, atol=0.05)
  for b in epoch:
    assert all(np.all(row[n:] == 0) for row, n in zip(b["signal"], b["length"]))
  batches = list(inputs.eval_batches("test", batch_size=64))
  assert sum(int(b["mask"].sum()) for b in batches) == 370 and len(batches) == 6


def test_one_step_of_speech_commands_on_mock_tfds(tmp_path):
  config = _tiny(None, "speech_commands,runlocal=True", total_steps=1, batch_size=4,
                 **{"cpc.widths": (8,) * 5, "cpc.prediction_steps": 3,
                    "data.max_length": 1600})
  with tfds.testing.mock_data(num_examples=8):
    state = train.run(config, str(tmp_path))
  assert int(state["step"]) == 1
  row = json.loads(open(tmp_path / "metrics.jsonl").readline())
  assert row["step"] == 1 and np.isfinite(row["loss"]) and "cpc_accuracy_k3" in row


def test_train_then_evaluate_reports_all_feature_sources(data_dir, tmp_path):
  config = _tiny(data_dir, total_steps=4)
  train.run(config, str(tmp_path))
  report = evaluate.run(str(tmp_path))
  sources = {row["features"] for row in report["results"]}
  assert sources == {"ssl", "random_init", "raw"}
  assert os.path.exists(tmp_path / "eval" / "report.md")
  assert 0.0 <= report["held_out"]["cpc_accuracy"] <= 1.0
