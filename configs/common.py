"""Keys every run shares, and the `name=value,...` config-argument parser.

A config file's `get_config(arg)` starts from `base_config()` and fills in its method's
section; `--config.KEY=VALUE` overrides any key on the command line (and a key that does not
exist is rejected, because the returned config is locked).
"""
import ml_collections
from ml_collections import config_dict

from ssl_jax import collapse


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
  # Devices: mesh axes "name:size" (data, fsdp; one size may be -1, the rest), the batch split
  # over all of them; each state leaf placed by the first (regex over its path, rule) that
  # matches: "replicate" or "fsdp" (largest dimension divisible by the fsdp axis, for leaves
  # of at least fsdp_min_size elements). Without an fsdp axis that is data parallelism.
  c.mesh = "data:-1"
  c.sharding_rules = ((".*", "fsdp"),)
  c.fsdp_min_size = 2**14
  # Every network computes in `precision` ("float32" or "bfloat16"; parameters, optimizer
  # state, losses and the probes stay float32) and, with remat="blocks", recomputes its
  # blocks' activations in the backward pass ("none" keeps them): `ssl_jax/models/policy.py`.
  c.precision = "float32"
  c.remat = "none"
  # Gradient accumulation: the global batch in this many microbatches, one update per step.
  c.grad_accum_steps = 1

  c.optimizer = ml_collections.ConfigDict(dict(
      name="lars", lr=0.3, lr_scaling="linear", weight_decay=1e-6, momentum=0.9,
      trust_coefficient=0.001, b1=0.9, b2=0.999, grad_clip_norm=0.0,
      warmup_steps=config_dict.placeholder(int), warmup_epochs=config_dict.placeholder(float),
      # Cosine horizon; unset = the run's total. Fix it to extend a run along the same schedule.
      decay_steps=config_dict.placeholder(int), decay_epochs=config_dict.placeholder(float),
      end_lr_factor=0.0))

  # Linear classifier on stop_gradient(features), trained alongside (BYOL's online probe).
  c.online_probe = ml_collections.ConfigDict(dict(enabled=True, lr=1e-3))

  # The collapse monitor (`ssl_jax/collapse.py`): a log step is flagged when the effective
  # rank falls below rank_fraction of its highest value so far (dimensional collapse), or the
  # embedding std below std_fraction of its highest (complete collapse); stop: end training
  # there with a one-line error instead of a warning.
  c.collapse = ml_collections.ConfigDict(collapse.DEFAULTS)

  # Published targets of the recipe (`ssl_jax/expected.py`): report cells with the accuracy
  # (%) a paper or model zoo reached, its source and the compute it assumes; or, with no
  # targets, a note saying why there is no published number.
  c.expected = ml_collections.ConfigDict(dict(
      targets=(), note="No published number is stated for this configuration."))

  c.data = ml_collections.ConfigDict(dict(
      # "image", "text", "sequence", "video" or "image_text" (ssl_jax/data/inputs.py picks
      # the pipeline)
      modality="image",
      data_dir=config_dict.placeholder(str), train_split="train", test_split="test",
      image_key="image", label_key="label", num_views=2, crop="none", image_size=32,
      crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), flip=False, eval_crop="none",
      eval_resize=config_dict.placeholder(int), shuffle_buffer=10_000, prefetch=2,
      # Where the per-channel mean and std that normalise images come from: "augment" (the
      # recipe's config.augment.mean / std) or "dataset" (the training split's own, stored when
      # a folder of images, --config.dataset=folder:PATH, was prepared).
      statistics="augment",
      # Multi-crop (DINO): extra low-resolution crops as batch["local_views"], augmented on
      # device with `config.local_augment` (or `config.augment` when that is absent).
      local_views=0, local_image_size=96, local_crop_scale=(0.05, 0.4)))

  # What every evaluation shares: the dataset the probes read, when not the training one (a
  # language model trained on unlabelled text is probed on labelled text): its label feature
  # ("label" when unset; without eval.dataset, another label of the training dataset), the split its labelled examples come from when not data.train_split, and its modality when
  # not data.modality (its test split is data.test_split); the batch size of feature
  # extraction; and the feature sources compared side by side.
  c.eval = ml_collections.ConfigDict(dict(
      batch_size=512,
      dataset=config_dict.placeholder(str), label_key=config_dict.placeholder(str),
      train_split=config_dict.placeholder(str), modality="",
      feature_sources=("ssl", "random_init", "raw"),
      # The order the evaluations run in (their rows' order in the report; plots come after
      # the rows they draw); entries of config.evals not named here run after these, by name.
      run_order=("probes", "finetune", "zero_shot", "held_out", "retrieval", "plots",
                 "pictures")))

  # The evaluations (ssl_jax/evaluators/<type>.py), run after training in eval.run_order. Each
  # applies only where it has something to measure (zero-shot and retrieval for a method with
  # a joint image–text embedding, held-out measures for a method with any, pictures for a
  # method that draws).
  c.evals = ml_collections.ConfigDict()
  c.evals.probes = ml_collections.ConfigDict(dict(
      type="probes",
      protocols=("linear", "knn", "label_propagation", "fewshot"),
      labels_per_class=(1, 5, 10, 0),  # 0 = all labels
      seeds=3,
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
      propagation_tol=1e-6))
  # SimCLR's semi-supervised protocol (ssl_jax/eval/finetune.py): fine-tune the whole network
  # and a linear head on a class-balanced fraction of the labels, from the checkpoint and from
  # the initialisation. SimCLR's 60 / 30 epochs for 1% / 10%, at least min_steps steps; Adam
  # with cosine decay, no weight decay, shifts by up to 1/8 of the side. `fractions=()` turns
  # it off.
  c.evals.finetune = ml_collections.ConfigDict(dict(
      type="finetune", fractions=(0.01, 0.1), epochs=(60, 30), min_steps=200, batch_size=128,
      lr=1e-3, max_shift=0.125, seeds=1, sources=("ssl", "random_init")))
  # CLIP's zero-shot classification: prompt templates filled with the class names
  # (`class_names`, or the dataset's label names when ()); no prompts = off.
  c.evals.zero_shot = ml_collections.ConfigDict(dict(type="zero_shot", prompts=(),
                                                     class_names=()))
  c.evals.held_out = ml_collections.ConfigDict(dict(type="held_out"))
  c.evals.retrieval = ml_collections.ConfigDict(dict(type="retrieval"))
  # eval/feature_map.png (t-SNE) and eval/accuracy_vs_labels.png
  c.evals.plots = ml_collections.ConfigDict(dict(type="plots", enabled=True))
  # test examples a method's `pictures` draws (eval/<name>.png)
  c.evals.pictures = ml_collections.ConfigDict(dict(type="pictures", num_pictures=8))
  # One-class anomaly detection (ssl_jax/evaluators/anomaly.py), off unless enabled: each
  # class in turn normal, test rows scored by their mean cosine distance to the k nearest
  # normal training rows (deep kNN, Bergman et al. 2020: k=2), AUROC averaged over classes;
  # methods that reconstruct also score by reconstruction error (`anomaly_reconstruction`).
  c.evals.anomaly = ml_collections.ConfigDict(dict(type="anomaly", enabled=False, k=2))
  # The linear segmentation probe on dense features (ssl_jax/evaluators/segmentation.py), off
  # unless enabled: per-pixel labels from the probe dataset's images ("ink" masks, mask_key
  # "") or a TFDS dataset's label images (e.g. dataset="scene_parse150",
  # mask_key="annotation", num_classes=151, ignore_label=0).
  c.evals.segmentation = ml_collections.ConfigDict(dict(
      type="segmentation", enabled=False, dataset="", train_split="", test_split="",
      image_key="image", mask_key="", mask_channel=0, ink_threshold=0.25, num_classes=0,
      ignore_label=config_dict.placeholder(int), image_size=0, max_train_images=1000,
      max_test_images=500, epochs=20, lr=0.01, batch_size=64, num_pictures=6))
  return c


