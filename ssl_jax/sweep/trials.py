"""From a base config and a grid of settings to the sweep's trials: their names, checked
configs and directories, and the `sweep.json` that ties a workdir to one sweep.

Each trial is an ordinary run (`ssl_jax.main`) in `WORKDIR/<name>/`, where the name spells
its setting (`temperature=0.1,batch_size=128,seed=0`), so that a trial can be resumed,
re-evaluated or inspected on its own.
"""
import ast
import dataclasses
import glob
import importlib.util
import json
import os
import re
from typing import Any

import ml_collections

from ssl_jax.errors import UserError
from ssl_jax.sweep import Setting, product, sweep

SWEEP_FILE = "sweep.json"
# The setting key that names a trial's config file ("configs/byol.py:digits") when the config
# itself is swept (`--configs`, `experiments/compare_methods.py`).
CONFIG = "config"


@dataclasses.dataclass(frozen=True)
class Trial:
  name: str
  setting: Setting
  config: ml_collections.ConfigDict

  def workdir(self, sweep_dir: str) -> str:
    return os.path.join(sweep_dir, self.name)


def _split_top_level(text: str) -> list[str]:
  """'0.1,(8, 16),"a,b"' -> ['0.1', '(8, 16)', '"a,b"']: commas outside brackets and quotes."""
  parts, depth, quote, current = [], 0, None, []
  for char in text:
    if quote:
      quote = None if char == quote else quote
    elif char in "'\"":
      quote = char
    elif char in "([{":
      depth += 1
    elif char in ")]}":
      depth -= 1
    elif char == "," and depth == 0:
      parts.append("".join(current))
      current = []
      continue
    current.append(char)
  parts.append("".join(current))
  return [part.strip() for part in parts]


