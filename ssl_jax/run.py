"""A run: train a config in its workdir, then evaluate it (`python -m ssl_jax.main` and each
trial of a sweep call this; it defines no command-line flags, so both can import it)."""
import time


def run(config, workdir: str, timings: dict | None = None):
  """Trains `config` in `workdir`, then, when training reached its last step and
  `config.evaluate_at_end` is set, evaluates the final checkpoint; returns the
  `train.Outcome` (the final state, and whether training reached its last step). The
  evaluation settings are checked before the first training step. `timings`, when given,
  receives the seconds spent training and evaluating ("train_seconds", "eval_seconds")."""
  from ssl_jax import evaluate, modalities, train  # pylint: disable=g-import-not-at-top
  config = modalities.find(config).resolve_config(config)  # as training will see it
  if config.evaluate_at_end:
    evaluate.check_labels(config, evaluate.check(config))
  started = time.perf_counter()
  outcome = train.train(config, workdir)
  trained = time.perf_counter()
  if config.evaluate_at_end and outcome.completed:
    evaluate.run(workdir)
  if timings is not None:
    timings.update(train_seconds=trained - started, eval_seconds=time.perf_counter() - trained)
  return outcome
