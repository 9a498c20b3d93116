"""The method's own measures on held-out data (`Method.test_metrics`, e.g. a language model's
masked-token accuracy and perplexity) on the training dataset's test split: each summed over
the split and divided by its count. A mean negative log-likelihood per predicted token, "nll",
is also reported as perplexity, exp(nll).

Settings (`config.evals.<name>`, type "held_out"): none. The report gets "held_out":
{dataset, split, <measure>: value, ...}.
"""
import jax
import numpy as np
from absl import logging

from ssl_jax import parallel
from ssl_jax.evaluators import Context, Evaluator as EvaluatorBase, Output


class Evaluator(EvaluatorBase):
  """Held-out measures of the trained network, as a "held_out" section."""

  needs_labels = False

  def applies(self, context: Context) -> bool:
    return (context.method.test_metrics is not None
            and context.config.data.test_split is not None)

  def run(self, context: Context) -> Output:
    from ssl_jax.eval import features  # pylint: disable=g-import-not-at-top
    config, inputs = context.config, context.train_inputs
    modality, test_metrics = inputs.modality, context.method.test_metrics
    params, extra = context.trained["params"]["model"], context.trained["extra"]
    compiled = jax.jit(lambda batch, rng: test_metrics(
        params, extra, modality.normalize(modality.eval_inputs(batch), config), rng))
    rng = jax.random.PRNGKey(config.seed)
    totals: dict[str, list[float]] = {}
    batches = context.batches(inputs, config.data.test_split)
    for index, batch in enumerate(features.progress(batches, "held-out metrics")):
      batch = parallel.global_batch(batch, context.mesh)
      sums = jax.device_get(compiled(batch, jax.random.fold_in(rng, index)))
      for name, (total, count) in sums.items():
        running = totals.setdefault(name, [0.0, 0.0])
        running[0] += float(total)
        running[1] += float(count)
    means = {name: total / max(count, 1.0) for name, (total, count) in totals.items()}
    if "nll" in means:
      means["perplexity"] = float(np.exp(means["nll"]))
    for name, value in means.items():
      logging.info("held-out %s %.4f", name, value)
    if not means:
      return Output()
    return Output(sections={"held_out": {
        "dataset": config.dataset, "split": config.data.test_split,
        **{name: round(value, 6) for name, value in means.items()}}})
