"""I-JEPA: the multi-block masks against a NumPy reference of the paper's rule (sizes, aspect
ratios, rectangles, the context without the targets, the minimum context), the loss against
a NumPy reference, what the context encoder and the predictor may see, the EMA target and the
representation, the sharded step against the 1-device step, one step of the ImageNet recipe
on mock TFDS data, and bad config values."""
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import ijepa as ijepa_config
from configs.recipes import augmentations
from ssl_jax import config_lib, losses, methods, train
from ssl_jax.errors import UserError
from ssl_jax.methods import ijepa
from ssl_jax.models import build_encoder
from ssl_jax.models.jepa_predictor import JEPA, JEPAPredictor
from tiny_configs import assert_sharded_equals_single_device, override, steps_on_meshes

LENGTH = config_lib.TrainingLength(steps_per_epoch=10, total_steps=100, schedule_steps=100)
TINY_VIT = {"width": 32, "depth": 1, "num_heads": 2, "mlp_dim": 64}
TINY_PREDICTOR = {"predictor.width": 16, "predictor.depth": 1, "predictor.num_heads": 2,
                  "predictor.mlp_dim": 32}
PAPER = dict(num_targets=4, target_scale=(0.15, 0.2), target_aspect_ratio=(0.75, 1.5),
             context_scale=(0.85, 1.0), min_context=10, context_tries=20)
DIGITS_MASKS = dict(PAPER, min_context=4)  # configs/ijepa.py:digits
digits_masks = jax.jit(lambda keys: ijepa.sample_block_masks(keys, 4, **DIGITS_MASKS))


def tiny_ijepa(arg="digits", **dotted):
  """`configs/ijepa.py:arg` with a 1-block 32-wide ViT and a 1-block 16-wide predictor."""
  config = ijepa_config.get_config(arg)
  config.unlock()
  config.encoder.update(TINY_VIT)
  override(config, **{"batch_size": 32, "total_steps": 6, "log_every_steps": 2,
                      "checkpoint_every_steps": 3, "optimizer.warmup_steps": 2,
                      "evaluate_at_end": False, **TINY_PREDICTOR})
  return override(config, **dotted)


# --- the masks -------------------------------------------------------------------------------

def reference_block_size(scale, ratio, grid):
  """The official collator's rule (Assran et al. 2023, src/masks/multiblock.py), in floats:
  k = int(grid^2 * scale), height = round(sqrt(k * ratio)), width = round(sqrt(k / ratio)),
  here clipped to [1, grid]."""
  area = math.floor(grid * grid * scale)
  height, width = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
  return min(max(height, 1), grid), min(max(width, 1), grid)


def reference_sizes(scale_range, ratio_range, grid, samples=4000):
  """(height, width) by the rule for `samples` uniform draws of the scale and the ratio."""
  rng = np.random.default_rng(0)
  return [reference_block_size(s, r, grid)
          for s, r in zip(rng.uniform(*scale_range, samples), rng.uniform(*ratio_range, samples))]


def rectangle_of(mask, grid):
  """(top, left, height, width) of a boolean [N] mask, asserting it is a filled rectangle."""
  cells = np.asarray(mask).reshape(grid, grid)
  rows, columns = np.nonzero(cells)
  top, left = rows.min(), columns.min()
  height, width = rows.max() - top + 1, columns.max() - left + 1
  assert cells.sum() == height * width, f"not a rectangle:\n{cells.astype(int)}"
  return top, left, height, width


