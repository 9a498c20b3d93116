"""Weighted k-nearest-neighbour probe on frozen features, plus the chunked top-k search it uses.

The probe is the non-parametric classifier of Wu et al. 2018 ("Unsupervised Feature Learning via
Non-Parametric Instance Discrimination") as used to evaluate DINO (Caron et al. 2021, "Emerging
Properties in Self-Supervised Vision Transformers"): features are L2-normalised, each query takes
its k most cosine-similar training rows, and each neighbour votes for its class with weight
exp(similarity / temperature). It needs no training, so it measures the frozen representation
itself rather than a classifier fitted on top of it.

`top_k_neighbours` is the one place that searches neighbours; `label_propagation` builds its kNN
graph with it. It processes the queries in chunks so that the similarity block in memory is
(chunk_size x n_keys) rather than (n_queries x n_keys).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

METRICS = ("cosine", "euclidean")


def check_features(features: np.ndarray, name: str) -> np.ndarray:
  """Returns `features` as a non-empty 2-D NumPy array after checking every value is finite.

  A single NaN or inf would silently poison every similarity it touches (top-k then returns
  arbitrary neighbours), so it is rejected up front with a one-line message.
  """
  features = np.asarray(features)
  if features.ndim != 2 or features.shape[0] == 0:
    raise ValueError(f"{name} must be a non-empty 2-D array, got shape {features.shape}.")
  if not (np.issubdtype(features.dtype, np.integer) or np.issubdtype(features.dtype, np.floating)):
    raise ValueError(f"{name} must be real-valued, got dtype {features.dtype}.")
  if not np.all(np.isfinite(features)):
    raise ValueError(f"{name} contain NaN or infinite values.")
  return features


def check_labels(labels: np.ndarray, num_rows: int, num_classes: int, name: str,
                 allow_unlabelled: bool = False) -> np.ndarray:
  """Returns `labels` as a 1-D int array of length `num_rows` with values in [0, num_classes).

  With `allow_unlabelled`, -1 is also accepted (the usual marker for an unlabelled row).
  """
  labels = np.asarray(labels)
  if labels.ndim != 1 or labels.shape[0] != num_rows:
    raise ValueError(f"{name} must have shape ({num_rows},), got {labels.shape}.")
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"{name} must be integers, got dtype {labels.dtype}.")
  if num_classes < 1:
    raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
  low = -1 if allow_unlabelled else 0
  if labels.min() < low or labels.max() >= num_classes:
    raise ValueError(f"{name} must lie in [{low}, {num_classes}), got values in "
                     f"[{labels.min()}, {labels.max()}].")
  return labels.astype(np.int32)


def check_train_test(train_features: np.ndarray, train_labels: np.ndarray,
                     test_features: np.ndarray,
                     num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The checks every supervised probe makes: finite features of one width, valid labels."""
  train_features = check_features(train_features, "train_features")
  test_features = check_features(test_features, "test_features")
  if train_features.shape[1] != test_features.shape[1]:
    raise ValueError(f"Feature dimensions differ: train {train_features.shape[1]} vs "
                     f"test {test_features.shape[1]}.")
  train_labels = check_labels(train_labels, train_features.shape[0], num_classes,
                              "train_labels")
  return train_features, train_labels, test_features


def _as_float(features: np.ndarray) -> jax.Array:
  # The default float dtype is float32, or float64 when the user has enabled jax_enable_x64.
  return jnp.asarray(features, dtype=jnp.result_type(float))


def _l2_normalise(x: jax.Array) -> jax.Array:
  # The floor keeps all-zero rows at zero (similarity 0 to everything) instead of dividing by 0.
  norms = jnp.linalg.norm(x, axis=1, keepdims=True)
  return x / jnp.maximum(norms, 1e-12)


def _chunk_top_k(queries: jax.Array, keys: jax.Array, key_sq_norms: jax.Array, k: int,
                 metric: str) -> tuple[jax.Array, jax.Array]:
  # Without HIGHEST, GPUs/TPUs compute f32 matmuls in TF32/bf16, which reorders near neighbours.
  dots = jnp.matmul(queries, keys.T, precision=jax.lax.Precision.HIGHEST)
  if metric == "cosine":
    return jax.lax.top_k(dots, k)
  # ||q - x||^2 = ||q||^2 - 2 q.x + ||x||^2. The ||q||^2 term is the same for every key of a query,
  # so it is left out of the ranking (as scikit-learn does) and only added for the distances.
  scores, indices = jax.lax.top_k(2.0 * dots - key_sq_norms[None, :], k)
  query_sq_norms = jnp.sum(queries * queries, axis=1, keepdims=True)
  # Rounding in the expansion can make a tiny squared distance negative; clamp before the sqrt.
  return jnp.sqrt(jnp.maximum(query_sq_norms - scores, 0.0)), indices


