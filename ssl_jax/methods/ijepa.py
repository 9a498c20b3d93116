"""I-JEPA (Assran, Duval, Misra, Bojanowski, Vincent, Rabbat, LeCun, Ballas 2023,
"Self-Supervised Learning from Images with a Joint-Embedding Predictive Architecture").

From one context block of an image, a predictor predicts the representations of several
target blocks of the same image (Sec. 3, Fig. 3). No hand-crafted view augmentations: one
view per image, the crop alone.

Multi-block masking (Sec. 3 "Targets" and "Context", Appendix C), drawn per image from its
own key (`methods.example_keys`) by `sample_block_masks`: M = 4 target blocks, each with a
scale (fraction of the patch grid) uniform in (0.15, 0.2) and an aspect ratio (height /
width) uniform in (0.75, 1.5), placed uniformly and possibly overlapping; one context block
with scale in (0.85, 1.0) and aspect ratio 1, from which every target block's patches are
removed. A block's side follows the official collator (`src/masks/multiblock.py`): area
k = floor(N * scale) patches, height round(sqrt(k * ratio)), width round(sqrt(k / ratio)),
so rounding moves the realised area and ratio a little off their ranges. The context keeps
at least `min_context` patches (the collator's `min_keep`): up to `context_tries` placements
of the context block are tried (the collator's timeout of 20) and the first that keeps
enough is taken; when none does, the context stops excluding the last target blocks one by
one (the collator's fallback; the metric `context_fallback` counts those images). Where this
differs from the official collator: sizes are drawn per image and per block (the collator
draws one target size and one context size per batch, with one uniform number for both the
scale and the ratio, so that its batch's masks collate), a block may lie anywhere in the grid
and be as large as it (the collator's `randint` never places a block on the last row or
column, and its sides stop one patch short of the grid), and no mask is truncated to the
batch's smallest (static shapes come from attention masks, `models.jepa_predictor`).

Networks (`models.jepa_predictor`): the context encoder f_theta, a ViT without CLS token, sees
only the context patches; the target encoder f_theta-bar is its exponential moving average,
theta-bar <- m theta-bar + (1 - m) theta, with m rising linearly from `base_momentum` (0.996)
to `final_momentum` (1.0) over training (Sec. 3, Appendix A.1), and sees the whole image; its
output tokens, each normalised over the feature dimension (a LayerNorm without parameters, as
the official code), at the positions of block i are the targets s_y(i). The predictor g_phi,
a narrow ViT, gets the context tokens and one mask token per position of block i (each block
separately) and predicts s_y(i). The loss is the squared L2 distance averaged over each
block's patches, then over blocks and images (Eq. 1, `losses.block_prediction_mse`); gradients
reach the context encoder and the predictor only.

The representation is the target encoder's output tokens averaged over the patches (the paper
evaluates the target encoder with its output average-pooled, Sec. 5; `represent_dense` gives
the tokens on their grid). The online probe and the collapse monitor see the same features from
the loss's target pass, which costs nothing extra.

Config (`config.ijepa`): num_targets, target_scale, target_aspect_ratio, context_scale,
min_context, context_tries, base_momentum, final_momentum; `config.encoder` is the ViT
(`name="vit"`, `pool="mean"`) and `config.predictor` the `JEPAPredictor` (width, depth,
num_heads, mlp_dim, dtype).
"""
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ssl_jax import ema, losses
from ssl_jax.errors import UserError
from ssl_jax.methods import (Method, StepOutput, check_choice, check_num_views, check_number,
                             check_options, example_keys)
from ssl_jax.models import build_encoder
from ssl_jax.models.jepa_predictor import JEPA, JEPAPredictor


# The keys of `config.ijepa` that shape the masks (`sample_block_masks`'s keyword arguments).
_MASK_OPTIONS = ("num_targets", "target_scale", "target_aspect_ratio", "context_scale",
                 "min_context", "context_tries")


