"""A run: train a config in its workdir, then evaluate it (`python -m ssl_jax.main` and each
trial of a sweep call this; it defines no command-line flags, so both can import it)."""


def run(config, workdir: str):
  """Trains `config` in `workdir`, then, when training reached its last step and
  `config.evaluate_at_end` is set, evaluates the final checkpoint; returns the
  `train.Outcome` (the final state, and whether training reached its last step). The
  evaluation settings are checked before the first training step."""
  from ssl_jax import evaluate, train  # pylint: disable=g-import-not-at-top
  if config.evaluate_at_end:
    evaluate.check_labels(config, evaluate.check(config))
  outcome = train.train(config, workdir)
  if config.evaluate_at_end and outcome.completed:
    evaluate.run(workdir)
  return outcome
