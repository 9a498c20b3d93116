"""Anomaly detection with frozen networks: deep kNN scores, reconstruction-error scores, and
the one-class AUROC protocol.

Score (Bergman, Cohen & Hoshen 2020, "Deep Nearest Neighbor Anomaly Detection", Eq. 1): a
test row's anomaly score is its mean distance to its k nearest rows of the normal reference
set (the normal training rows), here the cosine distance 1 - cos(x, y) on the features as
the kNN probe uses them (L2-normalised); Bergman et al. use k = 2. A representation that
gathers a class and pushes the others away gives normal rows small scores and the rest large
ones, with no training at all.

Reconstruction error (Japkowicz, Myers & Gluck 1995, "A Novelty Detection Approach to
Classification"; Sakurada & Yairi 2014, "Anomaly Detection Using Autoencoders with Nonlinear
Dimensionality Reduction"): a network that reconstructs its input reconstructs what it was
trained on better than the rest, so its error is the score. Their recipe trains one network
on the normal class alone. Here one network was trained on every class, so a raw error ranks
the classes by how hard each is to reconstruct (a simple digit is an "inlier" whichever class
is normal), and its AUROCs average to about 0.5 over the classes (exactly, for classes of one
size: each pair of classes counts once each way round). The score is instead how far
a row's error lies from the normal class's own training errors, |e - median| / (1.4826 MAD)
(a robust z-score: the median absolute deviation, scaled to equal the standard deviation of a
Gaussian, falling back to the standard deviation when more than half the errors tie): what a
threshold set on normal data alone does, two-sided since an anomaly may be easier to
reconstruct than the normal class as well as harder. The AUROC of one normal class is the
same for any positive scale; the scale makes the score a number of spreads, comparable across
classes and runs.

Protocol (the one-class setting of the anomaly-detection literature: Ruff et al. 2018,
"Deep One-Class Classification"; Golan & El-Yaniv 2018): each class in turn is "normal"; its
training rows are the only reference; every test row is scored; the AUROC separates the
other classes' test rows (anomalies, the positive class) from the normal class's; the
protocol reports each class's AUROC and their mean.

AUROC is the Mann-Whitney statistic: the probability that a random anomaly scores above a
random normal row, ties counting one half (what `sklearn.metrics.roc_auc_score` computes).
"""
from typing import Callable

import numpy as np
from scipy import stats

from ssl_jax.eval import knn


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
  """The area under the ROC curve of `scores` for the boolean labels `positive` [n]: the mean
  rank of the positives among all rows (average ranks for ties), normalised."""
  scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
  num_positive, num_negative = int(positive.sum()), int((~positive).sum())
  if not num_positive or not num_negative:
    raise ValueError("AUROC needs both positive and negative rows")
  ranks = stats.rankdata(scores)  # average ranks: a tie counts one half
  rank_sum = ranks[positive].sum()
  return float((rank_sum - num_positive * (num_positive + 1) / 2)
               / (num_positive * num_negative))


def knn_scores(reference: np.ndarray, queries: np.ndarray, k: int = 2,
               chunk_size: int = 1024) -> np.ndarray:
  """Each query's mean cosine distance to its `k` nearest `reference` rows [n_queries]."""
  similarities, _ = knn.top_k_neighbours(queries, reference, k, chunk_size, "cosine")
  return 1.0 - np.asarray(similarities, np.float64).mean(axis=1)


def error_scores(normal_errors: np.ndarray, test_errors: np.ndarray) -> np.ndarray:
  """Each test row's distance from the normal rows' reconstruction errors [n_test]:
  |e - median| / scale, the scale 1.4826 * MAD of `normal_errors`, or their standard deviation
  when the MAD is 0, or 1 when both are."""
  normal_errors = np.asarray(normal_errors, np.float64).ravel()
  test_errors = np.asarray(test_errors, np.float64).ravel()
  median = np.median(normal_errors)
  scale = 1.4826 * np.median(np.abs(normal_errors - median)) or np.std(normal_errors) or 1.0
  return np.abs(test_errors - median) / scale


def one_class_aurocs_from_scores(score: Callable[[np.ndarray], np.ndarray],
                                 train_labels: np.ndarray, test_labels: np.ndarray,
                                 num_classes: int) -> np.ndarray:
  """AUROC [num_classes] of each class as the normal one, `score(normal)` giving every test
  row's anomaly score from the boolean mask [n_train] of the normal class's training rows (NaN
  for a class without training or test rows, or whose test split has nothing else)."""
  train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
  aurocs = np.full(num_classes, np.nan)
  for normal in range(num_classes):
    reference = train_labels == normal
    anomalous = test_labels != normal
    if not reference.any() or anomalous.all() or not anomalous.any():
      continue
    aurocs[normal] = auroc(score(reference), anomalous)
  return aurocs


def one_class_aurocs(train_features: np.ndarray, train_labels: np.ndarray,
                     test_features: np.ndarray, test_labels: np.ndarray, num_classes: int,
                     k: int = 2) -> np.ndarray:
  """The one-class AUROCs [num_classes] of deep kNN scores on features."""
  return one_class_aurocs_from_scores(
      lambda normal: knn_scores(train_features[normal], test_features, k), train_labels,
      test_labels, num_classes)


def reconstruction_aurocs(train_errors: np.ndarray, train_labels: np.ndarray,
                          test_errors: np.ndarray, test_labels: np.ndarray,
                          num_classes: int) -> np.ndarray:
  """The one-class AUROCs [num_classes] of reconstruction errors ([n] or [n, 1]), each test
  row scored by `error_scores` against the normal class's training errors."""
  train_errors = np.asarray(train_errors, np.float64).ravel()
  return one_class_aurocs_from_scores(
      lambda normal: error_scores(train_errors[normal], test_errors), train_labels,
      test_labels, num_classes)