@functools.partial(jax.jit, static_argnames=("k", "chunk", "metric"))
def _top_k(queries: jax.Array, keys: jax.Array, k: int, chunk: int,
           metric: str) -> tuple[jax.Array, jax.Array]:
  if metric == "cosine":
    queries, keys = _l2_normalise(queries), _l2_normalise(keys)
  key_sq_norms = jnp.sum(keys * keys, axis=1)
  num_queries, dim = queries.shape
  num_chunks = -(-num_queries // chunk)
  # Zero-padding the last chunk to a full one gives every chunk the same shape, so the per-chunk
  # function compiles once; the padded rows' results are sliced off at the end.
  queries = jnp.pad(queries, ((0, num_chunks * chunk - num_queries), (0, 0)))
  # lax.map runs the chunks one after another, so only one (chunk x n_keys) block is live.
  values, indices = jax.lax.map(
      lambda block: _chunk_top_k(block, keys, key_sq_norms, k, metric),
      queries.reshape(num_chunks, chunk, dim))
  return values.reshape(-1, k)[:num_queries], indices.reshape(-1, k)[:num_queries]


def top_k_neighbours(features_a: np.ndarray, features_b: np.ndarray, k: int, chunk_size: int,
                     metric: str) -> tuple[jax.Array, jax.Array]:
  """Finds, for every row of `features_a`, its `k` nearest rows of `features_b`.

  Args:
    features_a: (n_a, d) queries.
    features_b: (n_b, d) keys searched over.
    k: number of neighbours; clamped to n_b.
    chunk_size: queries per step; memory is O(chunk_size * n_b).
    metric: "cosine" (rows are L2-normalised first) or "euclidean".

  Returns:
    (values, indices), both (n_a, min(k, n_b)), nearest first. Values are cosine similarities
    (descending) for "cosine" and Euclidean distances (ascending) for "euclidean". Equal scores
    keep the lower key index first. A query that is also a key normally finds itself
    first, unless an exact duplicate of it has a lower index.
  """
  features_a = check_features(features_a, "features_a")
  features_b = check_features(features_b, "features_b")
  if features_a.shape[1] != features_b.shape[1]:
    raise ValueError(f"Feature dimensions differ: {features_a.shape[1]} vs {features_b.shape[1]}.")
  if metric not in METRICS:
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}.")
  if k < 1:
    raise ValueError(f"k must be >= 1, got {k}.")
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")

  k = min(k, features_b.shape[0])
  chunk = min(chunk_size, features_a.shape[0])
  return _top_k(_as_float(features_a), _as_float(features_b), k, chunk, metric)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _weighted_vote(similarities: jax.Array, indices: jax.Array, train_labels: jax.Array,
                   num_classes: int, temperature: float) -> jax.Array:
  # Subtracting each query's top similarity scales all of its votes by one positive factor, so the
  # argmax is unchanged, but the weights stay <= 1 and cannot overflow for a small temperature.
  weights = jnp.exp((similarities - similarities[:, :1]) / temperature)
  rows = jnp.arange(similarities.shape[0])[:, None]
  votes = jnp.zeros((similarities.shape[0], num_classes), weights.dtype)
  votes = votes.at[rows, train_labels[indices]].add(weights)
  return jnp.argmax(votes, axis=1)


def knn_predict(train_features: np.ndarray, train_labels: np.ndarray,
                query_features: np.ndarray, *, num_classes: int, k: int = 20,
                temperature: float = 0.07, chunk_size: int = 1024) -> np.ndarray:
  """Classifies each query row by a temperature-weighted vote of its k nearest training rows.

  The DINO / Wu et al. 2018 kNN protocol: cosine similarity on L2-normalised features, the top-k
  training neighbours vote with weight exp(sim / temperature), and the class with the largest
  total wins (the smallest class index on an exact tie). The defaults k=20, temperature=0.07 are
  DINO's.

  Args:
    train_features: (n_train, d) frozen training features.
    train_labels: (n_train,) ints in [0, num_classes).
    query_features: (n_query, d) features to classify.
    num_classes: number of classes.
    k: neighbours per query; clamped to n_train.
    temperature: softness of the vote; smaller trusts the nearest neighbours more.
    chunk_size: queries per similarity block; memory is O(chunk_size * n_train).

  Returns:
    (n_query,) int predictions.
  """
  train_features = check_features(train_features, "train_features")
  query_features = check_features(query_features, "query_features")
  train_labels = check_labels(train_labels, train_features.shape[0], num_classes, "train_labels")
  if temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature}.")
  similarities, indices = top_k_neighbours(query_features, train_features, k, chunk_size, "cosine")
  return np.asarray(_weighted_vote(similarities, indices, jnp.asarray(train_labels), num_classes,
                                   temperature))
