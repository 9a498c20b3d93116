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

from configs.common import base_config, parse_arg
from ssl_jax.data import augment


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = parse_arg(arg, variant="digits", runlocal=False)
  c = base_config()
  c.method = "simclr"
  c.simclr = ml_collections.ConfigDict(dict(temperature=0.1))

  if arg.variant == "digits":
    c.dataset = "digits"
    c.batch_size = 256
    c.total_steps = 1500
    c.log_every_steps = 100
    c.checkpoint_every_steps = 500
    c.encoder = ml_collections.ConfigDict(dict(name="convnet", widths=(32, 64, 128)))
    c.projector = ml_collections.ConfigDict(dict(hidden_dim=256, output_dim=64))
    c.simclr.temperature = 0.2
    c.optimizer.update(name="adamw", lr=2e-3, lr_scaling="none", weight_decay=1e-4,
                       warmup_steps=50)
    c.data.update(image_size=8, crop="none", flip=False)
    c.augment = augment.digits_augment()
  elif arg.variant == "cifar10":
    c.dataset = "cifar10"
    c.batch_size = 256
    c.total_epochs = 1000
    c.log_every_steps = 100
    c.checkpoint_every_steps = 2000
    c.encoder = ml_collections.ConfigDict(dict(name="resnet", depth=18, cifar_stem=True))
    c.projector = ml_collections.ConfigDict(dict(hidden_dim=2048, output_dim=256))
    c.simclr.temperature = 0.2
    c.optimizer.update(name="lars", lr=0.4, lr_scaling="linear", weight_decay=1e-5,
                       warmup_epochs=10)
    c.data.update(image_size=32, crop="random_resized", crop_scale=(0.08, 1.0), flip=True)
    c.augment = augment.cifar_augment()
    c.eval.batch_size = 1024
  elif arg.variant == "imagenet2012":
    c.dataset = "imagenet2012"
    c.data.test_split = "validation"
    c.batch_size = 4096
    c.total_epochs = 1000
    c.log_every_steps = 100
    c.checkpoint_every_steps = 1000
    c.encoder = ml_collections.ConfigDict(dict(name="resnet", depth=50, dtype="bfloat16"))
    c.projector = ml_collections.ConfigDict(dict(hidden_dim=2048, output_dim=128))
    c.simclr.temperature = 0.1
    c.optimizer.update(name="lars", lr=0.3, lr_scaling="linear", weight_decay=1e-6,
                       warmup_epochs=10)
    c.data.update(image_size=224, crop="random_resized", crop_scale=(0.08, 1.0), flip=True,
                  eval_crop="center", eval_resize=256)
    c.augment = augment.simclr_augment(strength=1.0, blur_prob=0.5)
    c.eval.batch_size = 1024
    # Whole-ImageNet probes: linear and kNN on all labels; label propagation on 1% / 10%.
    c.eval.labels_per_class = (13, 128, 0)
    c.eval.seeds = 1
  else:
    raise ValueError(f"unknown simclr variant '{arg.variant}': use digits, cifar10 or imagenet2012")

  if arg.runlocal:
    c.batch_size = 16
    c.total_steps, c.total_epochs = 4, None
    c.log_every_steps = c.checkpoint_every_steps = 2
    c.optimizer.warmup_steps, c.optimizer.warmup_epochs = 1, None
    c.eval.labels_per_class, c.eval.seeds = (1, 0), 1
  c.lock()
  return c