@pytest.mark.parametrize("grid", [14, 4])
def test_block_masks_follow_the_papers_scales_and_aspect_ratios(grid):
  """Over 1000 images: every target block is a rectangle whose (height, width) the
  collator's rule gives for some scale in (0.15, 0.2) and ratio in (0.75, 1.5); the context
  block a square from scale (0.85, 1.0); the context is the context block less every target
  block (the fallback is never needed here); at least min_context patches; blocks lie
  anywhere in the grid; and the size distributions match the reference's."""
  settings = dict(PAPER, min_context=10 if grid == 14 else 4)
  count = 1000
  sample = jax.jit(lambda keys: ijepa.sample_block_masks(keys, grid, **settings))
  keys = jax.random.split(jax.random.PRNGKey(0), count)
  masks = jax.device_get(sample(keys))
  num = grid * grid
  assert masks.context.shape == (count, num) and masks.targets.shape == (count, 4, num)
  target_sizes = set(reference_sizes((0.15, 0.2), (0.75, 1.5), grid))
  context_sizes = set(reference_sizes((0.85, 1.0), (1.0, 1.0), grid))
  drawn, tops, lefts = [], [], []
  for example in range(count):
    for block in masks.targets[example]:
      top, left, height, width = rectangle_of(block, grid)
      assert (height, width) in target_sizes, (height, width)
      drawn.append((height, width))
      tops.append(top / max(grid - height, 1))
      lefts.append(left / max(grid - width, 1))
    _, _, height, width = rectangle_of(masks.context_block[example], grid)
    assert (height, width) in context_sizes and height == width
  assert (masks.num_excluded == 4).all()
  covered = masks.targets.any(axis=1)
  np.testing.assert_array_equal(masks.context, masks.context_block & ~covered)
  assert not (masks.context[:, None, :] & masks.targets).any()
  assert masks.context.sum(axis=1).min() >= settings["min_context"]
  # Distributions: block area and height / width against the rule on uniform draws.
  reference = np.array(reference_sizes((0.15, 0.2), (0.75, 1.5), grid, samples=20000))
  drawn = np.array(drawn)
  areas, reference_areas = drawn.prod(axis=1), reference.prod(axis=1)
  assert abs(areas.mean() - reference_areas.mean()) < 4 * areas.std() / math.sqrt(len(areas))
  ratios, reference_ratios = drawn[:, 0] / drawn[:, 1], reference[:, 0] / reference[:, 1]
  assert abs(ratios.mean() - reference_ratios.mean()) < 4 * ratios.std() / math.sqrt(len(ratios))
  reference_codes, drawn_codes = reference @ [grid + 1, 1], drawn @ [grid + 1, 1]
  for code in np.unique(reference_codes):
    expected, seen = np.mean(reference_codes == code), np.mean(drawn_codes == code)
    assert abs(seen - expected) < 4 * math.sqrt(expected * (1 - expected) / len(drawn)) + 1e-3
  # The paper's scales hold up to the rule's rounding: mean area fraction within (0.15, 0.2)
  # on the 14x14 grid, where rounding is fine.
  if grid == 14:
    assert 0.15 < areas.mean() / num < 0.2
    assert 0.75 < np.median(ratios) < 1.5
  # Placements are uniform over all positions (the last row and column included).
  assert abs(np.mean(tops) - 0.5) < 0.03 and abs(np.mean(lefts) - 0.5) < 0.03
  assert masks.targets.reshape(count, 4, grid, grid)[:, :, -1].any()
  # Each image has its own masks, and they follow its key alone, not its place in the batch.
  assert len({m.tobytes() for m in masks.targets[:50]}) == 50
  order = np.random.default_rng(1).permutation(count)
  np.testing.assert_array_equal(jax.device_get(sample(keys[order])).targets, masks.targets[order])


def test_block_size_is_the_collators_rule():
  rng = np.random.default_rng(4)
  scales, ratios = rng.uniform(0.1, 1.0, 500), rng.uniform(0.3, 3.0, 500)
  for grid in (4, 14, 16):
    heights, widths = jax.device_get(ijepa.block_size(jnp.asarray(scales, jnp.float32),
                                                      jnp.asarray(ratios, jnp.float32), grid))
    expected = [reference_block_size(s, r, grid) for s, r in zip(scales, ratios)]
    np.testing.assert_array_equal(np.stack([heights, widths], axis=1), np.array(expected))


def test_the_context_keeps_min_context_patches_by_excluding_fewer_targets():
  """Larger targets on a 4x4 grid with min_context 8: the context block is the whole grid, so
  whenever the 4 targets leave fewer than 8 patches the context excludes only the first k of
  them, the largest k that leaves 8."""
  settings = dict(PAPER, target_scale=(0.25, 0.3), min_context=8)
  masks = jax.device_get(jax.jit(lambda keys: ijepa.sample_block_masks(keys, 4, **settings))(
      jax.random.split(jax.random.PRNGKey(1), 400)))
  assert (masks.context.sum(axis=1) >= 8).all()
  assert 0.05 < (masks.num_excluded < 4).mean() < 0.95  # the fallback is exercised
  for example in range(400):
    excluded = masks.num_excluded[example]
    targets, block = masks.targets[example], masks.context_block[example]
    np.testing.assert_array_equal(masks.context[example], block & ~targets[:excluded].any(0))
    if excluded < 4:  # excluding one more block would leave too few patches
      assert (block & ~targets[:excluded + 1].any(0)).sum() < 8


