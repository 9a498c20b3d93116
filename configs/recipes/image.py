"""Image dataset recipes shared by the method configs: the embedded digits and photos (2 CPU
cores), solo-learn's CIFAR-10 and the papers' ImageNet-1k, and the reconstruction objectives'
variant of each."""
import ml_collections

from configs.recipes import augmentations


def _small_cpu_run(c: ml_collections.ConfigDict, dataset: str) -> None:
  """What the embedded datasets' recipes share: a small CNN (32-64-128), batch 256, 1500
  steps, AdamW 2e-3 with 50 warm-up steps."""
  c.dataset = dataset
  c.batch_size = 256
  c.total_steps = 1500
  c.log_every_steps = 100
  c.checkpoint_every_steps = 500
  c.encoder = ml_collections.ConfigDict(dict(name="convnet", widths=(32, 64, 128)))
  c.optimizer.update(name="adamw", lr=2e-3, lr_scaling="none", weight_decay=1e-4,
                     warmup_steps=50)


def digits_setup(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The embedded 8x8 digits recipe shared by the joint-embedding configs (2 CPU cores).

  Small CNN (32-64-128), batch 256, 1500 steps, AdamW 2e-3 with 50 warm-up steps, the whole
  image as each view (cropping destroys an 8x8 digit) with the strong affine + noise recipe.
  """
  _small_cpu_run(c, "digits")
  c.data.update(image_size=8, crop="none", flip=False)
  c.augment = augmentations.digits_augment()
  return c


def photos_setup(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The embedded colour recipe (`photos`: 32x32 patches of ten photographs, 2 CPU cores).

  Small CNN (32-64-128), batch 256, 1500 steps, AdamW 2e-3 with 50 warm-up steps; random
  resized crops covering 20-100% of a patch with flips, and solo-learn's CIFAR colour
  recipe normalised with the photos statistics. Methods whose target is the colour itself
  (colorization) replace the augmentation with a colour-faithful one.
  """
  _small_cpu_run(c, "photos")
  c.data.update(image_size=32, crop="random_resized", crop_scale=(0.2, 1.0), flip=True)
  c.augment = augmentations.cifar_augment(mean=augmentations.PHOTOS_MEAN,
                                          std=augmentations.PHOTOS_STD)
  return c


def cifar10_setup(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """solo-learn's CIFAR-10 setting: ResNet-18 with CIFAR stem, batch 256, 1000 epochs,
  10 warm-up epochs, random resized crops of 32 px (scale 0.08-1) with flips."""
  c.dataset = "cifar10"
  c.batch_size = 256
  c.total_epochs = 1000
  c.log_every_steps = 100
  c.checkpoint_every_steps = 2000
  c.encoder = ml_collections.ConfigDict(dict(name="resnet", depth=18,
                                             cifar_stem=True))
  c.optimizer.update(warmup_epochs=10)
  c.data.update(image_size=32, crop="random_resized", crop_scale=(0.08, 1.0), flip=True)
  c.augment = augmentations.cifar_augment()
  c.evals.probes.linear_l2 = "heldout"
  c.eval.batch_size = 1024
  return c


def imagenet2012_setup(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """ImageNet-1k: ResNet-50 (bfloat16), 224 px random resized crops with flips, centre-
  cropped 256 -> 224 evaluation, 10 warm-up epochs, whole-ImageNet probes (linear and kNN on
  all labels, label propagation on 1% / 10%). Needs the TFDS dataset prepared by hand."""
  c.dataset = "imagenet2012"
  c.data.test_split = "validation"
  c.batch_size = 4096
  c.total_epochs = 1000
  c.log_every_steps = 100
  c.checkpoint_every_steps = 1000
  c.encoder = ml_collections.ConfigDict(dict(name="resnet", depth=50))
  c.precision = "bfloat16"
  c.optimizer.update(name="lars", lr_scaling="linear", warmup_epochs=10)
  c.data.update(image_size=224, crop="random_resized", crop_scale=(0.08, 1.0), flip=True,
                eval_crop="center", eval_resize=256)
  c.augment = augmentations.simclr_augment(strength=1.0, blur_prob=0.5)
  c.evals.probes.linear_l2 = "heldout"
  c.eval.batch_size = 1024
  c.evals.probes.labels_per_class = (13, 128, 0)
  c.evals.probes.seeds = 1
  return c


VARIANT_SETUPS = {"digits": digits_setup, "photos": photos_setup, "cifar10": cifar10_setup,
                  "imagenet2012": imagenet2012_setup}


def setup_variant(c: ml_collections.ConfigDict, variant: str, method: str
                  ) -> ml_collections.ConfigDict:
  """Applies the dataset recipe of `variant`; an unknown variant is a ValueError."""
  if variant not in VARIANT_SETUPS:
    raise ValueError(f"unknown {method} variant '{variant}': use "
                     f"{', '.join(VARIANT_SETUPS)}")
  return VARIANT_SETUPS[variant](c)


# The decoder (ssl_jax/models/decoder.py) per variant: the first feature map is 2x2 for 8 px
# digits, 4x4 for 32 px CIFAR, and 7x7 / 4x4 for 224 / 128 px ImageNet crops.
DECODER_WIDTHS = {"digits": (128, 64, 32), "cifar10": (256, 128, 64, 32),
                  "imagenet2012": (512, 256, 128, 64, 32, 16)}


def reconstruction_setup(c: ml_collections.ConfigDict, variant: str, method: str,
                         unit_pixels: bool) -> ml_collections.ConfigDict:
  """The dataset recipe of `variant` for the objectives that corrupt one view of an image
  and reconstruct it (autoencoder, VAE, inpainting): one view, no photometric augmentation
  (the method's corruption is its task), the decoder widths above, and AdamW at 1e-3
  (2e-3 on digits, from `digits_setup`) with these durations: 1000 steps on digits, 200
  epochs on CIFAR-10 (images whole, with flips), 100 epochs of batch 1024 on ImageNet.
  `unit_pixels` normalises with mean 0 and std 1, so the network sees (and reconstructs)
  pixels in [0, 1]; otherwise with the dataset's mean and std."""
  if variant not in DECODER_WIDTHS:
    raise ValueError(f"unknown {method} variant '{variant}': use {', '.join(DECODER_WIDTHS)}")
  setup_variant(c, variant, method)
  channels = len(c.augment.mean)
  mean, std = ((0.0,) * channels, (1.0,) * channels) if unit_pixels else (
      c.augment.mean, c.augment.std)
  c.augment = augmentations.augment_config(mean=mean, std=std)
  c.data.num_views = 1
  c.decoder = ml_collections.ConfigDict(dict(widths=DECODER_WIDTHS[variant],
                                             convs_per_stage=1))
  if variant == "digits":
    c.total_steps = 1000
    return c
  if variant == "cifar10":
    c.data.update(crop="none", flip=True)
    c.total_epochs = 200
  else:
    c.batch_size = 1024
    c.total_epochs = 100
    c.optimizer.warmup_epochs = 5
  c.optimizer.update(name="adamw", lr=1e-3, lr_scaling="none", weight_decay=1e-4)
  return c
