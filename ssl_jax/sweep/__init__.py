"""Sweeps: a grid of config overrides run as ordinary trials, and their results with error
bars (`python -m ssl_jax.sweep`, see `__main__.py`).

A config module may carry its sweep next to its config, as big_vision's `get_hyper` does:

    from ssl_jax import sweep as hyper

    def get_sweep(arg):
      return hyper.product([hyper.sweep("simclr.temperature", [0.1, 0.2, 0.5]),
                            hyper.sweep("seed", [0, 1])])

A sweep is a list of settings, each a {dotted config key: value} dict; `product` and `zip_`
combine lists of them. The command-line form `--sweep=KEY=V1,V2 ...` is the product of its
flags, and `--seeds=N` multiplies either by N training seeds.
"""
import itertools
from typing import Any, Iterable

from ssl_jax.errors import UserError

Setting = dict[str, Any]


def sweep(key: str, values: Iterable[Any]) -> list[Setting]:
  """One setting per value of the dotted config key `key`."""
  values = list(values)
  if not values:
    raise UserError(f"the sweep over {key} has no values")
  return [{key: value} for value in values]


def product(sweeps: Iterable[list[Setting]]) -> list[Setting]:
  """Every combination of one setting from each sweep (the first varies slowest)."""
  combined = [{}]
  for settings in sweeps:
    combined = [{**left, **right} for left, right in itertools.product(combined, settings)]
  return combined


def zip_(sweeps: Iterable[list[Setting]]) -> list[Setting]:
  """The i-th settings of all sweeps together (paired values); the sweeps must be as long."""
  sweeps = list(sweeps)
  lengths = {len(settings) for settings in sweeps}
  if len(lengths) > 1:
    raise UserError(f"zipped sweeps must be as long as each other, got lengths "
                    f"{sorted(lengths)}")
  return [dict(item for setting in row for item in setting.items()) for row in zip(*sweeps)]
