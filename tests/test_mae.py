"""MAE: masking, patches, the encoder's view of the image, the loss against a NumPy reference
written from the paper, the reconstruction pictures, the sharded step against the 1-device
step, and one step of the `cifar10` and `imagenet2012` configs on mock TFDS data."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import mae as mae_config
from ssl_jax import config_lib, losses, methods, parallel, train
from configs.recipes import augmentations
from ssl_jax.errors import UserError
from ssl_jax.methods import mae
from ssl_jax.models import build_encoder
from ssl_jax.models.masked_autoencoder import MAEDecoder, MaskedAutoencoder, patchify, unpatchify
from tiny_configs import assert_sharded_equals_single_device, override, steps_on_meshes

LENGTH = config_lib.TrainingLength(steps_per_epoch=10, total_steps=100, schedule_steps=100)
TINY_VIT = {"width": 32, "depth": 1, "num_heads": 2, "mlp_dim": 64}
TINY_DECODER = {"decoder.width": 16, "decoder.depth": 1, "decoder.num_heads": 2,
                "decoder.mlp_dim": 32}


def tiny_mae(arg="digits", **dotted):
  """`configs/mae.py:arg` with a 1-block 32-wide ViT and a 1-block 16-wide decoder."""
  config = mae_config.get_config(arg)
  config.unlock()
  config.encoder.update(TINY_VIT)
  override(config, **{"batch_size": 32, "total_steps": 6, "log_every_steps": 2,
                      "checkpoint_every_steps": 3, "optimizer.warmup_steps": 2,
                      "evaluate_at_end": False, **TINY_DECODER})
  return override(config, **dotted)


@pytest.fixture(scope="module")
def digits_model():
  """The tiny digits MAE (16 patches of 2x2, 4 visible): config, method, the network's jitted
  `apply` (compiling once beats compiling each op eagerly), parameters, extra, 8 images."""
  config = tiny_mae()
  method = methods.build(config, LENGTH)
  images = jnp.asarray(np.random.default_rng(0).normal(size=(8, 8, 8, 1)), jnp.float32)
  # `init`'s structure, filled with NumPy normals: running the initialisers would compile each
  # of them, seconds on a small CPU (the trainer tests below run the real `init`).
  abstract, extra = jax.eval_shape(method.init, jax.random.PRNGKey(0), {"views": images[:, None]})
  rng = np.random.default_rng(1)
  params = jax.tree.map(lambda x: jnp.asarray(rng.normal(0, 0.2, x.shape), x.dtype), abstract)
  network = MaskedAutoencoder(build_encoder(config.encoder), MAEDecoder(**config.decoder))
  apply = jax.jit(network.apply, static_argnames="method")
  return config, method, apply, params, extra, images


@pytest.mark.parametrize("num_patches,ratio", [(16, 0.75), (196, 0.75), (64, 0.6), (49, 0.9)])
def test_random_masking_keeps_round_fraction_of_distinct_patches(num_patches, ratio):
  expected = int(round((1 - ratio) * num_patches))  # 4, 49, 26, 5
  assert mae.num_visible_patches(num_patches, ratio) == expected
  keep, restore, mask = jax.device_get(
      mae.random_masking(jax.random.split(jax.random.PRNGKey(1), 6), num_patches, expected))
  assert keep.shape == (6, expected) and restore.shape == mask.shape == (6, num_patches)
  for row in range(6):
    assert len(set(keep[row])) == expected  # distinct
    np.testing.assert_array_equal(np.sort(restore[row]), np.arange(num_patches))
    np.testing.assert_array_equal(restore[row][keep[row]], np.arange(expected))
    visible = np.flatnonzero(mask[row] == 0)
    np.testing.assert_array_equal(visible, np.sort(keep[row]))
  assert mask.sum(axis=1).tolist() == [num_patches - expected] * 6
  assert len({tuple(np.sort(k)) for k in keep}) > 1  # each example has its own mask
  other_keys = jax.random.split(jax.random.PRNGKey(2), 6)
  other, _, _ = mae.random_masking(other_keys, num_patches, expected)
  assert not np.array_equal(np.asarray(other), keep)  # the mask follows the rng


def test_patchify_layout_and_round_trip():
  images = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
  patches = np.asarray(patchify(jnp.asarray(images), 2))
  assert patches.shape == (2, 16, 12)
  for row in range(4):
    for column in range(4):
      np.testing.assert_array_equal(
          patches[:, row * 4 + column],
          images[:, 2 * row:2 * row + 2, 2 * column:2 * column + 2].reshape(2, -1))
  np.testing.assert_array_equal(np.asarray(unpatchify(jnp.asarray(patches), 2, 3)), images)


def masked_patch_mse_reference(predicted, patches, mask, norm_pix, eps=1e-6):
  """He et al. 2021, Sec. 3: per-patch MSE averaged over masked patches; with normalised
  pixels each target patch is (x - mean) / sqrt(var + eps), the variance unbiased."""
  predicted, target = np.asarray(predicted, np.float64), np.asarray(patches, np.float64)
  if norm_pix:
    mean = target.mean(axis=-1, keepdims=True)
    target = (target - mean) / np.sqrt(target.var(axis=-1, ddof=1, keepdims=True) + eps)
  per_patch = ((predicted - target) ** 2).mean(axis=-1)
  return (per_patch * mask).sum() / mask.sum()


@pytest.mark.parametrize("norm_pix", [False, True])
def test_masked_patch_mse_matches_numpy_reference(norm_pix):
  rng = np.random.default_rng(1)
  predicted = rng.normal(size=(3, 16, 12)).astype(np.float32)
  patches = (rng.normal(size=(3, 16, 12)) * 2 + 1).astype(np.float32)
  mask = (rng.uniform(size=(3, 16)) < 0.75).astype(np.float32)
  target = losses.normalize_patches(patches, 1e-6) if norm_pix else patches
  value = losses.masked_patch_mse(predicted, target, mask)
  np.testing.assert_allclose(value, masked_patch_mse_reference(predicted, patches, mask, norm_pix),
                             rtol=1e-5)
  # Only masked patches count: changing a visible patch's prediction leaves the loss alone.
  visible = np.argwhere(mask == 0)[0]
  predicted[tuple(visible)] += 5.0
  np.testing.assert_allclose(losses.masked_patch_mse(predicted, target, mask), value, rtol=1e-6)


def test_method_loss_is_the_masked_mse_of_the_network_output(digits_model):
  config, method, apply, params, extra, images = digits_model
  rng = jax.random.PRNGKey(5)
  value, output = jax.jit(method.loss)(params, extra, {"views": images[:, None]}, rng, 0)
  mask_rng, _ = jax.random.split(rng)
  keep, restore, mask = mae.random_masking(jax.random.split(mask_rng, 8), 16, 4)
  latent, predicted = apply({"params": params}, images, keep, restore)
  reference = masked_patch_mse_reference(predicted, patchify(images, 2), mask,
                                         config.mae.norm_pix_loss)
  np.testing.assert_allclose(value, reference, rtol=1e-5)
  # The online probe's features: the mean of the 4 visible tokens (digits pool = "mean").
  np.testing.assert_allclose(output.features, latent[:, 1:].mean(axis=1), rtol=1e-5, atol=1e-6)


def test_the_encoder_sees_only_the_visible_patches(digits_model):
  _, _, apply, params, _, images = digits_model
  keep, restore, mask = mae.random_masking(jax.random.split(jax.random.PRNGKey(3), 8), 16, 4)
  variables = {"params": params}
  latent, predicted = apply(variables, images, keep, restore)
  assert latent.shape == (8, 1 + 4, TINY_VIT["width"]) and predicted.shape == (8, 16, 4)
  noise = np.random.default_rng(2).normal(size=(8, 16, 4)) * 3
  patches = patchify(images, 2)
  hidden_changed = unpatchify(patches + noise * mask[..., None], 2, 1)
  latent2, predicted2 = apply(variables, hidden_changed, keep, restore)
  np.testing.assert_array_equal(latent2, latent)
  np.testing.assert_array_equal(predicted2, predicted)
  visible_changed = unpatchify(patches + noise * (1 - mask[..., None]), 2, 1)
  latent3, _ = apply(variables, visible_changed, keep, restore)
  assert np.abs(np.asarray(latent3 - latent)).max() > 1e-2


def test_represent_is_the_unmasked_encoder_pooled(digits_model):
  _, method, apply, params, extra, images = digits_model
  every_patch = jnp.broadcast_to(jnp.arange(16), (8, 16))
  tokens = apply({"params": params}, images, every_patch, method=MaskedAutoencoder.encode_visible)
  features = method.represent(params, extra, images)
  assert features.shape == (8, TINY_VIT["width"])
  np.testing.assert_allclose(features, tokens[:, 1:].mean(axis=1), rtol=1e-5, atol=1e-6)
  cls_config = tiny_mae(**{"encoder.pool": "cls"})
  cls_features = methods.build(cls_config, LENGTH).represent(params, extra, images)
  np.testing.assert_allclose(cls_features, tokens[:, 0], rtol=1e-5, atol=1e-6)


def test_reconstruction_pictures_with_normalised_pixels(digits_model):
  """Columns: input; masked input (masked patches 0); visible input patches + the network's
  masked-patch prediction, un-normalised with the true patch's mean and std."""
  _, _, apply, params, extra, images = digits_model
  method = methods.build(tiny_mae(**{"mae.norm_pix_loss": True}), LENGTH)
  rng = jax.random.PRNGKey(7)
  twelve = jnp.concatenate([images, images[:4]])  # only the first 8 are shown
  grid = jax.jit(method.pictures)(params, extra, twelve, rng)["reconstructions"]
  grid = np.asarray(grid)
  assert grid.shape == (8, 3, 8, 8, 1)
  keep, restore, mask = jax.device_get(mae.random_masking(jax.random.split(rng, 8), 16, 4))
  _, predicted = apply({"params": params}, images, keep, restore)
  patches = np.asarray(patchify(images, 2), np.float64)
  scale = np.sqrt(patches.var(axis=-1, ddof=1, keepdims=True) + 1e-6)
  expected = np.where(mask[..., None] == 1,
                      np.asarray(predicted) * scale + patches.mean(axis=-1, keepdims=True),
                      patches)
  np.testing.assert_array_equal(grid[:, 0], images)
  np.testing.assert_array_equal(np.asarray(patchify(grid[:, 1], 2)),
                                np.where(mask[..., None] == 1, 0.0, patches))
  np.testing.assert_allclose(np.asarray(patchify(grid[:, 2], 2)), expected, rtol=1e-5, atol=1e-5)
  assert np.abs(grid[:, 2] - grid[:, 0]).max() > 0.1  # masked patches are predicted, not copied