# --- the loss --------------------------------------------------------------------------------

def block_mse_reference(predictions, tokens, masks, eps=1e-5):
  """Assran et al. 2023, Eq. 1 with each block's squared L2 distance averaged over its patches
  and the features: targets are the tokens standardised over the feature axis."""
  tokens = np.asarray(tokens, np.float64)
  targets = (tokens - tokens.mean(-1, keepdims=True)) / np.sqrt(tokens.var(-1, keepdims=True)
                                                                 + eps)
  values = []
  for b in range(masks.shape[0]):
    for m in range(masks.shape[1]):
      index = np.flatnonzero(masks[b, m])
      values.append(np.mean((np.asarray(predictions[b, m], np.float64)[index]
                             - targets[b, index]) ** 2))
  return np.mean(values)


def test_block_prediction_mse_matches_numpy_reference():
  rng = np.random.default_rng(1)
  predictions = rng.normal(size=(3, 4, 16, 8)).astype(np.float32)
  tokens = (rng.normal(size=(3, 16, 8)) * 3 + 1).astype(np.float32)
  masks = np.zeros((3, 4, 16), bool)
  blocks = [(0, 0, 0, 0, 2, 2), (0, 1, 1, 2, 1, 2), (0, 2, 3, 3, 1, 1), (0, 3, 0, 1, 4, 1),
            (1, 0, 2, 0, 2, 3), (1, 1, 0, 0, 1, 1), (1, 2, 1, 1, 2, 2), (1, 3, 1, 1, 2, 2),
            (2, 0, 0, 0, 4, 4), (2, 1, 3, 0, 1, 4), (2, 2, 0, 3, 4, 1), (2, 3, 2, 2, 1, 2)]
  for b, m, top, left, height, width in blocks:
    masks[b, m].reshape(4, 4)[top:top + height, left:left + width] = True
  value = losses.block_prediction_mse(predictions, losses.standardize_features(tokens), masks)
  np.testing.assert_allclose(value, block_mse_reference(predictions, tokens, masks), rtol=1e-5)
  predictions[~masks] += 10.0  # predictions outside each block do not count
  np.testing.assert_allclose(
      losses.block_prediction_mse(predictions, losses.standardize_features(tokens), masks),
      value, rtol=1e-6)


@pytest.fixture(scope="module")
def digits_model():
  """The tiny digits I-JEPA: config, method, the network's jitted `apply`, parameters with a
  different target encoder, 8 images and their masks."""
  config = tiny_ijepa()
  method = methods.build(config, LENGTH)
  images = jnp.asarray(np.random.default_rng(0).normal(size=(8, 8, 8, 1)), jnp.float32)
  abstract, abstract_extra = jax.eval_shape(method.init, jax.random.PRNGKey(0),
                                            {"views": images[:, None]})
  rng = np.random.default_rng(1)
  fill = lambda tree: jax.tree.map(
      lambda x: jnp.asarray(rng.normal(0, 0.2, x.shape), x.dtype), tree)
  params, extra = fill(abstract), fill(abstract_extra)
  network = JEPA(build_encoder(config.encoder), JEPAPredictor(**config.predictor))
  apply = jax.jit(network.apply, static_argnames=("method", "train"))
  return config, method, apply, params, extra, images


