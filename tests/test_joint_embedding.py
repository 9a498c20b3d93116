"""Every joint-embedding method through the one trainer: the sharded step equals the 1-device
step (so batch statistics, queues and centres span the global batch), each `cifar10` config
(and DINO's multi-crop ViT `imagenet2012` config) runs a step on mock TFDS data, and a short
digits run does not collapse."""
import importlib
import json

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from ssl_jax import config_lib, losses, methods, parallel, train
from ssl_jax.data import pipeline
from tiny_configs import JOINT_EMBEDDING, override, tiny_method

LENGTH = config_lib.TrainingLength(steps_per_epoch=10, total_steps=50, schedule_steps=50)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tensorflow_datasets"))


def _random_batches(config, num_steps):
  rng = np.random.default_rng(0)
  batches = []
  for _ in range(num_steps):
    batch = {"views": rng.integers(0, 256, (32, 2, 8, 8, 1), np.uint8),
             "label": rng.integers(0, 10, (32,), np.int32)}
    if config.data.local_views:
      side = config.data.local_image_size
      batch["local_views"] = rng.integers(
          0, 256, (32, config.data.local_views, side, side, 1), np.uint8)
    batches.append(batch)
  return batches


def _run(config, mesh, batches):
  trainer = train.Trainer(config, methods.build(config, LENGTH), mesh, (8, 8, 1), 10, LENGTH)
  state = trainer.create_state(config.seed)
  losses_seen = []
  for batch in batches:
    state, measurements = trainer.train_step(state, parallel.global_batch(batch, mesh))
    losses_seen.append(float(measurements["loss"]))
  return jax.device_get(state), losses_seen


def _assert_trees_close(a, b, what):
  flat_b = dict(jax.tree_util.tree_leaves_with_path(b))
  for path, value in jax.tree_util.tree_leaves_with_path(a):
    np.testing.assert_allclose(value, flat_b[path], rtol=2e-4, atol=3e-5,
                               err_msg=f"{what}{jax.tree_util.keystr(path)}")


@pytest.mark.parametrize("name", [n for n in JOINT_EMBEDDING if n != "simclr"])
def test_sharded_step_on_8_devices_equals_single_device(name, data_dir):
  assert jax.device_count() == 8, "conftest.py must give 8 fake CPU devices"
  # SGD, not the digits recipe's AdamW: Adam turns float rounding noise on parameters whose
  # true gradient is 0 (a projector bias followed by BatchNorm) into full-size steps.
  config = tiny_method(name, data_dir, **{"optimizer.name": "sgd", "optimizer.lr": 0.05})
  batches = _random_batches(config, 3)
  sharded, sharded_losses = _run(config, parallel.make_mesh(-1), batches)
  single, single_losses = _run(config, parallel.make_mesh(1), batches)
  np.testing.assert_allclose(sharded_losses, single_losses, rtol=1e-4)
  assert sharded_losses[2] != sharded_losses[0]  # the steps really changed the parameters
  _assert_trees_close(sharded["params"], single["params"], "params")
  # BatchNorm statistics, EMA targets/teachers, MoCo's queue, DINO's centre.
  _assert_trees_close(sharded["extra"], single["extra"], "extra")


@pytest.mark.parametrize("name", [n for n in JOINT_EMBEDDING if n != "simclr"])
def test_one_step_of_the_cifar10_config_on_mock_tfds(name, tmp_path):
  """The config's data pipeline, augmentation, heads and method settings, with a tiny CNN in
  place of ResNet-18 (whose one step on mock CIFAR-10 is covered by test_train)."""
  module, arg, _ = JOINT_EMBEDDING[name]
  arg = arg.replace("digits", "cifar10") + ",runlocal=True"
  config = importlib.import_module(f"configs.{module}").get_config(arg)
  config.unlock()
  override(config, total_steps=1, evaluate_at_end=False, batch_size=8,
           encoder={"name": "convnet", "widths": (8, 16)})
  with tfds.testing.mock_data(num_examples=32):
    state = train.run(config, str(tmp_path / name))
  assert int(state["step"]) == 1
  row = json.loads(open(tmp_path / name / "metrics.jsonl").readline())
  assert row["step"] == 1 and np.isfinite(row["loss"])


def test_one_step_of_dino_vit_multicrop_on_mock_imagenet(tmp_path):
  """DINO's ImageNet recipe (ViT, drop path, 2 global + 10 local crops at another resolution,
  local augmentation) shrunk to 32/16 px and a 2-block ViT."""
  config = importlib.import_module("configs.dino").get_config("imagenet2012,runlocal=True")
  config.unlock()
  override(config, total_steps=1, evaluate_at_end=False, batch_size=8, **{
      "data.image_size": 32, "data.eval_resize": 36, "data.local_image_size": 16,
      "encoder.image_size": 32, "encoder.patch_size": 8, "encoder.width": 32,
      "encoder.depth": 2, "encoder.num_heads": 2, "encoder.mlp_dim": 64,
      "head.hidden_dim": 64, "head.bottleneck_dim": 16, "head.output_dim": 128})
  with tfds.testing.mock_data(num_examples=16):
    state = train.run(config, str(tmp_path / "dino"))
  assert int(state["step"]) == 1
  row = json.loads(open(tmp_path / "dino" / "metrics.jsonl").readline())
  # Teacher temperature starts its warm-up at 0.04; the loss is finite.
  assert np.isfinite(row["loss"]) and row["teacher_temperature"] == pytest.approx(0.04)


@pytest.mark.parametrize("name", [n for n in JOINT_EMBEDDING if n != "simclr"])
def test_short_digits_run_does_not_collapse(name, data_dir, tmp_path):
  """SimSiam's collapse monitor (Sec. 4.1): the std over test images of the L2-normalised
  representation, per dimension, stays well above 0 after training."""
  config = tiny_method(name, data_dir, total_steps=40, checkpoint_every_steps=40,
                       log_every_steps=40, batch_size=64, **{"optimizer.warmup_steps": 5})
  state = train.run(config, str(tmp_path / name))
  method = methods.build(config, LENGTH)
  images = next(pipeline.eval_batches(config, "test", batch_size=256))["image"]
  features = method.represent(state["params"]["model"], state["extra"],
                              train.augment.normalize_images(images, config))
  std = float(losses.normalized_std(features))
  dim = features.shape[-1]
  assert std > 0.2 / np.sqrt(dim), f"{name}: per-dimension std {std:.4f} (dim {dim})"
