"""On-device per-example augmentation of training views (JAX + dm_pix, no TensorFlow).

The host pipeline (`ssl_jax.data.pipeline`) delivers uint8 views that are
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

`config.augment` is a ConfigDict as built by `augment_config` or one of the
presets `simclr_augment`, `cifar_augment` and `digits_augment`.
"""

from collections.abc import Callable, Sequence
from typing import Any

import dm_pix as pix
import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax.errors import UserError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
DIGITS_MEAN, DIGITS_STD = (0.306,), (0.376,)  # Pixel statistics of the digits train split.
PHOTOS_MEAN, PHOTOS_STD = (0.511, 0.371, 0.318), (0.310, 0.236, 0.240)  # photos train split

_PROB_KEYS = ("jitter_prob", "grayscale_prob", "blur_prob", "solarize_prob", "affine_prob")
_BLUR_KERNEL_FRACTION = 0.1  # SimCLR: the blur kernel is 10% of the image side.
_SOLARIZE_THRESHOLD = 0.5
_NUM_OPS = 6  # One rng stream per op, so enabling an op leaves the others' draws unchanged.

Prob = float | Sequence[float]


def augment_config(
    *, mean: Sequence[float], std: Sequence[float], **ops: Any
) -> ml_collections.ConfigDict:
  """Returns a complete `config.augment` with every op off except those in `ops`.

  Keys: jitter_prob, brightness, contrast, saturation, hue (colour jitter);
  grayscale_prob; blur_prob, blur_sigma (min, max) in pixels; solarize_prob;
  affine_prob, rotation (max |degrees|), scale (min, max), translate (max
  fraction of the side); noise_std (Gaussian, on the [0, 1] scale); mean, std
  (per channel, [0, 1] scale). Probabilities may be per-view tuples.
  """
  config = dict(
      jitter_prob=0.0, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0,
      grayscale_prob=0.0,
      blur_prob=0.0, blur_sigma=(0.1, 2.0),
      solarize_prob=0.0,
      affine_prob=0.0, rotation=0.0, scale=(1.0, 1.0), translate=0.0,
      noise_std=0.0,
      mean=tuple(mean), std=tuple(std),
  )
  unknown = sorted(set(ops) - set(config))
  if unknown:
    raise UserError(f"unknown augmentation keys {unknown}; known: {sorted(config)}")
  # Not type-safe: a probability may later be overridden by a per-view tuple.
  return ml_collections.ConfigDict({**config, **ops}, type_safe=False)


def simclr_augment(
    strength: float = 1.0, blur_prob: Prob = 0.5, solarize_prob: Prob = 0.0,
    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> ml_collections.ConfigDict:
  """SimCLR's ImageNet recipe (Chen et al. 2020, Appendix A) after crop and flip.

  Colour jitter of strength s (brightness, contrast, saturation 0.8s, hue 0.2s)
  with probability 0.8, grayscale 0.2, blur with sigma in [0.1, 2.0] px. BYOL
  is `simclr_augment(blur_prob=(1.0, 0.1), solarize_prob=(0.0, 0.2))`.
  """
  return augment_config(
      jitter_prob=0.8, brightness=0.8 * strength, contrast=0.8 * strength,
      saturation=0.8 * strength, hue=0.2 * strength, grayscale_prob=0.2,
      blur_prob=blur_prob, blur_sigma=(0.1, 2.0), solarize_prob=solarize_prob,
      mean=mean, std=std)


def byol_augment(
    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> ml_collections.ConfigDict:
  """BYOL's asymmetric ImageNet recipe (Grill et al. 2020, Table 6), after crop and flip.

  Colour jitter (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1) with probability
  0.8, grayscale 0.2, blur with probability 1.0 on view 1 and 0.1 on view 2, solarisation
  0.2 on view 2 only. MoCo v3, Barlow Twins, VICReg and DINO use it too.
  """
  return augment_config(
      jitter_prob=0.8, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1,
      grayscale_prob=0.2, blur_prob=(1.0, 0.1), blur_sigma=(0.1, 2.0),
      solarize_prob=(0.0, 0.2), mean=mean, std=std)


def mocov2_augment(
    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> ml_collections.ConfigDict:
  """MoCo v2's ImageNet recipe (Chen et al. 2020, "Improved Baselines"), after crop/flip.

  Colour jitter (0.4, 0.4, 0.4, 0.1) with probability 0.8, grayscale 0.2, blur 0.5 on both
  views (SimSiam uses it too). Its crops cover 20-100% of the image (`data.crop_scale`).
  """
  return augment_config(
      jitter_prob=0.8, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
      grayscale_prob=0.2, blur_prob=0.5, blur_sigma=(0.1, 2.0), mean=mean, std=std)


def cifar_augment(
    brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.2,
    hue: float = 0.1, jitter_prob: Prob = 0.8, grayscale_prob: Prob = 0.2,
    solarize_prob: Prob = 0.1, blur_prob: Prob = 0.0, mean: Sequence[float] = CIFAR_MEAN,
    std: Sequence[float] = CIFAR_STD
) -> ml_collections.ConfigDict:
  """solo-learn's CIFAR recipes: colour jitter and grayscale, by default no blur on 32x32.

  SimCLR's is the default; solo-learn's "asymmetric" file (BYOL, MoCo v3, Barlow Twins,
  DINO) is `solarize_prob=(0.0, 0.2)`, its "symmetric_weak" (MoCo v2+, SimSiam) is
  `saturation=0.4, solarize_prob=0.0, blur_prob=0.5`.
  """
  return augment_config(
      jitter_prob=jitter_prob, brightness=brightness, contrast=contrast,
      saturation=saturation, hue=hue, grayscale_prob=grayscale_prob,
      solarize_prob=solarize_prob, blur_prob=blur_prob, mean=mean, std=std)


def digits_augment(
    affine_prob: Prob = 1.0, rotation: float = 25.0,
    scale: tuple[float, float] = (0.75, 1.25), translate: float = 0.2,
    noise_std: float = 0.1, mean: Sequence[float] = DIGITS_MEAN,
    std: Sequence[float] = DIGITS_STD
) -> ml_collections.ConfigDict:
  """Geometric recipe for 8x8 grayscale digits: small affine warps plus pixel noise.

  Cropping and colour do not suit 8x8 single-channel images; a rotation of up to
  25 degrees, a 0.75-1.25 zoom, a shift of up to 1.6 pixels and noise of 0.1 keep
  the digit legible while making the two views differ. Measured with SimCLR
  (T=0.2, 1000 steps): this strength lifts label propagation from 1 label per
  class over a milder one (15 degrees, 0.85-1.15, 0.12, 0.05) because it removes
  writer-specific detail that splits a class into separate neighbourhoods.
  """
  return augment_config(
      affine_prob=affine_prob, rotation=rotation, scale=scale,
      translate=translate, noise_std=noise_std, mean=mean, std=std)


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
