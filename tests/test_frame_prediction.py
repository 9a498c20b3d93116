"""Next-frame prediction: the moving_digits builder (deterministic, digits inside the canvas,
bouncing), causality of the predictions, the loss against NumPy, sharded = single-device steps,
the video pipeline's exact resumption, one step of moving_mnist and ucf101 on mock TFDS data,
and a run end to end (pictures and held-out metrics in the report)."""
import itertools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import frame_prediction as frame_prediction_config
from ssl_jax import config_lib, evaluate, train
from ssl_jax.data import inputs as inputs_lib
from ssl_jax.data.builders import digits, moving_digits
from ssl_jax.methods import frame_prediction
from tests.tiny_configs import assert_sharded_equals_single_device, override, steps_on_meshes

_TINY_NETWORK = {"frame_prediction.encoder_widths": (4, 8), "frame_prediction.code_dim": 8,
                 "frame_prediction.state_width": 8, "frame_prediction.decoder_widths": (8, 4)}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def _tiny(data_dir, variant="moving_digits,runlocal=True", **dotted):
  config = frame_prediction_config.get_config(variant)
  config.unlock()
  return override(config, **{
      "data.data_dir": data_dir, "batch_size": 16, "total_steps": 3, "evaluate_at_end": False,
      "mesh": "data:1", "evals.probes.protocols": ("linear", "knn"), "evals.probes.labels_per_class": (5,),
      "evals.probes.seeds": 1, "evals.pictures.num_pictures": 2, **_TINY_NETWORK, **dotted})


def test_moving_digits_are_deterministic_inside_the_canvas_and_bounce():
  images, _, indices = digits.load_split_indices()
  index = indices["test"][0]
  video = moving_digits.moving_digit(images[index], "test", index)
  assert video.shape == (10, 32, 32, 1) and video.dtype == np.uint8
  np.testing.assert_array_equal(video, moving_digits.moving_digit(images[index], "test", index))
  assert not np.array_equal(video, moving_digits.moving_digit(images[index], "train", index))
  sprite = images[index].repeat(2, axis=0).repeat(2, axis=1)
  for frame in video:  # the whole 16x16 digit in every frame: nothing is cut at a wall
    assert frame.sum() == sprite.astype(np.int64).sum()
  corners = moving_digits.trajectory(np.random.default_rng(0), 200, 16)
  assert corners.min() >= 0 and corners.max() <= 16
  steps = np.diff(corners, axis=0)
  assert np.all(np.abs(steps) <= 3)
  flips = np.sign(steps[1:]) != np.sign(steps[:-1])
  assert flips.any(), "no bounce in 200 frames"
  # With speeds of at most 3 a step can only be reflected within 3 pixels of a wall.
  middle = corners[1:-1]
  assert np.all(np.minimum(middle, 16 - middle)[flips] <= 3)


def test_prediction_of_frame_t_plus_1_never_sees_later_frames(data_dir):
  config = _tiny(data_dir)
  model = frame_prediction.network(config)
  frames = jax.random.uniform(jax.random.PRNGKey(0), (2, 10, 32, 32, 1))
  params = model.init(jax.random.PRNGKey(1), frames)["params"]
  _, predictions = model.apply({"params": params}, frames)
  t = 5  # prediction t reads frames 0..t
  changed = frames.at[:, t + 1:].set(1.0)
  _, changed_predictions = model.apply({"params": params}, changed)
  np.testing.assert_allclose(changed_predictions[:, :t + 1], predictions[:, :t + 1], atol=1e-6)
  assert not np.allclose(changed_predictions[:, t + 1:], predictions[:, t + 1:])


def _reference_loss(outputs, frames, context, likelihood):
  """The mean over scored predictions (target frame >= context) and pixels, by loops."""
  terms = []
  for t in range(frames.shape[1] - 1):
    if t + 1 < context:
      continue
    logit, target = outputs[:, t].astype(np.float64), frames[:, t + 1].astype(np.float64)
    if likelihood == "bernoulli":
      p = 1 / (1 + np.exp(-logit))
      cross = -(target * np.log(p) + (1 - target) * np.log(1 - p))
      entropy = -(target * np.log(np.where(target > 0, target, 1)) +
                  (1 - target) * np.log(np.where(target < 1, 1 - target, 1)))
      terms.append(np.mean(cross - entropy))
    else:
      terms.append(np.mean((logit - target) ** 2))
  return np.mean(terms)


@pytest.mark.parametrize("likelihood", ["bernoulli", "mse"])
def test_loss_matches_numpy(likelihood):
  rng = np.random.default_rng(0)
  frames = rng.uniform(size=(3, 6, 4, 4, 1)).astype(np.float32)
  frames[0, 2] = 1.0  # exact 0 / 1 pixels have no entropy
  frames[1, 3] = 0.0
  outputs = rng.normal(size=(3, 5, 4, 4, 1)).astype(np.float32)
  got = frame_prediction.prediction_loss(jnp.asarray(outputs), jnp.asarray(frames), 2,
                                         likelihood)
  np.testing.assert_allclose(got, _reference_loss(outputs, frames, 2, likelihood), rtol=1e-5)


