"""Keys every run shares, and the `name=value,...` config-argument parser.

A config file's `get_config(arg)` starts from `base_config()` and fills in its method's
section; `--config.KEY=VALUE` overrides any key on the command line (and a key that does not
exist is rejected, because the returned config is locked).
"""
import ml_collections
from ml_collections import config_dict


def parse_arg(arg: str | None, **defaults):
  """'digits' or 'digits,runlocal=True' -> ConfigDict(variant='digits', runlocal=True, ...).

  The first bare word is the variant; `key=value` pairs override `defaults` with values cast
  to the default's type.
  """
  parsed = ml_collections.ConfigDict(defaults)
  for index, part in enumerate(p for p in (arg or "").split(",") if p):
    if "=" not in part:
      if index != 0 or "variant" not in defaults:
        raise ValueError(f"config argument '{part}' must be key=value")
      parsed.variant = part
      continue
    key, value = part.split("=", 1)
    if key not in defaults:
      raise ValueError(f"unknown config argument '{key}'; known: {sorted(defaults)}")
    kind = type(defaults[key])
    parsed[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
  return parsed


def base_config() -> ml_collections.ConfigDict:
  """The trainer's keys with their defaults; a method config sets what its recipe needs."""
  c = ml_collections.ConfigDict()
  c.method = ""
  c.dataset = ""
  c.seed = 0
  c.batch_size = 256  # global, over all devices and hosts
  # Durations: set exactly one of total_steps / total_epochs (an epoch = train examples / batch).
  c.total_steps = config_dict.placeholder(int)
  c.total_epochs = config_dict.placeholder(float)
  c.evaluate_at_end = True

  c.log_every_steps = 50
  c.checkpoint_every_steps = 500
  c.keep_checkpoints = 3
  c.mesh_data_axis = -1  # devices on the `data` axis; -1 = all

  c.optimizer = ml_collections.ConfigDict(dict(
      name="lars", lr=0.3, lr_scaling="linear", weight_decay=1e-6, momentum=0.9,
      trust_coefficient=0.001, b1=0.9, b2=0.999, grad_clip_norm=0.0,
      warmup_steps=config_dict.placeholder(int), warmup_epochs=config_dict.placeholder(float),
      # Cosine horizon; unset = the run's total. Fix it to extend a run along the same schedule.
      decay_steps=config_dict.placeholder(int), decay_epochs=config_dict.placeholder(float),
      end_lr_factor=0.0))

  # Linear classifier on stop_gradient(features), trained alongside (BYOL's online probe).
  c.online_probe = ml_collections.ConfigDict(dict(enabled=True, lr=1e-3))

  c.data = ml_collections.ConfigDict(dict(
      # "image", "text", "sequence", "video" or "image_text" (ssl_jax/data/inputs.py picks
      # the pipeline)
      modality="image",
      data_dir=config_dict.placeholder(str), train_split="train", test_split="test",
      image_key="image", label_key="label", num_views=2, crop="none", image_size=32,
      crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), flip=False, eval_crop="none",
      eval_resize=config_dict.placeholder(int), shuffle_buffer=10_000, prefetch=2,
      # Multi-crop (DINO): extra low-resolution crops as batch["local_views"], augmented on
      # device with `config.local_augment` (or `config.augment` when that is absent).
      local_views=0, local_image_size=96, local_crop_scale=(0.05, 0.4)))

  c.eval = ml_collections.ConfigDict(dict(
      batch_size=512,
      # The probes' dataset, when not the training one (a language model trained on unlabelled
      # text is probed on labelled text): its label feature and, if not data.train_split, the
      # split its labelled examples come from. Its test split is data.test_split.
      dataset=config_dict.placeholder(str), label_key="label",
      train_split=config_dict.placeholder(str),
      labels_per_class=(1, 5, 10, 0),  # 0 = all labels
      seeds=3,
      feature_sources=("ssl", "random_init", "raw"),
      protocols=("linear", "knn", "label_propagation", "fewshot"),
      # scikit-learn's C and stopping rule: L-BFGS stops once max |gradient| <= linear_tol.
      linear_c=1.0, linear_max_iter=500, linear_tol=1e-4,
      # "fixed": l2 = 1 / (linear_c * labelled rows); "heldout": chosen from
      # linear_probe.DEFAULT_L2_GRID on a stratified 20% of the labelled rows, then refitted.
      # The embedded recipes keep "fixed", the setting of the README's tables.
      linear_l2="fixed",
      knn_k=20, knn_temperature=0.07,
      fewshot_l2=1.0,  # ridge penalty of the closed-form few-shot classifier
      # Label spreading on scikit-learn's 7-NN graph, run to convergence: scikit-learn's default
      # tol=1e-3 stops while far nodes are still unlabelled (raw digits, 1 label/class: 75.7%
      # at tol=1e-3 vs 82.9% converged). alpha=0.9 is the best of {0.2, 0.9, 0.99} for the raw
      # pixel baseline, so the baseline is not handicapped (raw: 82.9 / 83.8 / 83.0%).
      propagation_neighbors=7, propagation_alpha=0.9, propagation_max_iter=100,
      propagation_tol=1e-6,
      num_pictures=8,  # test images a method's `pictures` draws (eval/<name>.png)
      plots=True,  # eval/feature_map.png (t-SNE) and eval/accuracy_vs_labels.png
      # SimCLR's semi-supervised protocol (ssl_jax/eval/finetune.py): fine-tune the whole
      # network and a linear head on a class-balanced fraction of the labels, from the
      # checkpoint and from the initialisation. SimCLR's 60 / 30 epochs for 1% / 10%, at least
      # min_steps steps; Adam with cosine decay, no weight decay, shifts by up to 1/8 of the
      # side. `fractions=()` turns it off.
      finetune=ml_collections.ConfigDict(dict(
          fractions=(0.01, 0.1), epochs=(60, 30), min_steps=200, batch_size=128, lr=1e-3,
          max_shift=0.125, seeds=1, sources=("ssl", "random_init")))))
  return c


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
  from ssl_jax.data import augment  # pylint: disable=g-import-not-at-top
  _small_cpu_run(c, "digits")
  c.data.update(image_size=8, crop="none", flip=False)
  c.augment = augment.digits_augment()
  return c