class BlockMasks(NamedTuple):
  """One image's (or, batched, every image's) multi-block masks over the row-major patch grid.

  context [..., N]: the context block less the target blocks it excludes; targets [..., M, N];
  context_block [..., N]: the context block before the targets were removed; num_excluded
  [...]: how many target blocks (the first ones) the context excludes, M unless the fallback
  for `min_context` was needed.
  """
  context: jax.Array
  targets: jax.Array
  context_block: jax.Array
  num_excluded: jax.Array


def block_size(scale: jax.Array, aspect_ratio: jax.Array, grid: int
               ) -> tuple[jax.Array, jax.Array]:
  """(height, width) in patches of a block covering `scale` of a grid x grid patch grid with
  height / width = `aspect_ratio`, by the official collator's rounding: k = floor(grid^2 *
  scale), height = round(sqrt(k * ratio)), width = round(sqrt(k / ratio)) (half to even, as
  Python's `round`), each clipped to [1, grid]."""
  area = jnp.floor(grid * grid * scale)
  height = jnp.round(jnp.sqrt(area * aspect_ratio))
  width = jnp.round(jnp.sqrt(area / aspect_ratio))
  return (jnp.clip(height, 1, grid).astype(jnp.int32), jnp.clip(width, 1, grid).astype(jnp.int32))


def _rectangle(top: jax.Array, left: jax.Array, height: jax.Array, width: jax.Array,
               grid: int) -> jax.Array:
  """[grid * grid] booleans, True inside the rectangle (row-major, the patch order)."""
  rows = jnp.arange(grid)[:, None]
  columns = jnp.arange(grid)[None, :]
  inside = ((rows >= top) & (rows < top + height) & (columns >= left) & (columns < left + width))
  return inside.reshape(grid * grid)


def _random_block(key: jax.Array, scale_range, ratio_range, grid: int, placements: int = 1
                  ) -> jax.Array:
  """`placements` uniformly placed copies [placements, N] of one block whose scale and aspect
  ratio are drawn uniformly from their ranges."""
  scale_key, ratio_key, top_key, left_key = jax.random.split(key, 4)
  scale = jax.random.uniform(scale_key, (), minval=scale_range[0], maxval=scale_range[1])
  ratio = jax.random.uniform(ratio_key, (), minval=ratio_range[0], maxval=ratio_range[1])
  height, width = block_size(scale, ratio, grid)
  tops = jax.random.randint(top_key, (placements,), 0, grid - height + 1)
  lefts = jax.random.randint(left_key, (placements,), 0, grid - width + 1)
  return jax.vmap(lambda t, l: _rectangle(t, l, height, width, grid))(tops, lefts)


def _example_block_masks(key: jax.Array, grid: int, num_targets: int, target_scale,
                         target_aspect_ratio, context_scale, min_context: int,
                         context_tries: int) -> BlockMasks:
  target_key, context_key = jax.random.split(key)
  targets = jax.vmap(lambda k: _random_block(k, target_scale, target_aspect_ratio, grid)[0])(
      jax.random.split(target_key, num_targets))
  candidates = _random_block(context_key, context_scale, (1.0, 1.0), grid, context_tries)
  # covered[k]: the patches of the first k target blocks (k = 0 .. M).
  covered = jnp.concatenate([jnp.zeros((1, grid * grid), bool),
                             jnp.cumsum(targets, axis=0) > 0])
  contexts = candidates[:, None, :] & ~covered[None]  # [tries, M + 1, N]
  large_enough = jnp.sum(contexts, axis=-1) >= min_context  # [tries, M + 1]
  # Exclude as many target blocks as some placement allows (all M in all but rare draws),
  # then take the first placement that keeps min_context patches.
  excluded = jnp.max(jnp.where(jnp.any(large_enough, axis=0), jnp.arange(num_targets + 1), 0))
  placement = jnp.argmax(large_enough[:, excluded])
  return BlockMasks(contexts[placement, excluded], targets, candidates[placement], excluded)


