r"""MoCo v2 (He et al. 2020; Chen et al. 2020) and MoCo v3 (Chen, Xie, He 2021) configs.

`--config=configs/moco.py:VARIANT[,version=3]`: version 2 (queue of negatives) is the default.

digits (default; offline, 2 CPU cores, a few minutes):
    python -m ssl_jax.main --config=configs/moco.py:digits --workdir=runs/moco_digits
    python -m ssl_jax.main --config=configs/moco.py:digits,version=3 --workdir=runs/mocov3_digits
  The shared digits recipe (CNN 32-64-128, batch 256, AdamW 2e-3), projector 256 -> 64,
  temperature 0.2. v2: 1500 steps, symmetric loss with a queue of 1024 keys per view (4
  batches: the whole train split is only 1,257 images), momentum 0.99 -> 0.999 (at 1000
  steps it stayed 0.8 points below raw pixels in label propagation). v3: 1000 steps,
  predictor 256 -> 64, momentum 0.99 -> 1. Target: beats raw pixels in label propagation
  with 1 label per class; measured numbers in README.md.

cifar10 (solo-learn's CIFAR recipes):
    python -m ssl_jax.main --config=configs/moco.py:cifar10 --workdir=runs/mocov2_cifar10
  v2 ("MoCo v2+"): ResNet-18 (CIFAR stem), projector 2048 -> 256 without BatchNorm, queue
  32768 per view, temperature 0.2, symmetric loss, momentum 0.99 -> 0.999, SGD lr 0.3
  x bs/256, weight decay 1e-4, "symmetric_weak" augmentation, batch 256, 1000 epochs.
  Target: 92.94% online linear accuracy (solo-learn model zoo).
    python -m ssl_jax.main --config=configs/moco.py:cifar10,version=3 --workdir=runs/mocov3_cifar10
  v3: projector 4096 -> 256 with a BatchNorm output, predictor 4096 -> 256, temperature 0.2,
  momentum 0.99 -> 1, LARS lr 0.3 x bs/256 (trust coefficient 0.02), weight decay 1e-6,
  asymmetric solarisation. Target: 93.10% (solo-learn model zoo).

imagenet2012 (the papers' ResNet-50 recipes):
    python -m ssl_jax.main --config=configs/moco.py:imagenet2012 --workdir=runs/mocov2_in1k
  v2: batch 256, SGD lr 0.03, weight decay 1e-4, queue 65536, temperature 0.2, momentum
  0.999, projector 2048 -> 128 without BatchNorm, MoCo v2 augmentation (crops 20-100%),
  800 epochs. Target: 71.1% top-1 linear evaluation (Chen et al. 2020, Table 2).
    python -m ssl_jax.main --config=configs/moco.py:imagenet2012,version=3 --workdir=runs/mocov3_in1k
  v3: batch 4096, LARS lr 0.3 x bs/256, weight decay 1.5e-6, temperature 1.0, momentum
  0.996 -> 1, projector 4096 -> 256 (2 layers, BatchNorm output, as the authors' ResNet
  code), predictor 4096 -> 256, BYOL augmentation with crops 20-100%, 1000 epochs.
  Target: 74.6% top-1 linear evaluation (Chen et al. 2021, Table 4 / the moco-v3 repo).

Add `,runlocal=True` to any variant for a tiny smoke run.
"""
import ml_collections

from configs.common import (DIGITS_NOTE, PHOTOS_NOTE, SOLO_LEARN_CIFAR, apply_runlocal,
                            base_config, parse_arg, set_expected, target)
from configs.recipes.image import setup_variant
from configs.recipes import augmentations


# Published targets per (variant, version) (`config.expected`).
EXPECTED = {
    ("cifar10", 2): (target("linear@all", 92.94, *SOLO_LEARN_CIFAR),),
    ("cifar10", 3): (target("linear@all", 93.10, *SOLO_LEARN_CIFAR),),
    ("imagenet2012", 2): (target("linear@all", 71.1, "Chen, Fan et al. 2020, Table 2",
                                "ResNet-50, 800 epochs, batch 256, 8 V100 GPUs"),),
    ("imagenet2012", 3): (target("linear@all", 74.6, "Chen, Xie, He 2021, Table 4",
                                 "ResNet-50, 1000 epochs, batch 4096"),)}
# Why a variant has no published target (`config.expected.note`).
NOTES = {"digits": DIGITS_NOTE, "photos": PHOTOS_NOTE}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = parse_arg(arg, variant="digits", version=2, runlocal=False)
  if arg.version not in (2, 3):
    raise ValueError(f"moco version must be 2 or 3, got {arg.version}")
  c = base_config()
  c.method = "moco"
  c.moco = ml_collections.ConfigDict(dict(
      version=arg.version, temperature=0.2, base_momentum=0.99, final_momentum=1.0,
      queue_size=65536, symmetric=False))
  setup_variant(c, arg.variant, "moco")
  set_expected(c, EXPECTED.get((arg.variant, arg.version)), NOTES.get(arg.variant))
  v3 = arg.version == 3

  if arg.variant == "digits":
    c.projector = ml_collections.ConfigDict(dict(hidden_dim=256, output_dim=64, output_norm=v3))
    if v3:
      c.predictor = ml_collections.ConfigDict(dict(hidden_dim=256, output_dim=64))
    c.moco.update(queue_size=1024, symmetric=True, final_momentum=1.0 if v3 else 0.999)
    if v3:
      c.total_steps = 1000
  elif arg.variant == "cifar10":
    if v3:
      c.projector = ml_collections.ConfigDict(dict(
          hidden_dim=4096, output_dim=256, output_norm=True))
      c.predictor = ml_collections.ConfigDict(dict(hidden_dim=4096, output_dim=256))
      c.optimizer.update(name="lars", lr=0.3, lr_scaling="linear", weight_decay=1e-6,
                         trust_coefficient=0.02)
      c.augment = augmentations.cifar_augment(solarize_prob=(0.0, 0.2))
    else:
      c.projector = ml_collections.ConfigDict(dict(
          hidden_dim=2048, output_dim=256, hidden_norm=False))
      c.moco.update(queue_size=32768, symmetric=True, final_momentum=0.999)
      c.optimizer.update(name="sgd", lr=0.3, lr_scaling="linear", weight_decay=1e-4)
      c.augment = augmentations.cifar_augment(saturation=0.4, solarize_prob=0.0, blur_prob=0.5)
  elif arg.variant == "imagenet2012":
    c.data.crop_scale = (0.2, 1.0)
    if v3:
      c.projector = ml_collections.ConfigDict(dict(
          hidden_dim=4096, output_dim=256, output_norm=True))
      c.predictor = ml_collections.ConfigDict(dict(hidden_dim=4096, output_dim=256))
      c.moco.update(temperature=1.0, base_momentum=0.996)
      c.optimizer.update(lr=0.3, weight_decay=1.5e-6)
      c.augment = augmentations.byol_augment()
    else:
      c.batch_size = 256
      c.total_epochs = 800
      c.projector = ml_collections.ConfigDict(dict(
          hidden_dim=2048, output_dim=128, hidden_norm=False))
      c.moco.update(base_momentum=0.999, final_momentum=0.999)
      c.optimizer.update(name="sgd", lr=0.03, weight_decay=1e-4, warmup_epochs=0)
      c.augment = augmentations.mocov2_augment()

  if arg.runlocal:
    apply_runlocal(c)
    if not v3:
      c.moco.queue_size = 64
  c.lock()
  return c