def test_sharded_step_equals_single_device(data_dir):
  config = _tiny(data_dir, mesh="data:-1")
  rng = np.random.default_rng(0)
  batches = [{"frames": rng.integers(0, 256, size=(16, 10, 32, 32, 1)).astype(np.uint8),
              "label": rng.integers(0, 10, size=(16,)).astype(np.int32)} for _ in range(2)]
  length = config_lib.training_length(config, 1257)
  results = steps_on_meshes(config, batches, (10, 32, 32, 1), length)
  assert_sharded_equals_single_device(results)


def test_pipeline_resumes_exactly(data_dir):
  config = _tiny(data_dir, batch_size=128)
  inputs = inputs_lib.Inputs(config)
  info = inputs.info()
  assert info.input_shape == (10, 32, 32, 1) and info.num_classes == 10
  assert (info.num_train_examples, info.num_test_examples) == (1257, 540)
  stream = lambda start, count: list(itertools.islice(inputs.train_batches(
      start_step=start, process_index=0, process_count=1), count))
  whole, resumed = stream(0, 12), stream(8, 4)  # 9 steps per epoch: crosses an epoch
  for expected, got in zip(whole[8:], resumed):
    for key in ("frames", "label"):
      np.testing.assert_array_equal(expected[key], got[key], err_msg=key)
  assert whole[0]["frames"].dtype == np.uint8 and whole[0]["frames"].shape == (128, 10, 32,
                                                                               32, 1)
  assert not np.array_equal(whole[0]["label"], whole[9]["label"])
  batches = list(inputs.eval_batches("test", batch_size=256))
  assert sum(int(b["mask"].sum()) for b in batches) == 540 and len(batches) == 3


@pytest.mark.parametrize("variant,dotted", [
    ("moving_mnist", {"data.train_split": "test[:50%]", "data.test_split": "test[50%:]",
                      "data.num_frames": 4, "data.image_size": 16,
                      "frame_prediction.context_frames": 2}),
    ("ucf101", {"data.num_frames": 4, "data.image_size": 16,
                "frame_prediction.context_frames": 2}),
])
def test_one_step_on_mock_tfds(tmp_path, variant, dotted):
  config = _tiny(None, f"{variant},runlocal=True", total_steps=1, batch_size=4, **dotted)
  with tfds.testing.mock_data(num_examples=8):
    state = train.run(config, str(tmp_path))
  assert int(state["step"]) == 1
  row = json.loads(open(tmp_path / "metrics.jsonl").readline())
  assert row["step"] == 1 and np.isfinite(row["loss"]) and "prediction_mse" in row


def test_unlabelled_video_reports_held_out_metrics_without_probes(tmp_path):
  config = _tiny(None, "moving_mnist,runlocal=True", total_steps=2, batch_size=4, **{
      "data.train_split": "test[:50%]", "data.test_split": "test[50%:]",
      "data.num_frames": 4, "data.image_size": 16, "frame_prediction.context_frames": 2})
  with tfds.testing.mock_data(num_examples=8):
    train.run(config, str(tmp_path))
    report = evaluate.run(str(tmp_path))
  assert report["results"] == [] and report["held_out"]["mse"] >= 0
  assert os.path.exists(tmp_path / "eval" / "predicted_frames.png")
  assert "No probes" in open(tmp_path / "eval" / "report.md").read()


def test_train_then_evaluate_draws_frames_and_reports(data_dir, tmp_path):
  # kNN only: a linear probe of the raw baseline (10 x 32 x 32 = 10,240 dimensions) factors a
  # 10,240 x 10,240 covariance, about 30 of this test's 50 s, and tests nothing of frame
  # prediction (the probes' protocols are tested on digits, tests/test_probes.py).
  config = _tiny(data_dir, total_steps=4, **{"evals.probes.protocols": ("knn",)})
  train.run(config, str(tmp_path))
  report = evaluate.run(str(tmp_path))
  assert {(row["features"], row["protocol"]) for row in report["results"]} == {
      ("ssl", "knn"), ("random_init", "knn"), ("raw", "knn")}
  assert all(0 <= row["accuracy"] <= 1 for row in report["results"])
  held_out = report["held_out"]
  assert 0 <= held_out["mse"] <= 1 and 0 < held_out["copy_last_frame_mse"] < 1
  assert held_out["psnr"] > 0
  assert report["pictures"] == ["predicted_frames.png"]
  png = tmp_path / "eval" / "predicted_frames.png"
  from PIL import Image  # pylint: disable=g-import-not-at-top
  width, height = Image.open(png).size
  assert (height, width) == (4 * 64 + 3, 10 * 64 + 9)  # 2 clips x (true, predicted) x 10 frames
  assert "predicted_frames.png" in open(tmp_path / "eval" / "report.md").read()