def sample_block_masks(keys: jax.Array, grid: int, num_targets: int = 4,
                       target_scale=(0.15, 0.2), target_aspect_ratio=(0.75, 1.5),
                       context_scale=(0.85, 1.0), min_context: int = 10,
                       context_tries: int = 20) -> BlockMasks:
  """I-JEPA's multi-block masks (Sec. 3) for one image per key of `keys` [B]: `BlockMasks`
  with context [B, N], targets [B, M, N], context_block [B, N], num_excluded [B], N = grid^2.

  An image's masks depend on its key alone. See the module docstring for the rule and where
  it departs from the official collator. The context has at least `min_context` patches
  whenever the context block can have that many (`build` checks it can).
  """
  sample = functools.partial(
      _example_block_masks, grid=grid, num_targets=num_targets, target_scale=target_scale,
      target_aspect_ratio=target_aspect_ratio, context_scale=context_scale,
      min_context=min_context, context_tries=context_tries)
  return jax.vmap(sample)(keys)


def mask_options(settings) -> dict[str, Any]:
  """The keyword arguments of `sample_block_masks` that `config.ijepa` sets."""
  return {name: tuple(settings[name]) if isinstance(settings[name], (tuple, list))
          else settings[name] for name in _MASK_OPTIONS}


def linear_momentum(step: jax.Array, total_steps: int, base: float, final: float) -> jax.Array:
  """The EMA momentum m(k) = base + (final - base) k / K, clipped at K (I-JEPA's schedule,
  Appendix A.1: 0.996 rising linearly to 1.0 over training)."""
  progress = jnp.clip(jnp.asarray(step, jnp.float32) / max(int(total_steps), 1), 0.0, 1.0)
  return base + (final - base) * progress


def _check_range(key: str, value, maximum: float | None = None) -> tuple[float, float]:
  """A UserError unless `value` is a pair (low, high) with 0 < low <= high (<= maximum)."""
  if not isinstance(value, (tuple, list)) or len(value) != 2:
    raise UserError(f"{key} must be a pair (low, high), got {value!r}")
  check_number(f"{key}[0]", value[0], above=0, maximum=maximum)
  check_number(f"{key}[1]", value[1], above=0, maximum=maximum)
  if value[0] > value[1]:
    raise UserError(f"{key} must have low <= high, got {tuple(value)!r}")
  return float(value[0]), float(value[1])


def _smallest_block(scale_low: float, grid: int) -> int:
  """The fewest patches a square block of scale >= `scale_low` can have (`block_size`)."""
  side = min(max(round(math.sqrt(math.floor(grid * grid * scale_low))), 1), grid)
  return side * side


def _check(config) -> int:
  """Build-time checks of every key I-JEPA reads; returns the patch grid's side."""
  check_num_views(config, 1, "I-JEPA")
  encoder = config.encoder
  if encoder.name != "vit":
    raise UserError(f"I-JEPA needs a ViT encoder (config.encoder.name='vit'), got "
                    f"'{encoder.name}'")
  if encoder.get("registers", 0):
    raise UserError("I-JEPA's encoder takes no register tokens (config.encoder.registers must "
                    f"be 0, got {encoder.registers}): its context encoder sees the context alone")
  if encoder.get("mask_token", False):
    raise UserError("I-JEPA's encoder takes no mask token (config.encoder.mask_token must be "
                    "False): the mask tokens are the predictor's")
  if encoder.get("pool", "cls") != "mean":
    raise UserError("I-JEPA's ViT has no CLS token: config.encoder.pool must be 'mean' (the "
                    f"average of the patch tokens), got {encoder.get('pool', 'cls')!r}")
  patch_size, image_size = encoder.patch_size, config.data.image_size
  if image_size % patch_size:
    raise UserError(f"config.data.image_size {image_size} is not divisible by "
                    f"config.encoder.patch_size {patch_size}")
  grid = image_size // patch_size
  settings = config.ijepa
  check_number("config.ijepa.num_targets", settings.num_targets, minimum=1, integer=True)
  _check_range("config.ijepa.target_scale", settings.target_scale, maximum=1)
  _check_range("config.ijepa.target_aspect_ratio", settings.target_aspect_ratio)
  context_low, _ = _check_range("config.ijepa.context_scale", settings.context_scale,
                                maximum=1)
  check_number("config.ijepa.min_context", settings.min_context, minimum=1, integer=True)
  smallest = _smallest_block(context_low, grid)
  if settings.min_context > smallest:
    raise UserError(f"config.ijepa.min_context {settings.min_context} is more than the "
                    f"{smallest} patches of the smallest context block (context_scale "
                    f"{context_low} of the {grid}x{grid} patch grid)")
  check_number("config.ijepa.context_tries", settings.context_tries, minimum=1, integer=True)
  for name in ("base_momentum", "final_momentum"):
    check_number(f"config.ijepa.{name}", settings[name], minimum=0, maximum=1)
  predictor = config.predictor
  check_options("config.predictor", predictor, JEPAPredictor)
  for name in ("width", "depth", "num_heads", "mlp_dim"):
    if name in predictor:
      check_number(f"config.predictor.{name}", predictor[name], minimum=1, integer=True)
  if "remat" in predictor:
    check_choice("config.predictor.remat", predictor.remat, (True, False))
  width = predictor.get("width", JEPAPredictor.width)
  num_heads = predictor.get("num_heads", JEPAPredictor.num_heads)
  if width % num_heads or width % 4:
    raise UserError(f"config.predictor.width {width} must be divisible by "
                    f"config.predictor.num_heads ({num_heads}) and by 4 (2-D sin-cos positions)")
  return grid


