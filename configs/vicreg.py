r"""VICReg (Bardes, Ponce, LeCun 2022) configs, one variant per dataset.

digits (default; offline, 2 CPU cores, a few minutes):
    python -m ssl_jax.main --config=configs/vicreg.py:digits --workdir=runs/vicreg_digits
  The shared digits recipe (CNN 32-64-128, batch 256, AdamW 2e-3) for 1000 steps, expander
  512-512-512, weights 25 / 25 / 1. Target: beats raw pixels in label propagation with 1
  label per class; measured numbers in README.md.

cifar10 (solo-learn's VICReg CIFAR recipe):
    python -m ssl_jax.main --config=configs/vicreg.py:cifar10 --workdir=runs/vicreg_cifar10
  ResNet-18 (CIFAR stem), expander 2048-2048-2048, weights 25 / 25 / 1, LARS lr 0.3 x bs/256
  (trust coefficient 0.02), weight decay 1e-4, crops 20-100%, solarisation 0.1 on both
  views, batch 256, 1000 epochs. Target: 92.07% online linear accuracy (solo-learn model
  zoo).

imagenet2012 (the paper's ResNet-50 recipe):
    python -m ssl_jax.main --config=configs/vicreg.py:imagenet2012 --workdir=runs/vicreg_in1k
  ResNet-50, batch 2048, LARS lr 0.2 x bs/256, weight decay 1e-6, expander 8192 x 3,
  weights 25 / 25 / 1, BYOL augmentation, 1000 epochs. Target: 73.2% top-1 linear
  evaluation (Bardes et al. 2022, Table 1).

Add `,runlocal=True` to any variant for a tiny smoke run.
"""
import ml_collections

from configs.common import (DIGITS_NOTE, PHOTOS_NOTE, SOLO_LEARN_CIFAR, apply_runlocal,
                            base_config, parse_arg, set_expected, target)
from configs.recipes.image import setup_variant
from configs.recipes import augmentations


# Published targets per variant (`config.expected`).
EXPECTED = {"cifar10": (target("linear@all", 92.07, *SOLO_LEARN_CIFAR),),
            "imagenet2012": (target("linear@all", 73.2, "Bardes et al. 2022, Table 1",
                                    "ResNet-50, 1000 epochs, batch 2048"),)}
# Why a variant has no published target (`config.expected.note`).
NOTES = {"digits": DIGITS_NOTE, "photos": PHOTOS_NOTE}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = parse_arg(arg, variant="digits", runlocal=False)
  c = base_config()
  c.method = "vicreg"
  c.vicreg = ml_collections.ConfigDict(dict(
      invariance_weight=25.0, variance_weight=25.0, covariance_weight=1.0, gamma=1.0, eps=1e-4))
  setup_variant(c, arg.variant, "vicreg")
  set_expected(c, EXPECTED.get(arg.variant), NOTES.get(arg.variant))

  if arg.variant == "digits":
    c.total_steps = 1000
    c.projector = ml_collections.ConfigDict(dict(hidden_dim=512, output_dim=512, num_layers=3))
  elif arg.variant == "cifar10":
    c.projector = ml_collections.ConfigDict(dict(hidden_dim=2048, output_dim=2048, num_layers=3))
    c.optimizer.update(name="lars", lr=0.3, lr_scaling="linear", weight_decay=1e-4,
                       trust_coefficient=0.02)
    c.data.crop_scale = (0.2, 1.0)
    c.augment = augmentations.cifar_augment(solarize_prob=0.1)
  elif arg.variant == "imagenet2012":
    c.batch_size = 2048
    c.projector = ml_collections.ConfigDict(dict(hidden_dim=8192, output_dim=8192, num_layers=3))
    c.optimizer.update(lr=0.2, weight_decay=1e-6)
    c.augment = augmentations.byol_augment()

  if arg.runlocal:
    apply_runlocal(c)
  c.lock()
  return c
