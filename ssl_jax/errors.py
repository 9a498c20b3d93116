"""User-facing errors, and how a command line reports them.

A `UserError` is a problem with what the user asked for (a config key, a dataset name, a
workdir), not a bug. `ssl_jax.main` and `ssl_jax.evaluate` print its message as one line and
exit non-zero without a traceback; everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
  """A bad config, dataset, path or checkpoint; the message names the cause in one line."""


class TrainingDivergedError(UserError):
  """The loss became NaN or infinite; the last good checkpoint is kept."""


def exit_on_user_error(command):
  """Wraps an absl `main(argv)`: a UserError it raises is printed as one `error: ...` line on
  stderr and the program exits with status 2, without a traceback."""
  import functools  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top

  @functools.wraps(command)
  def main(argv):
    try:
      return command(argv)
    except UserError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
  return main