# solo-learn's CIFAR-10 model zoo reports the accuracy of a linear classifier trained online
# alongside pre-training; the nearest cell here is the offline linear probe on all labels.
SOLO_LEARN_CIFAR = ("solo-learn model zoo, CIFAR-10, online linear probe",
                    "ResNet-18 (CIFAR stem), 1000 epochs, batch 256")


def target(cell: str, accuracy: float, source: str, compute: str) -> dict:
  """One published target for `config.expected.targets` (`ssl_jax/expected.py`)."""
  return dict(cell=cell, accuracy=accuracy, source=source, compute=compute)


# Why a variant on an embedded dataset has no published target (`config.expected.note`).
DIGITS_NOTE = ("The embedded 8x8 UCI digits are this codebase's offline stand-in; no paper "
               "reports on them. The README's measured tables are the reference.")
PHOTOS_NOTE = ("The embedded photos (32x32 patches of ten photographs) are this codebase's "
               "offline stand-in; no paper reports on them.")


def set_expected(c: ml_collections.ConfigDict, targets: tuple[dict, ...] | None,
                 note: str | None = None) -> None:
  """The variant's published targets, when it has any; else `note`, why it has none (without
  a note the default one stays)."""
  if targets:
    c.expected.targets = tuple(targets)
    c.expected.note = ""
  elif note:
    c.expected.note = note


def apply_runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`,runlocal=True`: a tiny smoke run (4 steps, batch 16, float32, one seed, a short
  fine-tune on 10% of the labels unless the variant has fine-tuning off) of any variant."""
  c.batch_size = 16
  c.total_steps, c.total_epochs = 4, None
  c.precision = "float32"  # a CPU smoke run; --config.precision=bfloat16 tries the other
  c.expected.targets = ()  # a smoke run reaches no published number
  c.expected.note = "A runlocal smoke run: no published number applies."
  c.log_every_steps = c.checkpoint_every_steps = 2
  c.optimizer.warmup_steps, c.optimizer.warmup_epochs = 1, None
  c.evals.probes.labels_per_class, c.evals.probes.seeds = (1, 0), 1
  if c.evals.finetune.fractions:  # a variant that turned fine-tuning off keeps it off
    c.evals.finetune.update(fractions=(0.1,), epochs=(30,), min_steps=2, batch_size=16)
  return c