def literal(text: str) -> Any:
  """A Python literal, or the text itself (so `name=vit,resnet` needs no quotes)."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def parse_flag(text: str) -> list[Setting]:
  """`--sweep=simclr.temperature=0.1,0.2` -> [{"simclr.temperature": 0.1}, {...: 0.2}]."""
  key, equals, values = text.partition("=")
  key = key.strip()
  if not equals or not key:
    raise UserError(f"--sweep={text}: write KEY=VALUE,VALUE,... (e.g. "
                    f"--sweep=simclr.temperature=0.1,0.2)")
  items = [item for item in _split_top_level(values) if item]
  if not items:
    raise UserError(f"--sweep={text}: the list of values for {key} is empty")
  return sweep(key, [literal(item) for item in items])


def _config_module(spec: str):
  """The config module of `spec` ('configs/simclr.py:digits') and its argument."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise UserError(f"config file {path} does not exist")
  module_spec = importlib.util.spec_from_file_location("ssl_jax_sweep_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module, arg or None


def load_config(spec: str) -> ml_collections.ConfigDict:
  """`get_config(arg)` of the config module `spec` ('configs/simclr.py:digits')."""
  module, arg = _config_module(spec)
  if not hasattr(module, "get_config"):
    raise UserError(f"{spec}: the module has no get_config")
  try:
    return module.get_config(arg)
  except (ValueError, KeyError) as e:  # an unknown variant or config argument
    raise UserError(f"{spec}: {e}") from None


def load_get_sweep(spec: str):
  """The `get_sweep(arg)` of the config module `spec` as a function of no argument, or None
  when the module has none."""
  module, arg = _config_module(spec)
  get_sweep = getattr(module, "get_sweep", None)
  return None if get_sweep is None else (lambda: get_sweep(arg))


def expand_configs(patterns: list[str]) -> tuple[list[str], dict[str, str]]:
  """`configs/*.py:cifar10` -> the specs of the matching files that have that variant, in
  order, and {spec: why} of the matching files that do not (no get_config, no such
  variant)."""
  specs, skipped = [], {}
  for pattern in patterns:
    path, colon, arg = pattern.partition(":")
    paths = sorted(glob.glob(path)) if any(c in path for c in "*?[") else [path]
    if not paths:
      raise UserError(f"--configs={pattern}: no config file matches")
    for match in paths:
      spec = f"{match}{colon}{arg}"
      try:
        load_config(spec)
      except UserError as e:
        if len(paths) == 1:
          raise
        skipped[spec] = str(e)
        continue
      specs.append(spec)
  return specs, skipped


def grid(flag_settings: list[list[Setting]], config_sweep: list[Setting] | None,
         seeds: int | None, base_seed: int) -> list[Setting]:
  """The settings to run: the product of the `--sweep` flags, or else the config's
  `get_sweep`, or else the base config alone; times `seeds` training seeds (base_seed,
  base_seed + 1, ...) when given."""
  settings = product(flag_settings) if flag_settings else (config_sweep or [{}])
  if seeds is not None:
    if seeds < 1:
      raise UserError(f"--seeds must be >= 1, got {seeds}")
    if any("seed" in setting for setting in settings):
      raise UserError("--seeds cannot be combined with a sweep that sets seed itself")
    settings = product([settings, sweep("seed", range(base_seed, base_seed + seeds))])
  names = [sorted(setting) for setting in settings]
  if any(name != names[0] for name in names):
    raise UserError("every setting of a sweep must set the same keys")
  return settings


def _format(value: Any) -> str:
  if isinstance(value, str) and ".py:" in value:  # a config spec: configs/moco.py:digits,version=3
    stem, _, arg = os.path.basename(value).partition(".py:")
    return f"{stem}-{arg}".replace(",", "+")
  if isinstance(value, (tuple, list)):
    return "-".join(_format(v) for v in value) or "none"
  return str(value)


def trial_name(setting: Setting) -> str:
  """`temperature=0.1,batch_size=128,seed=0`: the last part of each key (the whole key when
  two keys end alike), the value, characters safe in a path."""
  last = [key.rsplit(".", 1)[-1] for key in setting]
  parts = []
  for key, short in zip(setting, last):
    label = short if last.count(short) == 1 else key
    parts.append(_format(setting[key]) if key == CONFIG else f"{label}={_format(setting[key])}")
  name = re.sub(r"[^A-Za-z0-9._=,+-]", "-", ",".join(parts)) or "base"
  return name


def apply(config: ml_collections.ConfigDict, setting: Setting) -> ml_collections.ConfigDict:
  """A copy of `config` with `setting` applied (all but its CONFIG key); a key the config
  lacks or a value of the wrong type is a one-line UserError."""
  trial = config.copy_and_resolve_references()
  for key, value in setting.items():
    if key == CONFIG:
      continue
    *parents, last = key.split(".")
    section = trial
    for depth, name in enumerate(parents):
      if not isinstance(section, ml_collections.ConfigDict) or name not in section:
        raise UserError(f"sweep key {key}: the config has no "
                        f"'{'.'.join(parents[:depth + 1])}'")
      section = section[name]
    if not isinstance(section, ml_collections.ConfigDict) or last not in section:
      raise UserError(f"sweep key {key}: the config has no '{key}'")
    current = section[last]
    if isinstance(value, list):
      value = tuple(value)
    try:
      section[last] = value
    except (TypeError, ValueError) as e:
      raise UserError(f"sweep key {key}: {value!r} does not fit the config's "
                      f"{type(current).__name__} value {current!r}") from e
  trial.lock()
  return trial


def trials(config: ml_collections.ConfigDict | None, settings: list[Setting],
           overrides: Setting | None = None) -> list[Trial]:
  """One `Trial` per setting, with its config: `config` with the setting applied, or, for a
  setting with a CONFIG key (the config is a swept axis), that spec's config with the
  command line's `overrides` and then the setting applied. Names must be distinct."""
  def config_of(setting):
    if CONFIG not in setting:
      return apply(config, setting)
    return apply(apply(load_config(setting[CONFIG]), overrides or {}), setting)
  made = [Trial(trial_name(setting), setting, config_of(setting)) for setting in settings]
  names = [trial.name for trial in made]
  if len(set(names)) != len(names):
    raise UserError("two settings of the sweep give the same trial name; the values must "
                    "differ as text")
  return made


def record(spec: str, overrides: dict[str, Any], settings: list[Setting]) -> dict:
  """What `sweep.json` holds: the config spec, the base overrides, the grid, the trials."""
  return {"config": spec, "overrides": {k: repr(v) for k, v in sorted(overrides.items())},
          "grid": [{k: repr(v) for k, v in s.items()} for s in settings],
          "trials": [trial_name(s) for s in settings]}


def read_record(sweep_dir: str) -> dict | None:
  path = os.path.join(sweep_dir, SWEEP_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def settings_of(saved: dict) -> list[Setting]:
  """The grid a `sweep.json` holds, as settings."""
  return [{k: ast.literal_eval(v) for k, v in s.items()} for s in saved["grid"]]


def save_or_check(sweep_dir: str, current: dict) -> None:
  """Writes `sweep.json`, or checks that the workdir's is this sweep's (one line when not)."""
  saved = read_record(sweep_dir)
  if saved is None:
    os.makedirs(sweep_dir, exist_ok=True)
    path = os.path.join(sweep_dir, SWEEP_FILE)
    with open(path + ".tmp", "w") as f:
      json.dump(current, f, indent=2)
    os.replace(path + ".tmp", path)
    return
  for field, what in (("config", "config"), ("overrides", "--config overrides"),
                      ("trials", "trials")):
    if saved[field] != current[field]:
      raise UserError(f"{sweep_dir} holds another sweep (its {what} differ: "
                      f"{_summary(saved, field)} there, {_summary(current, field)} here); "
                      "rerun it as it was or choose a new --workdir")


def _summary(record_: dict, field: str) -> str:
  value = record_[field]
  if field == "trials":
    return f"{len(value)} trials ({', '.join(value[:2])}{', ...' if len(value) > 2 else ''})"
  return repr(value)