def photos_setup(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The embedded colour recipe (`photos`: 32x32 patches of ten photographs, 2 CPU cores).

  Small CNN (32-64-128), batch 256, 1500 steps, AdamW 2e-3 with 50 warm-up steps; random
  resized crops covering 20-100% of a patch with flips, and solo-learn's CIFAR colour
  recipe normalised with the photos statistics. Methods whose target is the colour itself
  (colorization) replace the augmentation with a colour-faithful one.
  """
  from ssl_jax.data import augment  # pylint: disable=g-import-not-at-top
  _small_cpu_run(c, "photos")
  c.data.update(image_size=32, crop="random_resized", crop_scale=(0.2, 1.0), flip=True)
  c.augment = augment.cifar_augment(mean=augment.PHOTOS_MEAN, std=augment.PHOTOS_STD)
  return c


def cifar10_setup(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """solo-learn's CIFAR-10 setting: ResNet-18 with CIFAR stem, batch 256, 1000 epochs,
  10 warm-up epochs, random resized crops of 32 px (scale 0.08-1) with flips."""
  from ssl_jax.data import augment  # pylint: disable=g-import-not-at-top
  c.dataset = "cifar10"
  c.batch_size = 256
  c.total_epochs = 1000
  c.log_every_steps = 100
  c.checkpoint_every_steps = 2000
  c.encoder = ml_collections.ConfigDict(dict(name="resnet", depth=18, cifar_stem=True))
  c.optimizer.update(warmup_epochs=10)
  c.data.update(image_size=32, crop="random_resized", crop_scale=(0.08, 1.0), flip=True)
  c.augment = augment.cifar_augment()
  c.eval.linear_l2 = "heldout"
  c.eval.batch_size = 1024
  return c


def imagenet2012_setup(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """ImageNet-1k: ResNet-50 (bfloat16), 224 px random resized crops with flips, centre-
  cropped 256 -> 224 evaluation, 10 warm-up epochs, whole-ImageNet probes (linear and kNN on
  all labels, label propagation on 1% / 10%). Needs the TFDS dataset prepared by hand."""
  from ssl_jax.data import augment  # pylint: disable=g-import-not-at-top
  c.dataset = "imagenet2012"
  c.data.test_split = "validation"
  c.batch_size = 4096
  c.total_epochs = 1000
  c.log_every_steps = 100
  c.checkpoint_every_steps = 1000
  c.encoder = ml_collections.ConfigDict(dict(name="resnet", depth=50, dtype="bfloat16"))
  c.optimizer.update(name="lars", lr_scaling="linear", warmup_epochs=10)
  c.data.update(image_size=224, crop="random_resized", crop_scale=(0.08, 1.0), flip=True,
                eval_crop="center", eval_resize=256)
  c.augment = augment.simclr_augment(strength=1.0, blur_prob=0.5)
  c.eval.linear_l2 = "heldout"
  c.eval.batch_size = 1024
  c.eval.labels_per_class = (13, 128, 0)
  c.eval.seeds = 1
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


def apply_runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`,runlocal=True`: a tiny smoke run (4 steps, batch 16, one seed, a short fine-tune on
  10% of the labels unless the variant has fine-tuning off) of any variant."""
  c.batch_size = 16
  c.total_steps, c.total_epochs = 4, None
  c.log_every_steps = c.checkpoint_every_steps = 2
  c.optimizer.warmup_steps, c.optimizer.warmup_epochs = 1, None
  c.eval.labels_per_class, c.eval.seeds = (1, 0), 1
  if c.eval.finetune.fractions:  # a variant that turned fine-tuning off keeps it off
    c.eval.finetune.update(fractions=(0.1,), epochs=(30,), min_steps=2, batch_size=16)
  return c


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
  from ssl_jax.data import augment  # pylint: disable=g-import-not-at-top
  setup_variant(c, variant, method)
  channels = len(c.augment.mean)
  mean, std = ((0.0,) * channels, (1.0,) * channels) if unit_pixels else (
      c.augment.mean, c.augment.std)
  c.augment = augment.augment_config(mean=mean, std=std)
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


# Text datasets: (TFDS name, sentence pairs possible, labelled dataset to probe, its train split).
# A real dataset must be prepared first (`tfds build NAME`); `python_docs` builds offline.
TEXT_VARIANTS = {
    "python_docs": ("python_docs/plain", True, "python_docs/labelled", None),
    "lm1b": ("lm1b", False, "imdb_reviews", "train"),
    "wikipedia": ("wikipedia/20230601.en", True, "imdb_reviews", "train"),
    "imdb_reviews": ("imdb_reviews", True, "imdb_reviews", "train"),
}


def text_setup(c: ml_collections.ConfigDict, variant: str, method: str, model_size: str
               ) -> ml_collections.ConfigDict:
  """The text recipes shared by the language objectives (mlm, causal_lm).

  python_docs (offline, 2 CPU cores): the embedded CPython documentation paragraphs, rows of
  64 WordPiece tokens (90% of paragraphs fit), a 4,000-token vocabulary learned on the
  training split, a transformer of BERT-Tiny's shape (2 layers, width 128, 2 heads, MLP 512;
  Turc et al. 2019) without dropout (a short run on a small corpus; dropout's random bits
  also cost a third of a CPU step), batch 64, 2000 steps, AdamW 1e-3 with 100 warm-up steps;
  probed on `python_docs/labelled` (docstrings by package), against a bag of words.
  lm1b / wikipedia / imdb_reviews (prepared TFDS datasets): `model_size` (bert_base or gpt2),
  rows of 128 tokens, a 30,000-token vocabulary learned on the first 200,000 training texts,
  batch 256, AdamW 1e-4 with weight decay 0.01, 10,000 warm-up steps, 1M steps (BERT's
  schedule, Devlin et al. 2019 A.2); probed on imdb_reviews' labelled train and test splits.
  imdb_reviews pre-trains on its 50,000 unlabelled reviews.
  """
  if variant not in TEXT_VARIANTS:
    raise ValueError(f"unknown {method} variant '{variant}': use {', '.join(TEXT_VARIANTS)}")
  dataset, _, probed, probe_split = TEXT_VARIANTS[variant]
  c.dataset = dataset
  c.data.update(modality="text", label_key=None, num_views=1)
  c.data.text_key = "text"
  c.data.sentence_pairs = False
  c.online_probe.enabled = False
  c.eval.update(dataset=probed, train_split=probe_split, feature_sources=(
      "ssl", "random_init", "raw"))
  c.eval.finetune.fractions = ()  # fine-tuning (ssl_jax/eval/finetune.py) is for images
  c.eval.plots = True
  if variant == "python_docs":
    c.data.max_length = 64
    c.tokenizer = ml_collections.ConfigDict(dict(vocab_size=4000, lowercase=True,
                                                 min_frequency=2, train_texts=1_000_000))
    c.transformer = ml_collections.ConfigDict(dict(
        size="tiny", width=128, depth=2, num_heads=2, mlp_dim=512, max_length=64,
        dropout=0.0, dtype="float32"))
    c.batch_size = 64
    c.total_steps = 2000
    c.log_every_steps = 100
    c.checkpoint_every_steps = 500
    c.optimizer.update(name="adamw", lr=1e-3, lr_scaling="none", weight_decay=0.01,
                       warmup_steps=100, grad_clip_norm=1.0)
    c.eval.batch_size = 512
    return c
  c.data.max_length = 128
  c.tokenizer = ml_collections.ConfigDict(dict(vocab_size=30_000, lowercase=True,
                                               min_frequency=2, train_texts=200_000))
  c.transformer = ml_collections.ConfigDict(dict(
      size=model_size, width=None, depth=None, num_heads=None, mlp_dim=None, max_length=None,
      dropout=0.1, dtype="bfloat16"))
  c.batch_size = 256
  c.total_steps = 1_000_000
  c.log_every_steps = 100
  c.checkpoint_every_steps = 5000
  c.optimizer.update(name="adamw", lr=1e-4, lr_scaling="none", weight_decay=0.01,
                     warmup_steps=10_000, grad_clip_norm=1.0)
  c.eval.update(batch_size=1024, linear_l2="heldout", labels_per_class=(1, 10, 100, 0))
  if variant == "imdb_reviews":
    c.data.train_split = "unsupervised"
  return c


def apply_text_runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`,runlocal=True` for text: a tiny transformer, a 500-token vocabulary, 4 steps."""
  apply_runlocal(c)
  c.tokenizer.update(vocab_size=500, train_texts=2000)
  c.transformer.update(size="tiny", width=32, depth=1, num_heads=2, mlp_dim=64,
                       max_length=c.data.max_length, dtype="float32")
  c.eval.plots = False
  return c
