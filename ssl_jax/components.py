"""Finding a component (a method, a modality, an evaluator, an encoder) by module name, with no
table to edit."""
import importlib
import pkgutil
import types

from ssl_jax.errors import UserError


def available(package: str) -> list[str]:
  """The component modules of `package` (its public submodules), sorted."""
  module = importlib.import_module(package)
  return sorted(info.name for info in pkgutil.iter_modules(module.__path__)
                if not info.name.startswith("_"))


def import_component(package: str, name: str, kind: str) -> types.ModuleType:
  """Imports `<package>.<name>`, or `name` itself when it is a dotted module path (a component
  that lives in the user's own code); a missing module is a one-line UserError naming the
  `kind` and the components there are."""
  if not isinstance(name, str) or not name:
    raise UserError(f"the {kind} must be named, one of {', '.join(available(package))}; "
                    f"got {name!r}")
  module_name = name if "." in name else f"{package}.{name}"
  try:
    return importlib.import_module(module_name)
  except ModuleNotFoundError as e:
    if e.name != module_name and not module_name.startswith(f"{e.name}."):
      raise  # the module exists but one of its own imports is missing
    path = module_name.replace(".", "/")
    raise UserError(f"unknown {kind} '{name}': no module {path}.py (the {kind}s are "
                    f"{', '.join(available(package))}, or a dotted module path)") from None
