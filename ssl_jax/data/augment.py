"""On-device per-example augmentation of training views (JAX + dm_pix, no TensorFlow).

The host pipeline (`ssl_jax.data.image_pipeline`) delivers uint8 views that are
already cropped and flipped; everything photometric happens here, jitted on the
accelerator, following SimCLR (Chen et al. 2020, Appendix A): colour jitter
with probability 0.8, grayscale with probability 0.2, Gaussian blur with a
kernel of ~10% of the image side; plus solarisation (BYOL's asymmetric recipe),
a small random affine warp and additive noise for tiny images such as the 8x8
digits, where cropping would destroy the content.

Per view, the ops run in this fixed order: affine, colour jitter (brightness,
contrast, saturation, hue, always in that order -- SimCLR's random order is not
used), grayscale, blur, solarise, noise, then normalisation. Each op is applied
to an example independently with its probability, which can be a scalar or a
tuple with one entry per view. Ops whose probability or strength is 0 are left
out of the traced computation.

`config.augment` is a ConfigDict as built by `configs.recipes.augmentations.augment_config`
or one of its presets (SimCLR's, BYOL's, MoCo v2's, solo-learn's CIFAR, the digits recipe).
"""

from collections.abc import Callable
from typing import Any

import dm_pix as pix
import jax
import jax.numpy as jnp

from ssl_jax.errors import UserError

_PROB_KEYS = ("jitter_prob", "grayscale_prob", "blur_prob", "solarize_prob", "affine_prob")
_BLUR_KERNEL_FRACTION = 0.1  # SimCLR: the blur kernel is 10% of the image side.
_SOLARIZE_THRESHOLD = 0.5
_NUM_OPS = 6  # One rng stream per op, so enabling an op leaves the others' draws unchanged.

def normalize_images(images: jax.Array, config: Any) -> jax.Array:
  """uint8 [..., H, W, C] -> float32 (x / 255 - mean) / std with `config.augment`'s stats."""
  return _normalize(images.astype(jnp.float32) / 255.0, config.augment)


def unit_frames(frames: jax.Array) -> jax.Array:
  """Video frames on the [0, 1] scale: uint8 are divided by 255, floats (already scaled) are
  kept. Frame predictors model pixels in [0, 1] (a Bernoulli or squared-error likelihood),
  so videos are not standardised."""
  if jnp.issubdtype(frames.dtype, jnp.integer):
    return frames.astype(jnp.float32) / 255.0
  return frames.astype(jnp.float32)


def normalize_unit_images(images: jax.Array, config: Any) -> jax.Array:
  """float [..., C] on the [0, 1] pixel scale -> (x - mean) / std with `config.augment`'s
  stats (what the reconstruction objectives do after corrupting pixels)."""
  return _normalize(images.astype(jnp.float32), config.augment)


def unnormalize_images(images: jax.Array, config: Any) -> jax.Array:
  """Normalised images -> the [0, 1] pixel scale: x * std + mean (the inverse of
  `normalize_unit_images`; values outside [0, 1] are kept)."""
  _check_stats(config.augment, images.shape[-1])
  mean = jnp.asarray(config.augment.mean, jnp.float32)
  std = jnp.asarray(config.augment.std, jnp.float32)
  return images.astype(jnp.float32) * std + mean


def augment_views(rng: jax.Array, views: jax.Array, config: Any,
                  section: str = "augment") -> jax.Array:
  """Augments and normalises uint8 [B, V, H, W, C] views into float32 of the same shape.

  Example b, view v draws from the key fold_in(fold_in(rng, b), v): every
  example and view is augmented independently, and reproducibly given `rng`.
  `section` names the config section of the recipe (`local_augment` for
  multi-crop's local views).
  """
  if views.ndim != 5:
    raise ValueError(f"views must be [B, V, H, W, C], got shape {views.shape}")
  aug = config[section]
  batch, num_views, height, width, channels = views.shape
  _check_stats(aug, channels)
  _check_strengths(aug)
  example_keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(batch))
  out = []
  for v in range(num_views):
    ops = _view_ops(aug, v, num_views, channels, min(height, width))
    keys = jax.vmap(lambda k, v=v: jax.random.fold_in(k, v))(example_keys)
    images = views[:, v].astype(jnp.float32) / 255.0
    out.append(jax.vmap(lambda k, x, ops=ops: _augment_image(k, x, ops))(keys, images))
  return _normalize(jnp.stack(out, axis=1), aug)


