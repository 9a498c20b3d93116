r"""Speed and agreement of the frozen-feature probes against scikit-learn, on synthetic clusters.

    python experiments/benchmark_eval.py --n 20000 --dim 128 --classes 10 --probes label_propagation
    python experiments/benchmark_eval.py --n 50000 --dim 128 --classes 10 --probes knn
    python experiments/benchmark_eval.py --n 50000 --dim 512 --classes 10 --probes linear
    python experiments/benchmark_eval.py --n 20000 --dim 128 --classes 10 \
        --probes label_propagation_approximate
    python experiments/benchmark_eval.py --n 3000 --dim 128 --classes 10 \
        --probes label_propagation_rbf
    /usr/bin/time -v python experiments/benchmark_eval.py --n 200000 --dim 256 --classes 10 \
        --probes knn,label_propagation --skip_sklearn

Data: `classes` Gaussian clusters (unit-variance random centres, standard deviation --spread) in
a 16-dimensional latent space, embedded in `dim` dimensions by a random orthonormal map, plus
isotropic noise of standard deviation 0.1 * spread in every dimension. The low intrinsic
dimension keeps the difficulty nearly independent of `dim`; the default spread of 0.9 gives
roughly 95% accuracy for kNN and the linear probe, and 85% for label propagation. Rows are
shuffled; the first 80% are train, the rest test.

Probes and their scikit-learn counterparts, with matching settings:
  knn: `knn_predict(k=20, temperature=0.07)` vs `KNeighborsClassifier(n_neighbors=20,
    metric="cosine", algorithm="brute", weights=exp(similarity / 0.07))`, fitted on train,
    scored on test.
  label_propagation: `label_spreading` vs `LabelSpreading(kernel="knn")`, both with
    n_neighbors=7, alpha=0.2, max_iter=30, transductive over train + test with 10 labelled train
    rows per class, scored on the unlabelled rows.
  label_propagation_approximate: as label_propagation, but our graph comes from the clustered
    search (`approximate=ClusteredSearch()`); scikit-learn's is exact.
  label_propagation_rbf: `rbf_label_propagation` vs `LabelPropagation(kernel="rbf")`, both with
    gamma=0.2 (same-cluster rows, at squared distance ~28 for the default spread, then outweigh
    the other clusters, at ~60, by ~600x),
    max_iter=1000, tol=1e-3, on the same split as label_propagation; dense O(n^2), for n up to
    `label_propagation.DEFAULT_RBF_MAX_ROWS`.
  linear: `linear_probe(l2=--l2)` vs standardised `LogisticRegression(C=1 / (l2 * n_train),
    max_iter=1000)` (lbfgs), the same objective and stopping rule (max |gradient| <= 1e-4);
    fitted on train, scored on test.
  linear_selected: `linear_probe_with_selection` (l2 chosen from `DEFAULT_L2_GRID` on a
    stratified 20% of train, then refitted on all of train) vs the same selection done with
    scikit-learn on the same split (warm-started along the grid like ours); `ours_l2` and
    `sklearn_l2` are the chosen values.

Our probe is called once on the data to compile (`ours_first_s`, compile included) and timed on
a second identical call (`ours_s`); scikit-learn is timed once, fit and predict. `agreement` is
the fraction of scored rows where the two predict the same class. `peak_rss_mb` is the
process's peak resident memory (MiB) so far, so it includes earlier probes and scikit-learn;
use --skip_sklearn to measure our probes alone. Prints one JSON line per probe.
"""
import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.semi_supervised import LabelPropagation, LabelSpreading

from ssl_jax.eval import knn, label_propagation, linear_probe
from ssl_jax.eval.approximate_neighbours import ClusteredSearch

LATENT_DIM = 16
TRAIN_FRACTION = 0.8
KNN_K, KNN_TEMPERATURE = 20, 0.07
LP_NEIGHBOURS, LP_ALPHA, LP_MAX_ITER, LP_LABELS_PER_CLASS = 7, 0.2, 30, 10
RBF_GAMMA, RBF_MAX_ITER, RBF_TOL = 0.2, 1000, 1e-3


class Data(NamedTuple):
  train_x: np.ndarray
  train_y: np.ndarray
  test_x: np.ndarray
  test_y: np.ndarray


class Probe(NamedTuple):
  """Two zero-argument predictors whose outputs are aligned with `truth`.

  `extra` is a dict the predictors may fill with fields for the row (e.g. a chosen l2).
  """
  ours: Callable[[], np.ndarray]
  sklearn: Callable[[], np.ndarray]
  truth: np.ndarray
  extra: dict | None = None


