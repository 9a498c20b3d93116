"""Anomaly detection with frozen features: deep kNN scores and the one-class AUROC protocol.

Score (Bergman, Cohen & Hoshen 2020, "Deep Nearest Neighbor Anomaly Detection", Eq. 1): a
test row's anomaly score is its mean distance to its k nearest rows of the normal reference
set (the normal training rows), here the cosine distance 1 - cos(x, y) on the features as
the kNN probe uses them (L2-normalised); Bergman et al. use k = 2. A representation that
gathers a class and pushes the others away gives normal rows small scores and the rest large
ones, with no training at all.

Protocol (the one-class setting of the anomaly-detection literature: Ruff et al. 2018,
"Deep One-Class Classification"; Golan & El-Yaniv 2018): each class in turn is "normal"; its
training rows are the only reference; every test row is scored; the AUROC separates the
other classes' test rows (anomalies, the positive class) from the normal class's; the
protocol reports each class's AUROC and their mean.

AUROC is the Mann-Whitney statistic: the probability that a random anomaly scores above a
random normal row, ties counting one half (what `sklearn.metrics.roc_auc_score` computes).
"""
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


def one_class_aurocs(train_features: np.ndarray, train_labels: np.ndarray,
                     test_features: np.ndarray, test_labels: np.ndarray, num_classes: int,
                     k: int = 2) -> np.ndarray:
  """AUROC [num_classes] of each class as the normal one (NaN for a class without training
  or test rows, or whose test split has nothing else)."""
  train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
  aurocs = np.full(num_classes, np.nan)
  for normal in range(num_classes):
    reference = train_features[train_labels == normal]
    anomalous = test_labels != normal
    if not len(reference) or anomalous.all() or not anomalous.any():
      continue
    aurocs[normal] = auroc(knn_scores(reference, test_features, k), anomalous)
  return aurocs
