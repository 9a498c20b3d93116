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
      data_dir=config_dict.placeholder(str), train_split="train", test_split="test",
      image_key="image", label_key="label", num_views=2, crop="none", image_size=32,
      crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), flip=False, eval_crop="none",
      eval_resize=config_dict.placeholder(int), shuffle_buffer=10_000, prefetch=2))

  c.eval = ml_collections.ConfigDict(dict(
      batch_size=512,
      labels_per_class=(1, 5, 10, 0),  # 0 = all labels
      seeds=3,
      feature_sources=("ssl", "random_init", "raw"),
      protocols=("linear", "knn", "label_propagation"),
      linear_c=1.0, linear_max_iter=500,  # scikit-learn C
      knn_k=20, knn_temperature=0.07,
      # Label spreading on scikit-learn's 7-NN graph, run to convergence: scikit-learn's default
      # tol=1e-3 stops while far nodes are still unlabelled (raw digits, 1 label/class: 75.7%
      # at tol=1e-3 vs 82.9% converged). alpha=0.9 is the best of {0.2, 0.9, 0.99} for the raw
      # pixel baseline, so the baseline is not handicapped (raw: 82.9 / 83.8 / 83.0%).
      propagation_neighbors=7, propagation_alpha=0.9, propagation_max_iter=100,
      propagation_tol=1e-6))
  return c