def test_method_loss_is_the_block_mse_of_the_predictions_and_target_tokens(digits_model):
  config, method, apply, params, extra, images = digits_model
  rng = jax.random.PRNGKey(5)
  value, output = jax.jit(method.loss)(params, extra, {"views": images[:, None]}, rng, 0)
  mask_rng, _ = jax.random.split(rng)
  assert ijepa.mask_options(config.ijepa) == DIGITS_MASKS
  masks = digits_masks(jax.random.split(mask_rng, 8))
  _, predictions = apply({"params": params}, images, masks.context, masks.targets)
  tokens = apply({"params": {"encoder": extra["target"]}}, images, method=JEPA.patch_tokens)
  np.testing.assert_allclose(value, block_mse_reference(predictions, tokens, masks.targets),
                             rtol=1e-5)
  # The probe's features are the target encoder's mean token, which is the representation.
  np.testing.assert_allclose(output.features, np.asarray(tokens).mean(axis=1), rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(method.represent(params, extra, images), output.features,
                             rtol=1e-5, atol=1e-6)
  dense = method.represent_dense(params, extra, images)
  np.testing.assert_allclose(dense, np.asarray(tokens).reshape(8, 4, 4, -1), rtol=1e-5,
                             atol=1e-6)
  assert output.metrics["context_fraction"] == pytest.approx(
      float(masks.context.sum()) / (8 * 16))
  # Gradients reach the context encoder and the predictor, not the target.
  grads = jax.jit(jax.grad(
      lambda p: method.loss(p, extra, {"views": images[:, None]}, rng, 0)[0]))(params)
  assert float(jnp.abs(grads["predictor"]["mask_token"]).max()) > 0
  assert float(jnp.abs(grads["encoder"]["patch_embed"]["kernel"]).max()) > 0


def test_encoders_and_predictor_see_only_the_context_and_their_own_block(digits_model):
  """Noise on every patch outside the context leaves the context tokens (at context patches)
  and every prediction unchanged; noise on one context patch changes them. Moving block 1
  leaves block 0's predictions unchanged: each block is predicted on its own."""
  _, _, apply, params, _, images = digits_model
  masks = digits_masks(jax.random.split(jax.random.PRNGKey(3), 8))
  context_mask = np.asarray(masks.context)
  variables = {"params": params}
  context, predictions = apply(variables, images, masks.context, masks.targets)
  noise = np.random.default_rng(2).normal(size=(8, 16)) * 3
  pixels = np.repeat(np.repeat((noise * ~context_mask).reshape(8, 4, 4), 2, 1), 2, 2)
  context2, predictions2 = apply(variables, images + pixels[..., None], masks.context,
                                 masks.targets)
  np.testing.assert_allclose(np.asarray(context2)[context_mask], np.asarray(context)[context_mask],
                             atol=1e-6)
  targets = np.asarray(masks.targets)  # predictions are read at each block's own patches
  np.testing.assert_allclose(np.asarray(predictions2)[targets], np.asarray(predictions)[targets],
                             atol=1e-6)
  pixels = np.repeat(np.repeat((noise * context_mask).reshape(8, 4, 4), 2, 1), 2, 2)
  _, predictions3 = apply(variables, images + pixels[..., None], masks.context, masks.targets)
  assert np.abs(np.asarray(predictions3 - predictions)[targets]).max() > 1e-3
  moved = np.asarray(masks.targets).copy()
  moved[:, 1] = np.roll(moved[:, 1], 5, axis=-1)
  _, predictions4 = apply(variables, images, masks.context, jnp.asarray(moved))
  np.testing.assert_allclose(np.asarray(predictions4[:, 0])[targets[:, 0]],
                             np.asarray(predictions[:, 0])[targets[:, 0]], atol=1e-6)
  assert np.abs(np.asarray(predictions4[:, 1] - predictions[:, 1])[targets[:, 1]]).max() > 1e-3


def test_the_target_encoder_follows_a_linear_ema(digits_model):
  config, method, _, params, extra, _ = digits_model
  updated = method.update_extra(params, extra, 50)
  base = config.ijepa.base_momentum
  momentum = base + (1.0 - base) * 50 / 100
  expected = jax.tree.map(lambda t, o: momentum * t + (1 - momentum) * o, extra["target"],
                          params["encoder"])
  for got, want in zip(jax.tree.leaves(updated["target"]), jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  assert float(ijepa.linear_momentum(200, 100, 0.996, 1.0)) == 1.0


# --- training --------------------------------------------------------------------------------

def random_state(trainer, seed=0):
  """A train state of `trainer`'s structure with normal(0, 0.1) parameters (the target a
  copy of the context encoder) and a zero step, optimizer state and rng key."""
  rng = np.random.default_rng(seed)
  state = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), trainer.abstract_state)
  state["params"] = jax.tree.map(lambda a: rng.normal(0, 0.1, a.shape).astype(a.dtype),
                                 trainer.abstract_state["params"])
  state["extra"]["target"] = jax.tree.map(np.copy, state["params"]["model"]["encoder"])
  return state


