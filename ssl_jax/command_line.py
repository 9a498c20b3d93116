"""Command-line parsing shared by the entry points that take `--config` (`ssl_jax.main`,
`ssl_jax.sweep`): absl and config_flags errors become one line and exit code 2."""
import sys

from absl import app, flags

from ssl_jax.errors import UserError


def check_required(argv: list[str], config, workdir: str | None) -> None:
  """No positional arguments (a usage error), and --config and --workdir given (UserErrors)."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if config is None:
    raise UserError("--config is required, e.g. --config=configs/simclr.py:digits")
  if not workdir:
    raise UserError("--workdir is required")


def _innermost_message(error: BaseException) -> str:
  """The last line of the deepest exception in the chain (config_flags wraps its errors)."""
  while error.__cause__ is not None or error.__context__ is not None:
    error = error.__cause__ or error.__context__
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return lines[-1] if lines else type(error).__name__


def _config_error(error: BaseException, argv: list[str]) -> str:
  message = _innermost_message(error)
  if isinstance(error, (KeyError, AttributeError)) or "KeyError" in repr(error.__context__):
    key = message.strip("'\"")
    for arg in argv:
      path = arg.split("=", 1)[0]
      if path.startswith("--config.") and key in path.split("."):
        return f"unknown config key in {path}: the config has no '{key}'"
    return f"unknown config key '{key}'"
  return f"cannot load config: {message}"


def parse_flags(argv: list[str], config_flag) -> list[str]:
  """absl flag parsing, with config-file and override errors (of `config_flag`, a
  `config_flags.DEFINE_config_file` holder) turned into one-line errors, exit code 2."""
  try:
    remaining = flags.FLAGS(argv)
    if config_flag.value is not None:
      config_flag.value.keys()  # config_flags defers a failed load until the config is used.
    return remaining
  except flags.Error as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    print(f"error: {lines[0] if len(lines) == 1 else lines[0] + ' ' + lines[-1]}",
          file=sys.stderr)
  except Exception as e:  # pylint: disable=broad-except  (config_flags raises plain errors)
    print(f"error: {_config_error(e, argv)}", file=sys.stderr)
  sys.exit(2)
