"""Plots of the probes: a t-SNE map of each feature source's test features (`feature_map.png`)
and accuracy against labels per class, per protocol and source (`accuracy_vs_labels.png`),
from the features and result rows of the evaluators that ran before it.

Settings (`config.evals.<name>`, type "plots"): `enabled` (False turns the plots off). The
report lists the files under "plots".
"""
import time

import numpy as np
from absl import logging

from ssl_jax.evaluators import Context, Evaluator as EvaluatorBase, Output


class Evaluator(EvaluatorBase):
  """The two PNGs, drawn on process 0."""

  def applies(self, context: Context) -> bool:
    return (self.settings.get("enabled", True) and context.num_classes is not None
            and bool(context.extracted()))

  def run(self, context: Context) -> Output:
    import jax  # pylint: disable=g-import-not-at-top
    from ssl_jax.eval import plots  # pylint: disable=g-import-not-at-top
    if jax.process_index() != 0:
      return Output()
    started = time.perf_counter()
    sources = context.extracted()
    drawn = {"feature_map": plots.feature_map({s: test for s, (_, test) in sources.items()},
                                              seed=context.config.seed)}
    train_labels = next(iter(sources.values()))[0][1]
    drawn["accuracy_vs_labels"] = plots.accuracy_curves(
        context.rows, all_labels_x=len(train_labels) / len(np.unique(train_labels)))
    logging.info("plots in %.1fs", time.perf_counter() - started)
    return Output(images={"plots": drawn})
