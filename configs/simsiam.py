r"""SimSiam (Chen & He 2021) configs, one variant per dataset.

digits (default; offline, 2 CPU cores, a few minutes):
    python -m ssl_jax.main --config=configs/simsiam.py:digits --workdir=runs/simsiam_digits
  The shared digits recipe (CNN 32-64-128, batch 256, 1500 steps, AdamW 2e-3) with weight
  decay 0.05, a 3-layer projector with a BatchNorm output (256) and a 64-wide bottleneck
  predictor. Weight decay matters for non-contrastive methods (Tian et al. 2021): at 1000
  steps 0.05 gave 74.0% label propagation with 1 label per class against 70.1% with the
  shared 1e-4, and the stronger augmentation that helps Barlow Twins hurt (48.4%). Target:
  beats raw pixels in label propagation with 1 label per class; measured numbers (and
  whether it does) in README.md.

cifar10 (solo-learn's SimSiam CIFAR recipe):
    python -m ssl_jax.main --config=configs/simsiam.py:cifar10 --workdir=runs/simsiam_cifar10
  ResNet-18 (CIFAR stem), projector 2048-2048-2048 (BatchNorm output), predictor 512 ->
  2048, SGD lr 0.5 x bs/256 momentum 0.9, weight decay 1e-5, solo-learn's "symmetric_weak"
  augmentation, batch 256, 1000 epochs. Target: 90.51% online linear accuracy (solo-learn
  model zoo). solo-learn keeps the predictor's learning rate fixed; here it follows the
  same cosine as the rest.

imagenet2012 (the paper's ResNet-50 recipe):
    python -m ssl_jax.main --config=configs/simsiam.py:imagenet2012 --workdir=runs/simsiam_in1k
  ResNet-50, batch 512, SGD lr 0.05 x bs/256, weight decay 1e-4, projector 2048 x 3,
  predictor 512, MoCo v2 augmentation, 100 epochs. Target: 68.1% top-1 linear evaluation
  (Chen & He 2021, Table 4, 100 epochs).

Add `,runlocal=True` to any variant for a tiny smoke run.
"""
import ml_collections

from configs.common import (DIGITS_NOTE, PHOTOS_NOTE, SOLO_LEARN_CIFAR, apply_runlocal,
                            base_config, parse_arg, set_expected, target)
from configs.recipes.image import setup_variant
from configs.recipes import augmentations


# Published targets per variant (`config.expected`).
EXPECTED = {"cifar10": (target("linear@all", 90.51, *SOLO_LEARN_CIFAR),),
            "imagenet2012": (target("linear@all", 68.1, "Chen & He 2021, Table 4",
                                    "ResNet-50, 100 epochs, batch 512, 8 GPUs"),)}
# Why a variant has no published target (`config.expected.note`).
NOTES = {"digits": DIGITS_NOTE, "photos": PHOTOS_NOTE}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = parse_arg(arg, variant="digits", runlocal=False)
  c = base_config()
  c.method = "simsiam"
  setup_variant(c, arg.variant, "simsiam")
  set_expected(c, EXPECTED.get(arg.variant), NOTES.get(arg.variant))

  if arg.variant == "digits":
    c.projector = ml_collections.ConfigDict(dict(
        hidden_dim=256, output_dim=256, num_layers=3, output_norm=True))
    c.predictor = ml_collections.ConfigDict(dict(hidden_dim=64, output_dim=256))
    c.optimizer.weight_decay = 0.05
  elif arg.variant == "cifar10":
    c.projector = ml_collections.ConfigDict(dict(
        hidden_dim=2048, output_dim=2048, num_layers=3, output_norm=True))
    c.predictor = ml_collections.ConfigDict(dict(hidden_dim=512, output_dim=2048))
    c.optimizer.update(name="sgd", lr=0.5, lr_scaling="linear", weight_decay=1e-5)
    c.augment = augmentations.cifar_augment(saturation=0.4, solarize_prob=0.0, blur_prob=0.5)
  elif arg.variant == "imagenet2012":
    c.batch_size = 512
    c.total_epochs = 100
    c.projector = ml_collections.ConfigDict(dict(
        hidden_dim=2048, output_dim=2048, num_layers=3, output_norm=True))
    c.predictor = ml_collections.ConfigDict(dict(hidden_dim=512, output_dim=2048))
    c.optimizer.update(name="sgd", lr=0.05, weight_decay=1e-4, warmup_epochs=0)
    c.data.crop_scale = (0.2, 1.0)
    c.augment = augmentations.mocov2_augment()

  if arg.runlocal:
    apply_runlocal(c)
  c.lock()
  return c
