"""Finding a component (a method, an encoder) by module name, with no table to edit."""
import importlib
import types

from ssl_jax.errors import UserError


def import_component(package: str, name: str, kind: str) -> types.ModuleType:
  """Imports `<package>.<name>`; a missing module is a one-line UserError naming the `kind`."""
  module_name = f"{package}.{name}"
  try:
    return importlib.import_module(module_name)
  except ModuleNotFoundError as e:
    if e.name != module_name:  # the module exists but one of its own imports is missing
      raise
    path = module_name.replace(".", "/")
    raise UserError(f"unknown {kind} '{name}': no module {path}.py") from None
