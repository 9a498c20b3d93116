"""Config checks, durations, and the resolved config saved with a run.

Checks run before any training so that a bad config fails in a second, with one line naming
the cause. Durations follow big_vision: `*_steps` or `*_epochs`, converted to steps once here.
"""
import json
import math
import os
import tempfile
from typing import NamedTuple

import ml_collections

from ssl_jax.errors import UserError

# Keys that may differ when a run resumes in the same workdir (how long, how often, what to
# evaluate); any other difference means the workdir holds a different experiment.
RESUMABLE_KEYS = ("total_steps", "total_epochs", "evaluate_at_end", "log_every_steps",
                  "checkpoint_every_steps", "keep_checkpoints", "eval", "evals", "data.data_dir",
                  "data.prefetch", "mesh", "sharding_rules", "fsdp_min_size", "precision",
                  "remat", "grad_accum_steps", "expected", "collapse")


class TrainingLength(NamedTuple):
  """A run's length in optimizer steps: what the trainer and progress-following schedules need.

  `schedule_steps` is the horizon of every schedule that follows training progress (the
  learning-rate cosine, EMA momentum, teacher temperature): `optimizer.decay_*` when set, so a
  run can be extended along the same schedule, else the run's total.
  """
  steps_per_epoch: int
  total_steps: int
  schedule_steps: int


def training_length(config, num_train_examples: int) -> TrainingLength:
  """Resolves `total_*` and `optimizer.decay_*` for `num_train_examples` training examples."""
  steps_per_epoch = num_train_examples // config.batch_size
  if steps_per_epoch == 0:
    raise UserError(
        f"batch_size {config.batch_size} is larger than the {num_train_examples} "
        f"training examples of '{config.dataset}'")
  total = to_steps(config, "total", steps_per_epoch)
  schedule = to_steps(config.optimizer, "decay", steps_per_epoch, default=total)
  return TrainingLength(steps_per_epoch, total, schedule)


def to_steps(section, prefix: str, steps_per_epoch: int, default: int | None = None) -> int:
  """Reads `<prefix>_steps` or `<prefix>_epochs` from `section`: exactly one may be set."""
  steps = section.get(f"{prefix}_steps")
  epochs = section.get(f"{prefix}_epochs")
  if steps is not None and epochs is not None:
    raise UserError(f"set only one of {prefix}_steps ({steps}) and {prefix}_epochs ({epochs}); "
                    f"clear the other with --config.{prefix}_epochs=None or _steps=None")
  if steps is not None:
    if steps < 0:
      raise UserError(f"{prefix}_steps must be >= 0, got {steps}")
    return int(steps)
  if epochs is not None:
    if epochs < 0:
      raise UserError(f"{prefix}_epochs must be >= 0, got {epochs}")
    return int(math.ceil(epochs * steps_per_epoch))
  if default is None:
    raise UserError(f"set {prefix}_steps or {prefix}_epochs")
  return default


def check_number(name: str, value, *, minimum: float | None = None,
                 maximum: float | None = None, above: float | None = None,
                 below: float | None = None, integer: bool = False) -> None:
  """A one-line UserError naming the config key `name`, its allowed range and its value, when
  `value` is not a number (an integer when `integer`) in [minimum, maximum] and in
  (above, below)."""
  bounds = [f">= {minimum}" if minimum is not None else "",
            f"> {above}" if above is not None else "",
            f"<= {maximum}" if maximum is not None else "",
            f"< {below}" if below is not None else ""]
  wanted = ("an integer" if integer else "a number") + "".join(
      f" {bound}" if i == 0 else f" and {bound}" for i, bound in enumerate(b for b in bounds if b))
  is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
  if (not is_number or (integer and not isinstance(value, int))
      or (minimum is not None and value < minimum) or (maximum is not None and value > maximum)
      or (above is not None and value <= above) or (below is not None and value >= below)
      or value != value):  # NaN
    raise UserError(f"{name} must be {wanted}, got {value!r}")


def check_choice(name: str, value, choices: tuple) -> None:
  """A one-line UserError when the config key `name` is not one of `choices`."""
  if value not in choices:
    raise UserError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")


def check_batch_size(batch_size: int, device_count: int, process_count: int) -> None:
  if not isinstance(batch_size, int) or batch_size <= 0:
    raise UserError(f"batch_size must be a positive integer, got {batch_size}")
  if batch_size % device_count:
    raise UserError(f"batch_size {batch_size} is not divisible by the device count "
                    f"{device_count}")
  if batch_size % process_count:
    raise UserError(f"batch_size {batch_size} is not divisible by the process count "
                    f"{process_count}")


def check_workdir_writable(workdir: str) -> None:
  """Creates `workdir` and proves a file can be written there, before training starts."""
  if not workdir:
    raise UserError("--workdir is required")
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write_test"):
      pass
  except OSError as e:
    raise UserError(f"workdir '{workdir}' is not writable: {e.strerror or e}") from None


def _flatten(tree: dict, prefix: str = "") -> dict:
  flat = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      flat.update(_flatten(value, name + "."))
    else:
      flat[name] = value.tolist() if hasattr(value, "tolist") else value
  return flat


def _resumable(key: str) -> bool:
  return any(key == k or key.startswith(k + ".") for k in RESUMABLE_KEYS)


def config_path(workdir: str) -> str:
  return os.path.join(workdir, "config.json")


def save_or_check(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Saves the resolved config; refuses a workdir that holds a different experiment."""
  path = config_path(workdir)
  current = json.loads(config.to_json_best_effort())
  if os.path.exists(path):
    with open(path) as f:
      previous = _flatten(json.load(f))
    for key, value in _flatten(current).items():
      if not _resumable(key) and previous.get(key, value) != value:
        raise UserError(f"workdir '{workdir}' holds a run with {key}={previous[key]!r}, not "
                        f"{value!r}; use a new --workdir to start a different run")
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(current, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def load_saved(workdir: str) -> ml_collections.ConfigDict:
  """The config a run in `workdir` was trained with."""
  path = config_path(workdir)
  if not os.path.exists(path):
    raise UserError(f"no run in workdir '{workdir}': {path} does not exist")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))
