"""User-facing errors.

A `UserError` is a problem with what the user asked for (a config key, a dataset name, a
workdir), not a bug. `ssl_jax.main` and `ssl_jax.evaluate` print its message as one line and
exit non-zero without a traceback; everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
  """A bad config, dataset, path or checkpoint; the message names the cause in one line."""


class TrainingDivergedError(UserError):
  """The loss became NaN or infinite; the last good checkpoint is kept."""
