r"""Convolutional (denoising) autoencoder configs (Vincent et al. 2008), one variant per dataset.

digits (default; offline, 2 CPU cores, a few minutes):
    python -m ssl_jax.main --config=configs/autoencoder.py:digits --workdir=runs/autoencoder_digits
  CNN 32-64-128 encoder, 32-d code, decoder 128-64-32 (2x2 -> 8x8), pixels in [0, 1]
  (mean 0, std 1), masking noise on 25% of the pixels (one of Vincent et al.'s levels), no
  other augmentation, batch 256, AdamW 2e-3, 1000 steps. Target: clearly above the untrained
  encoder (random_init) in every protocol. Measured (one run, 3 label draws): linear 66.4 /
  85.6 / 90.9 / 97.8% at 1 / 5 / 10 / all labels per class (random_init 49.7 / 77.2 / 85.8 /
  96.1, raw pixels 59.4 / 84.2 / 89.7 / 97.4), label propagation 76.8 / 91.5 / 94.0 / 97.2%
  (random_init 70.6 / 85.3 / 90.2 / 94.4, raw 82.3 / 93.3 / 95.2 / 98.0): above random_init
  everywhere and above raw pixels with a linear probe, below them in label propagation.

cifar10:
    python -m ssl_jax.main --config=configs/autoencoder.py:cifar10 --workdir=runs/ae_cifar10
  ResNet-18 (CIFAR stem) encoder, 256-d code, decoder 256-128-64-32 (4x4 -> 32x32), CIFAR
  normalisation, masking noise 25%, flips only, batch 256, AdamW 1e-3, 200 epochs. No
  published target: autoencoders are not in the SSL CIFAR-10 benchmarks (solo-learn), and the
  settings are ours.

imagenet2012:
    python -m ssl_jax.main --config=configs/autoencoder.py:imagenet2012 --workdir=runs/ae_in1k
  ResNet-50 encoder on 224 px random resized crops, 512-d code, decoder 512-...-16
  (7x7 -> 224x224), masking noise 25%, batch 1024, AdamW 1e-3, 100 epochs. No published
  target for this recipe; the settings are ours. Needs the ImageNet TFDS dataset prepared by
  hand.

Add `,runlocal=True` to any variant for a tiny smoke run.
"""
import ml_collections

from configs.common import DIGITS_NOTE, apply_runlocal, base_config, parse_arg, set_expected
from configs.recipes.image import reconstruction_setup


# Why a variant has no published target (`config.expected.note`); none has one.
NOTES = {
    "digits": DIGITS_NOTE,
    "cifar10": ("No published number: autoencoders are not in the SSL CIFAR-10 benchmarks "
                "(solo-learn's model zoo), and this recipe's settings are this codebase's own."),
    "imagenet2012": ("No published number for this recipe: a ResNet-50 denoising autoencoder "
                     "with these settings (512-d code, 25% masking noise, 100 epochs) is this "
                     "codebase's own."),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = parse_arg(arg, variant="digits", runlocal=False)
  c = base_config()
  c.method = "autoencoder"
  c.autoencoder = ml_collections.ConfigDict(dict(latent_dim=32, noise="masking",
                                                 noise_level=0.25))
  reconstruction_setup(c, arg.variant, "autoencoder", unit_pixels=arg.variant == "digits")
  set_expected(c, None, NOTES[arg.variant])

  if arg.variant == "cifar10":
    c.autoencoder.latent_dim = 256
  elif arg.variant == "imagenet2012":
    c.autoencoder.latent_dim = 512

  if arg.runlocal:
    apply_runlocal(c)
  c.lock()
  return c
