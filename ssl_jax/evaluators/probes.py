"""Probes on frozen features: linear, kNN, label propagation and few-shot, with a few labels
per class and with all of them, several seeds each, on every feature source side by side.

Settings (`config.evals.<name>`, type "probes"): `protocols`, `labels_per_class` (0 = all),
`seeds`, and each protocol's own: `linear_c`, `linear_max_iter`, `linear_tol`, `linear_l2`
("fixed": l2 = 1 / (linear_c * labelled rows), scikit-learn's C; "heldout": chosen on a
held-out 20% of the labelled rows), `knn_k`, `knn_temperature`, `fewshot_l2`,
`propagation_neighbors`, `propagation_alpha`, `propagation_max_iter`, `propagation_tol`.
The feature sources are `config.eval.feature_sources`.

Labelled subsets are drawn per class from the probe dataset's train split with seeds
0..seeds-1; the accuracy is measured on its whole test split. Label propagation is
transductive: its graph spans train and test features, with only the drawn train labels known.
"""
import jax
import numpy as np
from absl import logging

from ssl_jax.config_lib import check_choice, check_number
from ssl_jax.errors import UserError
from ssl_jax.evaluators import Context, Evaluator as EvaluatorBase, Output

PROTOCOLS = ("linear", "knn", "label_propagation", "fewshot")


def labelled_subset(labels: np.ndarray, per_class: int, num_classes: int, seed: int
                    ) -> np.ndarray:
  """Indices of `per_class` random examples of each class (all indices when per_class == 0)."""
  if per_class == 0:
    return np.arange(len(labels))
  rng = np.random.default_rng(seed)
  chosen = []
  for cls in range(num_classes):
    members = np.flatnonzero(labels == cls)
    if len(members) < per_class:
      raise UserError(f"class {cls} has {len(members)} training examples, fewer than "
                      f"labels_per_class={per_class}")
    chosen.append(rng.choice(members, per_class, replace=False))
  return np.sort(np.concatenate(chosen))


def run_protocol(protocol: str, train: tuple, test: tuple, labelled: np.ndarray,
                 num_classes: int, settings, mesh: jax.sharding.Mesh | None = None,
                 seed: int = 0) -> float:
  """Test accuracy of one protocol given the labelled train indices. With `mesh`, kNN, label
  propagation and the linear probe shard their work over its devices."""
  from ssl_jax.eval import fewshot, knn, label_propagation, linear_probe  # pylint: disable=g-import-not-at-top
  (train_x, train_y), (test_x, test_y) = train, test
  if protocol == "fewshot":
    predictions = fewshot.ridge_classifier(train_x[labelled], train_y[labelled], test_x,
                                           num_classes=num_classes,
                                           l2=settings.get("fewshot_l2", 1.0))
  elif protocol == "linear":
    options = dict(max_iter=settings.linear_max_iter, tol=settings.get("linear_tol", 1e-4),
                   mesh=mesh)
    if settings.get("linear_l2", "fixed") == "heldout":
      predictions, selection = linear_probe.linear_probe_with_selection(
          train_x[labelled], train_y[labelled], test_x, num_classes=num_classes, seed=seed,
          **options)
      logging.info("linear probe: l2 %g chosen on %d held-out rows", selection.l2,
                   selection.num_holdout)
    else:
      l2 = 1.0 / (settings.linear_c * len(labelled))  # scikit-learn's C, per example
      predictions = linear_probe.linear_probe(
          train_x[labelled], train_y[labelled], test_x, num_classes=num_classes, l2=l2,
          **options)
  elif protocol == "knn":
    predictions = knn.knn_predict(
        train_x[labelled], train_y[labelled], test_x, num_classes=num_classes,
        k=settings.knn_k, temperature=settings.knn_temperature, mesh=mesh)
  elif protocol == "label_propagation":
    known = np.full(len(train_x) + len(test_x), -1, np.int64)
    known[labelled] = train_y[labelled]
    predictions = label_propagation.label_spreading(
        np.concatenate([train_x, test_x]), known, num_classes=num_classes,
        n_neighbors=settings.propagation_neighbors, alpha=settings.propagation_alpha,
        max_iter=settings.propagation_max_iter,
        tol=settings.propagation_tol, mesh=mesh)[len(train_x):]
  else:
    raise UserError(f"unknown probe protocol '{protocol}': use {', '.join(PROTOCOLS)}")
  return float(np.mean(np.asarray(predictions) == test_y))


