"""Every variant of every config states its published target as data (`config.expected`): valid
targets, or a note that says why there is none (not the default one); `,runlocal=True` claims
none. Config construction only, no training."""
import glob
import importlib
import os

import pytest

from configs import clip
from configs.common import base_config
from configs.recipes.image import VARIANT_SETUPS
from configs.recipes.text import TEXT_VARIANTS
from ssl_jax import expected

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = sorted(os.path.basename(path)[:-3] for path in glob.glob(os.path.join(ROOT, "configs",
                                                                               "*.py"))
                 if os.path.basename(path) != "common.py")
DEFAULT_NOTE = base_config().expected.note


def _candidate_variants() -> set[str]:
  """Every variant name some config knows: the shared dataset recipes and each module's own."""
  names = set(VARIANT_SETUPS) | set(TEXT_VARIANTS) | set(clip.VARIANTS)
  for name in MODULES:
    module = importlib.import_module(f"configs.{name}")
    for table in ("NOTES", "EXPECTED"):
      for key in getattr(module, table, {}):
        names.add(key[0] if isinstance(key, tuple) else key)
  return names


def _variants(module) -> list[str]:
  """The config arguments `module.get_config` accepts (MoCo also with version=3)."""
  found = []
  for variant in sorted(_candidate_variants()):
    for extra in ("", ",version=3") if module.__name__ == "configs.moco" else ("",):
      try:
        module.get_config(variant + extra)
      except ValueError:  # not a variant of this config
        continue
      found.append(variant + extra)
  return found


@pytest.mark.parametrize("name", MODULES)
def test_every_variant_states_a_target_or_why_not(name):
  module = importlib.import_module(f"configs.{name}")
  variants = _variants(module)
  assert variants, f"{name}: no variant found"
  for arg in variants:
    config = module.get_config(arg)
    expected.check(config)
    targets, note = expected.targets(config), config.expected.note
    if targets:
      assert note == "", f"{name}:{arg}: targets and a note"
      for target in targets:
        assert target["source"] and target["compute"], f"{name}:{arg}: {target}"
    else:
      assert note and note != DEFAULT_NOTE, f"{name}:{arg} says neither a target nor why not"
    smoke = module.get_config(arg + ",runlocal=True")
    assert expected.targets(smoke) == () and "runlocal" in smoke.expected.note, f"{name}:{arg}"
