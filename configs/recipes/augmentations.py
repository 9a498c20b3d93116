"""Augmentation recipes (`config.augment`) and the dataset statistics they normalise with.

`augment_config` builds a complete section with every op of `ssl_jax.data.augment` off except
the ones named; the presets are the published recipes. Configs only: the trainer reads the
section, never these functions.
"""
from collections.abc import Sequence
from typing import Any

import ml_collections

from ssl_jax.errors import UserError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
DIGITS_MEAN, DIGITS_STD = (0.306,), (0.376,)  # Pixel statistics of the digits train split.
PHOTOS_MEAN, PHOTOS_STD = (0.511, 0.371, 0.318), (0.310, 0.236, 0.240)  # photos train split

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


def dino_local_augment(
    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> ml_collections.ConfigDict:
  """DINO's local-crop recipe (Caron et al. 2021, its `DataAugmentationDINO`; iBOT's and
  DINOv2's too): colour jitter (0.4, 0.4, 0.2, 0.1) with probability 0.8, grayscale 0.2,
  blur 0.5, no solarisation."""
  return augment_config(jitter_prob=0.8, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1,
                        grayscale_prob=0.2, blur_prob=0.5, mean=mean, std=std)


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
