"""Anomaly detection as an evaluation protocol (`ssl_jax.eval.anomaly`): one class at a time
is normal, its training rows the only reference; every test row is scored by its mean cosine
distance to its k nearest normal rows (deep kNN, Bergman et al. 2020) and the AUROC of the
other classes against the normal one is averaged over the classes. For each feature source
(`ssl`, `random_init`, `raw`, as the probes), on the probe features they extracted.

A row per source: protocol "anomaly", "accuracy" the mean AUROC (a fraction, as the other
rows' accuracies; cell `anomaly@all`), "std" its spread over the classes, "metric" "auroc"
and "per_class" each class's AUROC. `eval/anomaly_auroc.png` draws each class's AUROC per
source.

Settings (`config.evals.<name>`, type "anomaly"): enabled (off by default: it scores every
test row once per class), k (neighbours, Bergman et al.'s 2).
"""
import numpy as np
from absl import logging

from ssl_jax.config_lib import check_number
from ssl_jax.errors import UserError
from ssl_jax.evaluators import Context, Evaluator as EvaluatorBase, Output


class Evaluator(EvaluatorBase):
  """The one-class deep-kNN AUROC of every configured feature source."""

  def check(self) -> None:
    if self.settings.get("enabled", False) not in (True, False):
      raise UserError(f"config.evals.{self.name}.enabled must be True or False, got "
                      f"{self.settings.enabled!r}")
    check_number(f"config.evals.{self.name}.k", self.settings.get("k", 2), minimum=1,
                 integer=True)

  def check_labels(self, counts: np.ndarray, dataset: str) -> None:
    if self.settings.get("enabled", False) and (np.asarray(counts) > 0).sum() < 2:
      raise UserError(f"config.evals.{self.name}: dataset '{dataset}' needs two classes or "
                      "more for one to be normal and the others anomalies")

  def applies(self, context: Context) -> bool:
    return (bool(self.settings.get("enabled", False)) and context.num_classes is not None
            and context.config.data.test_split is not None)

  def run(self, context: Context) -> Output:
    from ssl_jax.eval import anomaly, plots  # pylint: disable=g-import-not-at-top
    k = self.settings.get("k", 2)
    rows = []
    for source in context.config.eval.feature_sources:
      (train_x, train_y), (test_x, test_y) = context.features(source)
      per_class = anomaly.one_class_aurocs(train_x, train_y, test_x, test_y,
                                           context.num_classes, k)
      scored = per_class[~np.isnan(per_class)]
      mean, spread = float(np.mean(scored)), float(np.std(scored))
      logging.info("%-11s anomaly (deep %d-NN) mean AUROC %.4f over %d classes", source, k,
                   mean, len(scored))
      rows.append({"features": source, "protocol": "anomaly", "labels_per_class": None,
                   "accuracy": round(mean, 6), "std": round(spread, 6), "seeds": 1,
                   "metric": "auroc",
                   "per_class": [None if np.isnan(v) else round(float(v), 6)
                                 for v in per_class]})
    return Output(rows=rows, images={"plots": {"anomaly_auroc": plots.anomaly_aurocs(rows)}})