class Evaluator(EvaluatorBase):
  """Every (feature source, protocol, labels per class) cell, mean and std over seeds."""

  def check(self) -> None:
    settings, key = self.settings, f"config.evals.{self.name}"
    if not isinstance(settings.protocols, (tuple, list)):
      raise UserError(f"{key}.protocols must be a tuple of {', '.join(PROTOCOLS)}, got "
                      f"{settings.protocols!r}")
    for protocol in settings.protocols:
      check_choice(f"{key}.protocols", protocol, PROTOCOLS)
    if not isinstance(settings.labels_per_class, (tuple, list)) or not settings.labels_per_class:
      raise UserError(f"{key}.labels_per_class must be a non-empty tuple of integers >= 0 "
                      f"(0 = all labels), got {settings.labels_per_class!r}")
    for per_class in settings.labels_per_class:
      check_number(f"{key}.labels_per_class", per_class, minimum=0, integer=True)
    check_number(f"{key}.seeds", settings.seeds, minimum=1, integer=True)
    if "linear" in settings.protocols:
      check_choice(f"{key}.linear_l2", settings.get("linear_l2", "fixed"), ("fixed", "heldout"))
      check_number(f"{key}.linear_c", settings.linear_c, above=0)
      check_number(f"{key}.linear_max_iter", settings.linear_max_iter, minimum=1, integer=True)
      check_number(f"{key}.linear_tol", settings.get("linear_tol", 1e-4), above=0)
    if "knn" in settings.protocols:
      check_number(f"{key}.knn_k", settings.knn_k, minimum=1, integer=True)
      check_number(f"{key}.knn_temperature", settings.knn_temperature, above=0)
    if "fewshot" in settings.protocols:
      check_number(f"{key}.fewshot_l2", settings.get("fewshot_l2", 1.0), minimum=0)
    if "label_propagation" in settings.protocols:
      check_number(f"{key}.propagation_neighbors", settings.propagation_neighbors, minimum=1,
                   integer=True)
      check_number(f"{key}.propagation_alpha", settings.propagation_alpha, above=0, below=1)
      check_number(f"{key}.propagation_max_iter", settings.propagation_max_iter, minimum=1,
                   integer=True)
      check_number(f"{key}.propagation_tol", settings.propagation_tol, above=0)

  def check_labels(self, counts: np.ndarray, dataset: str) -> None:
    wanted = max(self.settings.labels_per_class)
    if wanted > counts.min():
      raise UserError(f"config.evals.{self.name}.labels_per_class asks for {wanted} labelled "
                      f"examples of each class, but class {int(counts.argmin())} of '{dataset}' "
                      f"has {int(counts.min())} training examples: use at most "
                      f"{int(counts.min())} (0 = all labels)")

  def applies(self, context: Context) -> bool:
    return context.num_classes is not None and bool(context.config.eval.feature_sources)

  def run(self, context: Context) -> Output:
    from ssl_jax.eval import features  # pylint: disable=g-import-not-at-top
    settings, num_classes = self.settings, context.num_classes
    sources = {source: context.features(source)
               for source in context.config.eval.feature_sources}
    # Every process holds all the features; the probes shard over this process's devices
    # (a mesh spanning processes would leave each with only part of the predictions).
    probe_mesh = context.mesh if jax.process_count() == 1 else None
    cells = [(source, protocol, per_class) for source in sources
             for protocol in settings.protocols for per_class in settings.labels_per_class]
    rows = []
    for source, protocol, per_class in features.progress(cells, "probes", "cell"):
      train, test = sources[source]
      seeds = settings.seeds  # with all labels every seed sees the same subset (std 0)
      try:
        accuracies = [run_protocol(protocol, train, test,
                                   labelled_subset(train[1], per_class, num_classes, seed),
                                   num_classes, settings, probe_mesh, seed)
                      for seed in range(seeds)]
      except ValueError as e:  # a probe's input check, e.g. NaN features from a diverged run
        raise UserError(f"{protocol} on {source} features: {e}") from None
      rows.append({"features": source, "protocol": protocol,
                   "labels_per_class": per_class or None,
                   "accuracy": round(float(np.mean(accuracies)), 6),
                   "std": round(float(np.std(accuracies)), 6), "seeds": seeds})
      logging.info("%-11s %-17s labels/class %-4s accuracy %.4f", source, protocol,
                   per_class or "all", rows[-1]["accuracy"])
    return Output(rows=rows)