def test_sharded_step_equals_single_device_step():
  """3 SGD steps on data:2,fsdp:4 (the batch over all 8 devices; leaves of 256+ elements
  split over fsdp) equal 3 steps on 1 device: the masks come from per-example keys, the loss and gradients
  are the global batch's, and the EMA target follows."""
  assert jax.device_count() == 8, "conftest.py must give 8 fake CPU devices"
  config = tiny_ijepa(**{"optimizer.name": "sgd", "optimizer.lr": 0.05,
                         "optimizer.weight_decay": 1e-4, "fsdp_min_size": 256,
                         "ijepa.base_momentum": 0.9})
  config.augment = augmentations.augment_config(mean=augmentations.DIGITS_MEAN,
                                                std=augmentations.DIGITS_STD)
  rng = np.random.default_rng(0)
  batches = [{"views": rng.integers(0, 256, (32, 1, 8, 8, 1), np.uint8),
              "label": rng.integers(0, 10, (32,), np.int32)} for _ in range(3)]
  from ssl_jax import parallel  # pylint: disable=g-import-not-at-top
  trainer = train.Trainer(config, methods.build(config, LENGTH), parallel.make_mesh(1),
                          (8, 8, 1), 10, LENGTH)
  fsdp = "data:2,fsdp:4"
  results = steps_on_meshes(config, batches, (8, 8, 1), LENGTH, initial=random_state(trainer),
                            sizes=(fsdp, 1))
  assert_sharded_equals_single_device(results, sharded=fsdp, loss_rtol=1e-5, atol=3e-6)


def test_one_step_of_the_imagenet_recipe_on_mock_tfds(tmp_path):
  """The recipe's pipeline (random resized crops, no flip, no colour), AdamW and I-JEPA
  settings with a 1-block ViT of 8x8 patches at 32 px (a 4x4 grid) and a 1-block predictor.
  The targets are standardised tokens and the first predictions near 0: the first loss is
  about 1. On one device (sharding is the test above's)."""
  config = tiny_ijepa("imagenet2012,runlocal=True", total_steps=1, batch_size=8,
                      mesh="data:1", **{"encoder.patch_size": 8, "encoder.image_size": 32,
                                        "data.image_size": 32, "data.eval_resize": 36})
  assert config.encoder.size == "huge" and config.data.crop_scale == (0.3, 1.0)
  assert not config.data.flip and config.augment.jitter_prob == 0.0
  with tfds.testing.mock_data(num_examples=16):
    state = train.run(config, str(tmp_path / "in1k"))
  assert int(state["step"]) == 1
  row = json.loads(open(tmp_path / "in1k" / "metrics.jsonl").readline())
  assert row["step"] == 1 and 0.5 < row["loss"] < 2.0
  assert 0.0 < row["context_fraction"] < 1.0


@pytest.mark.parametrize("dotted,message", [
    ({"data.num_views": 2}, "1 views"),
    ({"encoder": {"name": "convnet", "widths": (8, 16)}}, "ViT encoder"),
    ({"encoder.pool": "cls"}, "pool must be 'mean'"),
    ({"encoder.registers": 4}, "no register tokens"),
    ({"ijepa.num_targets": 0}, r"num_targets must be an integer >= 1"),
    ({"ijepa.target_scale": (0.3, 0.2)}, "low <= high"),
    ({"ijepa.target_scale": (0.15, 1.5)}, r"target_scale\[1\] must be a number > 0 and <= 1"),
    ({"ijepa.target_aspect_ratio": (0.0, 1.5)}, r"target_aspect_ratio\[0\] must be a number > 0"),
    ({"ijepa.context_scale": (0.9,)}, "must be a pair"),
    ({"ijepa.min_context": 17}, "more than the 16 patches of the smallest context block"),
    ({"ijepa.context_tries": 0}, ">= 1"),
    ({"ijepa.base_momentum": 1.5}, "<= 1"),
    ({"predictor.width": 18}, "predictor.width"),
    ({"predictor.depth": 0}, ">= 1"),
    ({"predictor.heads": 2}, "config.predictor has no option 'heads'"),
])
def test_bad_config_is_a_user_error_at_build_time(dotted, message):
  with pytest.raises(UserError, match=message):
    methods.build(tiny_ijepa(**dotted), LENGTH)