def _view_ops(
    aug: Any, view: int, num_views: int, channels: int, side: int
) -> dict[str, Any]:
  """The static settings of one view's ops: its probabilities and enabled strengths."""
  probs = {key: _view_prob(aug, key, view, num_views) for key in _PROB_KEYS}
  jitter = {name: float(aug[name]) for name in ("brightness", "contrast")}
  if channels == 3:  # Saturation and hue only exist for RGB.
    jitter.update(saturation=float(aug.saturation), hue=float(aug.hue))
  jitter = {name: s for name, s in jitter.items() if s > 0}
  if not jitter:
    probs["jitter_prob"] = 0.0
  if channels != 3:  # A single channel is already gray.
    probs["grayscale_prob"] = 0.0
  affine = dict(rotation=float(aug.rotation), scale=tuple(aug.scale),
                translate=float(aug.translate))
  if affine == dict(rotation=0.0, scale=(1.0, 1.0), translate=0.0):
    probs["affine_prob"] = 0.0
  return dict(
      probs=probs, jitter=jitter, affine=affine, blur_sigma=tuple(aug.blur_sigma),
      blur_kernel=max(3, round(_BLUR_KERNEL_FRACTION * side)),
      noise_std=float(aug.noise_std))


def _view_prob(aug: Any, key: str, view: int, num_views: int) -> float:
  """`aug[key]` for `view`: a scalar, or a tuple with one probability per view."""
  value = aug[key]
  if isinstance(value, (tuple, list)):
    if len(value) != num_views:
      raise UserError(f"config.augment.{key} has {len(value)} entries for {num_views} views")
    value = value[view]
  if not 0.0 <= value <= 1.0:
    raise UserError(f"config.augment.{key} must be in [0, 1], got {value}")
  return float(value)


def _check_strengths(aug: Any) -> None:
  """Rejects negative strengths and empty or non-positive (min, max) ranges."""
  if any(aug[name] < 0 for name in (
      "brightness", "contrast", "saturation", "hue", "rotation", "translate", "noise_std")):
    raise UserError("augmentation strengths (brightness, contrast, saturation, hue, "
                    "rotation, translate, noise_std) must be >= 0")
  if not 0 < aug.scale[0] <= aug.scale[1] or not 0 < aug.blur_sigma[0] <= aug.blur_sigma[1]:
    raise UserError(f"config.augment.scale {tuple(aug.scale)} and blur_sigma "
                    f"{tuple(aug.blur_sigma)} must be positive (min, max) ranges")


def _check_stats(aug: Any, channels: int) -> None:
  """Requires one positive std and one mean per image channel."""
  if len(aug.mean) != channels or len(aug.std) != channels:
    raise UserError(
        f"config.augment.mean/std need {channels} entries (one per channel), got "
        f"{len(aug.mean)}/{len(aug.std)}")
  if min(aug.std) <= 0:
    raise UserError(f"config.augment.std must be positive, got {tuple(aug.std)}")


def _normalize(images: jax.Array, aug: Any) -> jax.Array:
  """float [..., C] in [0, 1] -> (x - mean) / std."""
  _check_stats(aug, images.shape[-1])
  mean = jnp.asarray(aug.mean, jnp.float32)
  std = jnp.asarray(aug.std, jnp.float32)
  return (images - mean) / std


def _augment_image(key: jax.Array, image: jax.Array, ops: dict[str, Any]) -> jax.Array:
  """One [H, W, C] image in [0, 1] through the enabled ops of its view."""
  keys = jax.random.split(key, _NUM_OPS)
  probs = ops["probs"]
  image = _maybe(keys[0], probs["affine_prob"], image,
                 lambda k, x: _affine(k, x, **ops["affine"]))
  image = _maybe(keys[1], probs["jitter_prob"], image,
                 lambda k, x: _color_jitter(k, x, ops["jitter"]))
  image = _maybe(keys[2], probs["grayscale_prob"], image,
                 lambda k, x: pix.rgb_to_grayscale(x, keep_dims=True))
  image = _maybe(keys[3], probs["blur_prob"], image,
                 lambda k, x: _blur(k, x, ops["blur_sigma"], ops["blur_kernel"]))
  image = _maybe(keys[4], probs["solarize_prob"], image,
                 lambda k, x: pix.solarize(x, _SOLARIZE_THRESHOLD))
  if ops["noise_std"] > 0:
    noise = ops["noise_std"] * jax.random.normal(keys[5], image.shape)
    image = jnp.clip(image + noise, 0.0, 1.0)
  return image