def make_data(n: int, dim: int, classes: int, spread: float, seed: int) -> Data:
  rng = np.random.default_rng(seed)
  latent = min(LATENT_DIM, dim)
  centres = rng.standard_normal((classes, latent), dtype=np.float32)
  basis, _ = np.linalg.qr(rng.standard_normal((dim, latent), dtype=np.float32))
  labels = rng.permutation(np.arange(n) % classes)
  points = centres[labels] + spread * rng.standard_normal((n, latent), dtype=np.float32)
  features = points @ basis.T
  features += 0.1 * spread * rng.standard_normal((n, dim), dtype=np.float32)
  n_train = int(TRAIN_FRACTION * n)
  return Data(features[:n_train], labels[:n_train], features[n_train:], labels[n_train:])


def knn_probe(data: Data, classes: int, l2: float) -> Probe:
  del l2  # Only the linear probe is regularised.

  def ours() -> np.ndarray:
    return knn.knn_predict(data.train_x, data.train_y, data.test_x, num_classes=classes,
                           k=KNN_K, temperature=KNN_TEMPERATURE)

  def sklearn() -> np.ndarray:
    # Cosine distance is 1 - similarity, so this is the DINO vote weight exp(similarity / T).
    classifier = KNeighborsClassifier(
        n_neighbors=KNN_K, metric="cosine", algorithm="brute",
        weights=lambda distances: np.exp((1.0 - distances) / KNN_TEMPERATURE))
    return classifier.fit(data.train_x, data.train_y).predict(data.test_x)

  return Probe(ours, sklearn, data.test_y)


