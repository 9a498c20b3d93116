r"""SimCLR (Chen et al. 2020) configs, one variant per dataset.

Variants (`--config=configs/simclr.py:VARIANT`):

digits (default; offline, 2 CPU cores):
    python -m ssl_jax.main --config=configs/simclr.py:digits --workdir=runs/simclr_digits
  Small CNN (32-64-128) on the embedded 8x8 UCI digits, batch 256, 1500 steps, AdamW,
  temperature 0.2, strong affine augmentation; then the downstream evaluation.
  Target: linear probe >= 97% and label propagation with 1 label per class at least 3 points
  above raw pixels, within 10 minutes on 2 CPU cores. Measured numbers are in README.md.

cifar10 (solo-learn's SimCLR CIFAR recipe):
    python -m ssl_jax.main --config=configs/simclr.py:cifar10 --workdir=runs/simclr_cifar10
  ResNet-18 with CIFAR stem, projector 2048-2048-256, temperature 0.2, LARS lr 0.4 x bs/256,
  weight decay 1e-5, batch 256, 1000 epochs, 10 warm-up epochs. Target: 90.74% online linear
  accuracy after 1000 epochs (solo-learn model zoo).

imagenet2012 (the paper's ResNet-50 recipe):
    python -m ssl_jax.main --config=configs/simclr.py:imagenet2012 --workdir=runs/simclr_in1k
  ResNet-50, batch 4096, LARS lr 0.3 x bs/256, weight decay 1e-6, temperature 0.1, 10
  warm-up epochs, projector 2048-2048-128. Target: 69.3% top-1 linear evaluation after 1000
  epochs (Chen et al. 2020, Table 6). Needs the ImageNet TFDS dataset prepared by hand.

Add `,runlocal=True` to any variant for a tiny smoke run (few steps, small batch).
"""
import ml_collections

from configs.common import (DIGITS_NOTE, PHOTOS_NOTE, SOLO_LEARN_CIFAR, apply_runlocal,
                            base_config, parse_arg, set_expected, target)
from configs.recipes.image import setup_variant


# Published targets per variant (`config.expected`).
EXPECTED = {"cifar10": (target("linear@all", 90.74, *SOLO_LEARN_CIFAR),),
            "imagenet2012": (target("linear@all", 69.3, "Chen et al. 2020, Table 6",
                                    "ResNet-50, 1000 epochs, batch 4096, 128 TPU v3 cores"),)}
# Why a variant has no published target (`config.expected.note`).
NOTES = {"digits": DIGITS_NOTE, "photos": PHOTOS_NOTE}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = parse_arg(arg, variant="digits", runlocal=False)
  c = base_config()
  c.method = "simclr"
  c.simclr = ml_collections.ConfigDict(dict(temperature=0.1))
  setup_variant(c, arg.variant, "simclr")
  set_expected(c, EXPECTED.get(arg.variant), NOTES.get(arg.variant))

  if arg.variant == "digits":
    c.projector = ml_collections.ConfigDict(dict(hidden_dim=256, output_dim=64))
    c.simclr.temperature = 0.2
  elif arg.variant == "cifar10":
    c.projector = ml_collections.ConfigDict(dict(hidden_dim=2048, output_dim=256))
    c.simclr.temperature = 0.2
    c.optimizer.update(name="lars", lr=0.4, lr_scaling="linear", weight_decay=1e-5)
  elif arg.variant == "imagenet2012":
    c.projector = ml_collections.ConfigDict(dict(hidden_dim=2048, output_dim=128))
    c.simclr.temperature = 0.1
    c.optimizer.update(lr=0.3, weight_decay=1e-6)

  if arg.runlocal:
    apply_runlocal(c)
  c.lock()
  return c
