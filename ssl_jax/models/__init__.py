"""Flax (linen) networks, found by module name.

`config.encoder.name` names a module here (`resnet`, `convnet`, ...) whose `Encoder` class is
built with the remaining `config.encoder` fields as keyword arguments; adding a network is
adding a module, with no table to edit.
"""
import inspect
from typing import Any

import flax.linen as nn

from ssl_jax.components import import_component
from ssl_jax.errors import UserError


_STOCHASTIC_OPTIONS = ("dropout", "drop_path")


def build_encoder(encoder_config: Any, deterministic: bool = False) -> nn.Module:
  """Builds `ssl_jax.models.<name>.Encoder(**options)` from a config section.

  `deterministic=True` zeroes the encoder's dropout and drop-path rates: the EMA target or
  teacher copy of a network runs without them (DINO builds its teacher that way), with the
  same parameters.
  """
  options = dict(encoder_config)
  if deterministic:
    options.update({key: 0.0 for key in _STOCHASTIC_OPTIONS if key in options})
  name = options.pop("name")
  module = import_component("ssl_jax.models", name, "encoder")
  known = set(inspect.signature(module.Encoder).parameters) - {"parent", "name"}
  unknown = sorted(set(options) - known)
  if unknown:
    raise UserError(f"encoder '{name}' has no option {unknown[0]!r}; it takes {sorted(known)}")
  return module.Encoder(**options)


def apply_in_train_mode(module: nn.Module, params: Any, batch_stats: Any, *args,
                        rng: Any = None, **kwargs):
  """`module(*args, train=True)` with BatchNorm on batch statistics; returns (out, batch_stats).

  The returned statistics are the updated running averages; a network without BatchNorm (a
  ViT) has an empty `batch_stats` and gets it back unchanged. `rng` drives dropout and drop
  path, where the network has them.
  """
  if rng is not None:
    kwargs["rngs"] = {"dropout": rng}
  out, updated = module.apply({"params": params, "batch_stats": batch_stats}, *args,
                              train=True, mutable=["batch_stats"], **kwargs)
  return out, updated.get("batch_stats", batch_stats)


def apply_in_eval_mode(module: nn.Module, params: Any, batch_stats: Any, *args, **kwargs):
  """`module(*args, train=False)`: BatchNorm uses its running averages."""
  return module.apply({"params": params, "batch_stats": batch_stats}, *args, train=False,
                      **kwargs)


def init_variables(module: nn.Module, rng, *args, **kwargs) -> tuple[Any, Any]:
  """(params, batch_stats) of a freshly initialised module; batch_stats may be empty."""
  variables = module.init(rng, *args, train=False, **kwargs)
  return variables["params"], variables.get("batch_stats", {})