def build(config, length) -> Method:
  grid = _check(config)
  settings = config.ijepa
  masks_of = functools.partial(sample_block_masks, grid=grid, **mask_options(settings))
  predictor = JEPAPredictor(**config.predictor)
  model = JEPA(build_encoder(config.encoder), predictor)
  # The target encoder: the same ViT without dropout or drop path, on the EMA weights.
  target = JEPA(build_encoder(config.encoder, deterministic=True), predictor)

  def momentum(step):
    return linear_momentum(step, length.schedule_steps, settings.base_momentum,
                           settings.final_momentum)

  def target_tokens(extra, images):
    tokens = target.apply({"params": {"encoder": extra["target"]}}, images,
                          method=JEPA.patch_tokens)
    return jax.lax.stop_gradient(tokens)

  def init(rng: jax.Array, batch: dict[str, jax.Array]) -> tuple[Any, Any]:
    images = batch["views"][:, 0]
    mask_rng, params_rng = jax.random.split(rng)
    masks = masks_of(jax.random.split(mask_rng, images.shape[0]))
    params = model.init(params_rng, images, masks.context, masks.targets)["params"]
    # The target encoder starts as a copy of the context encoder (Appendix A.1).
    return params, {"target": params["encoder"]}

  def loss(params, extra, batch, rng, step):
    images = batch["views"][:, 0]
    mask_rng, dropout_rng = jax.random.split(rng)
    masks = masks_of(example_keys(mask_rng, batch))
    tokens = target_tokens(extra, images)
    _, predictions = model.apply({"params": params}, images, masks.context, masks.targets,
                                 train=True, rngs={"dropout": dropout_rng})
    value = losses.block_prediction_mse(predictions, losses.standardize_features(tokens),
                                        masks.targets)
    features = jnp.mean(tokens, axis=1)
    num_patches = grid * grid
    metrics = {"momentum": momentum(step),
               "embedding_std": losses.normalized_std(features),
               "context_fraction": jnp.mean(jnp.sum(masks.context, axis=-1)) / num_patches,
               "target_fraction": jnp.mean(jnp.sum(jnp.any(masks.targets, axis=1), axis=-1))
                                  / num_patches,
               "context_fallback": jnp.mean(masks.num_excluded < settings.num_targets)}
    return value, StepOutput(extra, metrics, features)

  def update_extra(params, extra, step):
    return {**extra, "target": ema.ema_update(extra["target"], params["encoder"],
                                              momentum(step))}

  def represent(params, extra, images, dense=False):
    del params
    tokens = target_tokens(extra, images)
    if dense:
      side = math.isqrt(tokens.shape[1])
      return tokens.reshape(images.shape[0], side, side, -1)
    return jnp.mean(tokens, axis=1)

  # Each image's loss is the mean over its own blocks, drawn from its own key: the batch's
  # loss is a mean of per-image terms and microbatches accumulate exactly.
  return Method(init=init, loss=loss, represent=represent, update_extra=update_extra,
                represent_dense=functools.partial(represent, dense=True), coupling="")