def _transductive_split(data: Data, classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """All rows, their labels with all but LP_LABELS_PER_CLASS train rows per class set to -1."""
  features = np.concatenate([data.train_x, data.test_x])
  labels = np.concatenate([data.train_y, data.test_y])
  partial = np.full_like(labels, -1)
  for label in range(classes):
    # Train rows are already in random order, so the first few of a class are a random sample.
    rows = np.flatnonzero(data.train_y == label)[:LP_LABELS_PER_CLASS]
    partial[rows] = label
  return features, labels, partial


def _spreading_probe(data: Data, classes: int, approximate: ClusteredSearch | None) -> Probe:
  features, labels, partial = _transductive_split(data, classes)
  unlabelled = partial == -1

  def ours() -> np.ndarray:
    return label_propagation.label_spreading(
        features, partial, num_classes=classes, n_neighbors=LP_NEIGHBOURS, alpha=LP_ALPHA,
        max_iter=LP_MAX_ITER, approximate=approximate)[unlabelled]

  def sklearn() -> np.ndarray:
    spreading = LabelSpreading(kernel="knn", n_neighbors=LP_NEIGHBOURS, alpha=LP_ALPHA,
                               max_iter=LP_MAX_ITER)
    return spreading.fit(features, partial).transduction_[unlabelled]

  return Probe(ours, sklearn, labels[unlabelled])


def label_propagation_probe(data: Data, classes: int, l2: float) -> Probe:
  del l2  # Only the linear probe is regularised.
  return _spreading_probe(data, classes, approximate=None)


def label_propagation_approximate_probe(data: Data, classes: int, l2: float) -> Probe:
  del l2  # Only the linear probe is regularised.
  return _spreading_probe(data, classes, approximate=ClusteredSearch())


def label_propagation_rbf_probe(data: Data, classes: int, l2: float) -> Probe:
  del l2  # Only the linear probe is regularised.
  features, labels, partial = _transductive_split(data, classes)
  unlabelled = partial == -1

  def ours() -> np.ndarray:
    return label_propagation.rbf_label_propagation(
        features, partial, num_classes=classes, gamma=RBF_GAMMA, max_iter=RBF_MAX_ITER,
        tol=RBF_TOL)[unlabelled]

  def sklearn() -> np.ndarray:
    propagation = LabelPropagation(kernel="rbf", gamma=RBF_GAMMA, max_iter=RBF_MAX_ITER,
                                   tol=RBF_TOL)
    return propagation.fit(features, partial).transduction_[unlabelled]

  return Probe(ours, sklearn, labels[unlabelled])


def linear_probe_probe(data: Data, classes: int, l2: float) -> Probe:
  def ours() -> np.ndarray:
    return linear_probe.linear_probe(data.train_x, data.train_y, data.test_x,
                                     num_classes=classes, l2=l2)

  def sklearn() -> np.ndarray:
    # C * sum(CE) + ||W||^2 / 2 divided by C * n_train is our mean(CE) + (l2 / 2) ||W||^2.
    classifier = make_pipeline(
        StandardScaler(), LogisticRegression(C=1.0 / (l2 * len(data.train_y)), max_iter=1000))
    return classifier.fit(data.train_x, data.train_y).predict(data.test_x)

  return Probe(ours, sklearn, data.test_y)


def linear_selected_probe(data: Data, classes: int, l2: float) -> Probe:
  del l2  # Chosen on held-out rows.
  extra = {}
  grid = sorted(linear_probe.DEFAULT_L2_GRID, reverse=True)

  def ours() -> np.ndarray:
    predictions, selection = linear_probe.linear_probe_with_selection(
        data.train_x, data.train_y, data.test_x, num_classes=classes)
    extra["ours_l2"] = selection.l2
    return predictions

  def sklearn() -> np.ndarray:
    fit, holdout = linear_probe.stratified_holdout(data.train_y, 0.2, seed=0)
    scaler = StandardScaler().fit(data.train_x[fit])
    fit_x, holdout_x = scaler.transform(data.train_x[fit]), scaler.transform(data.train_x[holdout])
    classifier = LogisticRegression(max_iter=1000, warm_start=True)
    accuracies = []
    for value in grid:
      classifier.set_params(C=1.0 / (value * len(fit))).fit(fit_x, data.train_y[fit])
      accuracies.append(np.mean(classifier.predict(holdout_x) == data.train_y[holdout]))
    chosen = grid[int(np.argmax(accuracies))]  # ties -> the stronger penalty, as ours
    extra["sklearn_l2"] = chosen
    refit = make_pipeline(
        StandardScaler(), LogisticRegression(C=1.0 / (chosen * len(data.train_y)), max_iter=1000))
    return refit.fit(data.train_x, data.train_y).predict(data.test_x)

  return Probe(ours, sklearn, data.test_y, extra)


PROBES = {"knn": knn_probe, "label_propagation": label_propagation_probe,
          "label_propagation_approximate": label_propagation_approximate_probe,
          "label_propagation_rbf": label_propagation_rbf_probe, "linear": linear_probe_probe,
          "linear_selected": linear_selected_probe}


def timed(predict: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
  # Every probe returns a NumPy array, so the device work is finished when it returns.
  started = time.perf_counter()
  predictions = predict()
  return predictions, time.perf_counter() - started


def peak_rss_mb() -> float:
  # ru_maxrss is in KiB on Linux and in bytes on macOS.
  scale = 2**20 if sys.platform == "darwin" else 2**10
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def benchmark(name: str, data: Data, classes: int, l2: float, skip_sklearn: bool) -> dict:
  probe = PROBES[name](data, classes, l2)
  _, ours_first_s = timed(probe.ours)
  ours, ours_s = timed(probe.ours)
  row = {"probe": name, "n": len(data.train_y) + len(data.test_y),
         "dim": data.train_x.shape[1], "classes": classes,
         "device": jax.devices()[0].device_kind, "ours_first_s": round(ours_first_s, 3),
         "ours_s": round(ours_s, 3), "sklearn_s": None, "speedup": None,
         "ours_acc": round(float(np.mean(ours == probe.truth)), 4), "sklearn_acc": None,
         "agreement": None}
  if not skip_sklearn:
    reference, sklearn_s = timed(probe.sklearn)
    row.update(sklearn_s=round(sklearn_s, 3), speedup=round(sklearn_s / ours_s, 2),
               sklearn_acc=round(float(np.mean(reference == probe.truth)), 4),
               agreement=round(float(np.mean(ours == reference)), 4))
  row.update(probe.extra or {})
  row["peak_rss_mb"] = round(peak_rss_mb(), 1)
  return row


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, required=True, help="rows, train and test together")
  parser.add_argument("--dim", type=int, required=True, help="feature dimension")
  parser.add_argument("--classes", type=int, required=True, help="number of clusters")
  parser.add_argument("--probes", default=",".join(PROBES),
                      help=f"comma-separated subset of {','.join(PROBES)}")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--spread", type=float, default=0.9,
                      help="cluster standard deviation; larger is harder")
  parser.add_argument("--l2", type=float, default=1e-4, help="linear probe penalty")
  parser.add_argument("--skip_sklearn", action="store_true",
                      help="run our probes only; the scikit-learn fields are null")
  args = parser.parse_args()
  names = args.probes.split(",")
  unknown = sorted(set(names) - set(PROBES))
  if unknown:
    parser.error(f"unknown probes {unknown}; choose from {list(PROBES)}")
  data = make_data(args.n, args.dim, args.classes, args.spread, args.seed)
  for name in names:
    print(json.dumps(benchmark(name, data, args.classes, args.l2, args.skip_sklearn)), flush=True)


if __name__ == "__main__":
  main()
