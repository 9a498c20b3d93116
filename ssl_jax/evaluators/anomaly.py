"""Anomaly detection as an evaluation protocol (`ssl_jax.eval.anomaly`): one class at a time
is normal, its training rows the only reference; every test row gets an anomaly score and the
AUROC of the other classes against the normal one is averaged over the classes. Two scores:

* "anomaly": deep kNN (Bergman et al. 2020), a test row's mean cosine distance to its k
  nearest normal rows, for each feature source (`ssl`, `random_init`, `raw`, as the probes)
  on the probe features they extracted.
* "anomaly_reconstruction": for a method that reconstructs its input
  (`Method.reconstruction_error`: autoencoder, VAE, MAE, inpainting), the autoencoder's classic
  score (Japkowicz et al. 1995; Sakurada & Yairi 2014), each row's reconstruction error, for
  each network source (`ssl`, `random_init`) among `config.eval.feature_sources`, measured
  against the normal class's training errors (`anomaly.error_scores`: the network saw every
  class, so a raw error would rank classes by how hard they are to reconstruct). The
  corruptions (masks, noise) come from one fixed key, the same for every batch and source.

A row per score and source: protocol "anomaly" or "anomaly_reconstruction", "accuracy" the
mean AUROC (a fraction, as the other rows' accuracies; cells `anomaly@all`,
`anomaly_reconstruction@all`), "std" its spread over the classes, "metric" "auroc" and
"per_class" each class's AUROC. `eval/anomaly_auroc.png` draws each class's AUROC per source,
a panel per score.

Settings (`config.evals.<name>`, type "anomaly"): enabled (off by default: it scores every
test row once per class), k (neighbours, Bergman et al.'s 2).
"""
import numpy as np
from absl import logging

from ssl_jax.config_lib import check_number
from ssl_jax.errors import UserError
from ssl_jax.evaluators import Context, Evaluator as EvaluatorBase, Output

# The key of the reconstruction errors' corruptions: fixed, so that the scores are reproducible.
ERROR_SEED = 0


def result_row(source: str, protocol: str, per_class: np.ndarray) -> dict:
  """A report row of one-class AUROCs [num_classes] (NaN: a class not scored)."""
  scored = per_class[~np.isnan(per_class)]
  mean, spread = float(np.mean(scored)), float(np.std(scored))
  logging.info("%-11s %s mean AUROC %.4f over %d classes", source, protocol, mean, len(scored))
  return {"features": source, "protocol": protocol, "labels_per_class": None,
          "accuracy": round(mean, 6), "std": round(spread, 6), "seeds": 1, "metric": "auroc",
          "per_class": [None if np.isnan(v) else round(float(v), 6) for v in per_class]}


def reconstruction_errors(context: Context, source: str):
  """((train errors [n], labels), (test errors [n], labels)) of the network `source` on the
  probe dataset."""
  import jax  # pylint: disable=g-import-not-at-top
  from ssl_jax.eval import features  # pylint: disable=g-import-not-at-top
  rng = jax.random.PRNGKey(ERROR_SEED)
  error = context.method.reconstruction_error
  error_fn = context.representation_fn(
      lambda params, extra, images: error(params, extra, images, rng)[:, None],
      context.network_state(source), context.probe_inputs)
  data = context.config.data
  splits = []
  for split in (data.train_split, data.test_split):
    errors, labels = features.extract(error_fn, context.batches(context.probe_inputs, split),
                                      context.mesh, description="reconstruction errors")
    splits.append((errors[:, 0], labels))
  return tuple(splits)


class Evaluator(EvaluatorBase):
  """The one-class AUROC of deep kNN on every configured feature source, and of the
  reconstruction error of every network source when the method reconstructs."""

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
      rows.append(result_row(source, "anomaly", anomaly.one_class_aurocs(
          train_x, train_y, test_x, test_y, context.num_classes, k)))
    if context.method.reconstruction_error is not None:
      for source in context.network_states():
        (train_e, train_y), (test_e, test_y) = reconstruction_errors(context, source)
        rows.append(result_row(source, "anomaly_reconstruction", anomaly.reconstruction_aurocs(
            train_e, train_y, test_e, test_y, context.num_classes)))
    titles = {"anomaly": f"deep {k}-NN distance", "anomaly_reconstruction":
              "reconstruction error (distance from the normal class's)"}
    return Output(rows=rows, images={"plots": {"anomaly_auroc": plots.anomaly_aurocs(
        rows, titles)}})
