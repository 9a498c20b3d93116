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


def build_encoder(encoder_config: Any) -> nn.Module:
  """Builds `ssl_jax.models.<name>.Encoder(**options)` from a config section."""
  options = dict(encoder_config)
  name = options.pop("name")
  module = import_component("ssl_jax.models", name, "encoder")
  known = set(inspect.signature(module.Encoder).parameters) - {"parent", "name"}
  unknown = sorted(set(options) - known)
  if unknown:
    raise UserError(f"encoder '{name}' has no option {unknown[0]!r}; it takes {sorted(known)}")
  return module.Encoder(**options)