def _maybe(
    key: jax.Array, prob: float, image: jax.Array,
    op: Callable[[jax.Array, jax.Array], jax.Array]
) -> jax.Array:
  """`op(key, image)` with probability `prob`; not traced at all when prob is 0."""
  if prob == 0.0:
    return image
  coin_key, op_key = jax.random.split(key)
  out = op(op_key, image)
  if prob == 1.0:
    return out
  return jnp.where(jax.random.bernoulli(coin_key, prob), out, image)


def _color_jitter(key: jax.Array, image: jax.Array, strengths: dict[str, float]) -> jax.Array:
  """SimCLR colour jitter in the fixed order brightness, contrast, saturation, hue.

  Brightness, contrast and saturation use factors in [max(0, 1 - s), 1 + s]:
  brightness multiplies the image (SimCLR v2, torchvision), contrast scales
  away from the per-channel mean (tf.image.adjust_contrast, as in SimCLR),
  saturation away from the luma (torchvision, hence solo-learn; cheaper than
  SimCLR's HSV scaling, which needs a colour-space round trip). Hue shifts by
  up to h of a full turn in HSV. The image is clipped to [0, 1] after every op.
  """
  keys = dict(zip(("brightness", "contrast", "saturation", "hue"), jax.random.split(key, 4)))

  def factor(name: str) -> jax.Array:
    s = strengths[name]
    return jax.random.uniform(keys[name], minval=max(0.0, 1.0 - s), maxval=1.0 + s)

  if "brightness" in strengths:
    image = jnp.clip(image * factor("brightness"), 0.0, 1.0)
  if "contrast" in strengths:
    image = jnp.clip(pix.adjust_contrast(image, factor("contrast")), 0.0, 1.0)
  if "saturation" in strengths:
    gray = pix.rgb_to_grayscale(image)
    image = jnp.clip(gray + factor("saturation") * (image - gray), 0.0, 1.0)
  if "hue" in strengths:
    h = strengths["hue"]
    delta = jax.random.uniform(keys["hue"], minval=-h, maxval=h)
    image = jnp.clip(pix.adjust_hue(image, delta), 0.0, 1.0)
  return image


def _blur(key: jax.Array, image: jax.Array, sigma_range: tuple[float, float],
          kernel_size: int) -> jax.Array:
  """Gaussian blur, sigma ~ U(sigma_range) px, zero padding ('SAME', as SimCLR).

  Separable, written as a weighted sum of shifted copies rather than a
  convolution: every example has its own sigma, and per-example kernels would
  turn into a slow grouped convolution under vmap.
  """
  sigma = jax.random.uniform(key, minval=sigma_range[0], maxval=sigma_range[1])
  radius = kernel_size // 2
  taps = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  weights = jnp.exp(-0.5 * (taps / sigma) ** 2)
  weights = weights / jnp.sum(weights)
  for axis in (0, 1):
    size = image.shape[axis]
    padding = [(0, 0)] * image.ndim
    padding[axis] = (radius, radius)
    padded = jnp.pad(image, padding)
    image = sum(weights[i] * jax.lax.slice_in_dim(padded, i, i + size, axis=axis)
                for i in range(2 * radius + 1))
  return image


def _affine(key: jax.Array, image: jax.Array, *, rotation: float,
            scale: tuple[float, float], translate: float) -> jax.Array:
  """Rotates, zooms and shifts about the centre; bilinear, zeros outside the image.

  The angle is uniform in [-rotation, rotation] degrees, the zoom in `scale`
  (>1 enlarges the content) and the shift in [-translate, translate] of the side
  along each axis.
  """
  k_rot, k_scale, k_shift = jax.random.split(key, 3)
  height, width = image.shape[:2]
  angle = jnp.deg2rad(jax.random.uniform(k_rot, minval=-rotation, maxval=rotation))
  zoom = jax.random.uniform(k_scale, minval=scale[0], maxval=scale[1])
  shift = jax.random.uniform(k_shift, (2,), minval=-translate, maxval=translate)
  shift = shift * jnp.array([height, width], jnp.float32)
  center = jnp.array([(height - 1) / 2, (width - 1) / 2], jnp.float32)
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  inverse = jnp.array([[cos, sin], [-sin, cos]]) / zoom
  # Pull sampling: output pixel o reads the input at the inverse of the forward
  # map p -> center + zoom * R(angle) (p - center) + shift.
  grid = jnp.stack(jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij"))
  source = jnp.einsum("ij,jhw->ihw", inverse, grid - (center + shift)[:, None, None])
  source = source + center[:, None, None]

  def sample(channel: jax.Array) -> jax.Array:
    return jax.scipy.ndimage.map_coordinates(
        channel, list(source), order=1, mode="constant", cval=0.0)

  return jax.vmap(sample, in_axes=-1, out_axes=-1)(image)