@pytest.mark.parametrize("dotted,message", [
    ({"mae.mask_ratio": 1.0}, "mask_ratio"),
    ({"mae.mask_ratio": 0.99}, "0 of 16 patches visible"),
    ({"data.num_views": 2}, "1 views"),
    ({"encoder": {"name": "convnet", "widths": (8, 16)}}, "ViT encoder"),
    ({"decoder.width": 18}, "decoder.width"),
])
def test_bad_config_is_a_user_error_at_build_time(dotted, message):
  with pytest.raises(UserError, match=message):
    methods.build(tiny_mae(**dotted), LENGTH)


def random_state(trainer, seed=0):
  """A train state of `trainer`'s structure with normal(0, 0.1) parameters and a zero step,
  optimizer state and rng key: running the real `init` would add a compilation (the mock-data
  tests below run it)."""
  rng = np.random.default_rng(seed)
  state = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), trainer.abstract_state)
  state["params"] = jax.tree.map(lambda a: rng.normal(0, 0.1, a.shape).astype(a.dtype),
                                 trainer.abstract_state["params"])
  return state


def test_sharded_step_equals_single_device_step():
  """3 steps on 8 fake devices equal 3 steps on 1 (loss and parameters): the masking noise,
  the masked mean over the batch and the gradients are the global batch's. SGD keeps float
  rounding from being blown up the way Adam's normalisation does. Random uint8 batches stand
  in for the digits pipeline, and no augmentation for the digits one (both tested on their
  own, in test_data and test_joint_embedding)."""
  assert jax.device_count() == 8, "conftest.py must give 8 fake CPU devices"
  config = tiny_mae(**{"optimizer.name": "sgd", "optimizer.lr": 0.05,
                       "optimizer.weight_decay": 1e-4})
  config.augment = augmentations.augment_config(mean=augmentations.DIGITS_MEAN,
                                                std=augmentations.DIGITS_STD)
  rng = np.random.default_rng(0)
  batches = [{"views": rng.integers(0, 256, (32, 1, 8, 8, 1), np.uint8),
              "label": rng.integers(0, 10, (32,), np.int32)} for _ in range(3)]
  trainer = train.Trainer(config, methods.build(config, LENGTH), parallel.make_mesh(1),
                          (8, 8, 1), 10, LENGTH)
  results = steps_on_meshes(config, batches, (8, 8, 1), LENGTH, initial=random_state(trainer))
  assert_sharded_equals_single_device(results, parts=("params",), loss_rtol=1e-5, atol=3e-6)


@pytest.mark.parametrize("variant", ["cifar10", "imagenet2012"])
def test_one_step_of_the_real_dataset_configs_on_mock_tfds(variant, tmp_path):
  """The recipe's pipeline (random resized crops, flips, no colour), optimizer and MAE
  settings (normalised pixels; bfloat16 for ImageNet) with a 1-block ViT of 8x8 patches at
  32 px. Normalised targets have unit variance per patch, so the first loss is about 1.
  On one device: sharding is the test above's, and orbax's per-device copies of the state
  would double the test's time."""
  config = tiny_mae(f"{variant},runlocal=True", total_steps=1, batch_size=8, mesh="data:1", **{
      "encoder.patch_size": 8, "encoder.image_size": 32, "data.image_size": 32,
      "data.eval_resize": 36})
  with tfds.testing.mock_data(num_examples=16):
    state = train.run(config, str(tmp_path / variant))
  assert int(state["step"]) == 1
  row = json.loads(open(tmp_path / variant / "metrics.jsonl").readline())
  assert row["step"] == 1 and 0.8 < row["loss"] < 2.0
