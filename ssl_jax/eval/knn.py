"""Weighted k-nearest-neighbour probe on frozen features, plus the chunked top-k search it uses.

The probe is the non-parametric classifier of Wu et al. 2018 ("Unsupervised Feature Learning via
Non-Parametric Instance Discrimination") as used to evaluate DINO (Caron et al. 2021, "Emerging
Properties in Self-Supervised Vision Transformers"): features are L2-normalised, each query takes
its k most cosine-similar training rows, and each neighbour votes for its class with weight
exp(similarity / temperature). It needs no training, so it measures the frozen representation
itself rather than a classifier fitted on top of it.

`top_k_neighbours` is the one place that searches neighbours; `label_propagation` builds its kNN
graph with it. It processes the queries in chunks so that the similarity block in memory is
(chunk_size x n_keys) rather than (n_queries x n_keys), and with a mesh it splits the keys over
devices, so that each device holds a (chunk_size x n_keys / n_devices) block.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from ssl_jax import losses, parallel

METRICS = ("cosine", "euclidean")

# Named (k, temperature) settings of the weighted vote, used as
# `knn_predict(..., **KNN_PRESETS["dino_200"])`. "dino_20" is the setting DINO reports (Caron et
# al. 2021: k=20, T=0.07, also knn_predict's defaults); "dino_200" is the wider, softer vote
# (k=200, T=0.1) often reported beside it, which smooths over more neighbours for large classes.
KNN_PRESETS = {
    "dino_20": {"k": 20, "temperature": 0.07},
    "dino_200": {"k": 200, "temperature": 0.1},
}


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


def as_float(features: np.ndarray) -> jax.Array:
  # The default float dtype is float32, or float64 when the user has enabled jax_enable_x64.
  return jnp.asarray(features, dtype=jnp.result_type(float))


# Each device's key block is padded to a multiple of this many rows. XLA's CPU matmul was measured
# to compute a column bit-identically whenever the number of columns is a multiple of 64 (not at
# ragged edges), so the scores, and hence the neighbour order, do not depend on the device count;
# tests/test_probes.py checks this over 3 and 8 devices.
KEY_ALIGNMENT = 128


def _top_k_by_blocks(scores: jax.Array, k: int, block: int = KEY_ALIGNMENT
                     ) -> tuple[jax.Array, jax.Array]:
  """`jax.lax.top_k(scores, k)` over rows whose length is a multiple of `block`, exactly, in
  about a third of its time on CPU (measured: 0.05 s vs 0.15 s for 2048 x 40,064 scores).

  Each of the k best scores of a row lies in one of the k blocks with the largest maxima: if
  the k-th best score v were in another block, each of those k blocks would hold a score of
  at least its maximum >= v's block maximum >= v, i.e. k scores ranked above v. So a top-k over
  the n / block block maxima picks k blocks, and a top-k over their k * block scores finishes.
  The blocks are taken in ascending order, so equal scores still keep the lower index first,
  as lax.top_k does (a block that loses a tie of maxima to a lower one holds only higher
  indices).
  """
  num_rows, length = scores.shape
  num_blocks = length // block
  blocks = scores.reshape(num_rows, num_blocks, block)
  _, chosen = jax.lax.top_k(jnp.max(blocks, axis=2), min(k, num_blocks))
  chosen = jnp.sort(chosen, axis=1)
  candidates = jnp.take_along_axis(blocks, chosen[:, :, None], axis=1).reshape(num_rows, -1)
  values, positions = jax.lax.top_k(candidates, k)
  return values, jnp.take_along_axis(chosen, positions // block, axis=1) * block + positions % block


def _chunked_top_k(queries: jax.Array, keys: jax.Array, key_bias: jax.Array, k: int, chunk: int,
                   scale: float, bias_is_padding_mask: bool) -> tuple[jax.Array, jax.Array]:
  """Top-k of scale * (queries . keys) + key_bias over the keys, `chunk` queries at a time.

  With `bias_is_padding_mask` (the cosine case: scale 1, bias 0 for real keys and -inf for
  padding), the bias is only added when needed: adding it is a separate pass over the
  (chunk x n_keys) block that costs ~10% of the search. The top k of the raw dot products is
  the same unless a padded key (dot product 0) made it in, which only happens to a query with
  fewer than k keys of positive similarity; that chunk is then redone with the bias.
  """
  num_queries, dim = queries.shape
  num_chunks = -(-num_queries // chunk)
  # Zero-padding the last chunk to a full one gives every chunk the same shape, so the per-chunk
  # function compiles once; the padded rows' results are sliced off at the end.
  queries = jnp.pad(queries, ((0, num_chunks * chunk - num_queries), (0, 0)))

  def search(block):
    # Without HIGHEST, GPUs/TPUs compute f32 matmuls in TF32/bf16, which reorders near neighbours.
    dots = jnp.matmul(block, keys.T, precision=jax.lax.Precision.HIGHEST)
    if not bias_is_padding_mask:
      return _top_k_by_blocks(scale * dots + key_bias[None, :], k)
    scores, indices = _top_k_by_blocks(dots, k)
    found_padding = jnp.any(jnp.isinf(key_bias[indices]))
    return jax.lax.cond(found_padding, lambda: _top_k_by_blocks(dots + key_bias[None, :], k),
                        lambda: (scores, indices))

  # lax.map runs the chunks one after another, so only one (chunk x n_keys) block is live.
  scores, indices = jax.lax.map(search, queries.reshape(num_chunks, chunk, dim))
  return scores.reshape(-1, k)[:num_queries], indices.reshape(-1, k)[:num_queries]


def _search(queries: jax.Array, keys: jax.Array, key_bias: jax.Array, k: int, chunk: int,
            scale: float, bias_is_padding_mask: bool,
            mesh: Mesh | None) -> tuple[jax.Array, jax.Array]:
  """Top-k scores and key indices, the keys split over the mesh's `data` axis.

  With a mesh, each device searches its n_keys / n_devices keys for every query, so its
  similarity block is (chunk x n_keys / n_devices); the devices then all-gather their k best
  candidates per query and keep the top k of those n_devices * k. The merge reproduces the
  single-device order exactly: the gathered candidates are laid out by device, i.e. by ascending
  key index, and lax.top_k keeps the earlier of two equal scores, as it does over unsplit keys.
  """
  num_devices = 1 if mesh is None else mesh.shape[parallel.DATA_AXIS]
  num_keys = keys.shape[0]
  per_device = -(-num_keys // num_devices)
  per_device = -(-per_device // KEY_ALIGNMENT) * KEY_ALIGNMENT
  padding = num_devices * per_device - num_keys
  keys = jnp.pad(keys, ((0, padding), (0, 0)))
  # A padded key scores -inf, below every real (finite) score, so it is never among the top k.
  key_bias = jnp.pad(key_bias, (0, padding), constant_values=-jnp.inf)
  if mesh is None:
    return _chunked_top_k(queries, keys, key_bias, k, chunk, scale, bias_is_padding_mask)
  local_k = min(k, per_device)  # n_devices * local_k >= num_keys >= k candidates remain.

  def search(local_queries, local_keys, local_bias):
    scores, indices = _chunked_top_k(local_queries, local_keys, local_bias, local_k, chunk, scale,
                                     bias_is_padding_mask)
    indices = indices + jax.lax.axis_index(parallel.DATA_AXIS) * per_device
    scores = jax.lax.all_gather(scores, parallel.DATA_AXIS, axis=1, tiled=True)
    indices = jax.lax.all_gather(indices, parallel.DATA_AXIS, axis=1, tiled=True)
    scores, best = jax.lax.top_k(scores, k)
    return scores, jnp.take_along_axis(indices, best, axis=1)

  spec = PartitionSpec(parallel.DATA_AXIS)
  return jax.shard_map(search, mesh=mesh, in_specs=(PartitionSpec(), spec, spec),
                       out_specs=PartitionSpec(), check_vma=False)(queries, keys, key_bias)


@functools.partial(jax.jit, static_argnames=("metric",))
def _prepare(queries: jax.Array, keys: jax.Array,
             metric: str) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Returns (queries, keys, key_bias, query_sq_norms); the search ranks scale * q.x + key_bias."""
  if metric == "cosine":
    # Ranking by the dot product of unit rows is ranking by cosine similarity.
    # The norm's floor keeps all-zero rows at zero (similarity 0 to everything).
    queries, keys = losses.l2_normalize(queries, axis=1), losses.l2_normalize(keys, axis=1)
    return queries, keys, jnp.zeros(keys.shape[0], keys.dtype), jnp.zeros_like(queries[:, 0])
  # ||q - x||^2 = ||q||^2 - 2 q.x + ||x||^2. The ||q||^2 term is the same for every key of a
  # query, so it is left out of the ranking (as scikit-learn does) and only added for distances.
  return queries, keys, -jnp.sum(keys * keys, axis=1), jnp.sum(queries * queries, axis=1)


_search_jit = jax.jit(_search, static_argnames=("k", "chunk", "scale", "bias_is_padding_mask",
                                               "mesh"))


@jax.jit
def _distances(query_sq_norms: jax.Array, scores: jax.Array) -> jax.Array:
  # Rounding in the expansion can make a tiny squared distance negative; clamp before the sqrt.
  return jnp.sqrt(jnp.maximum(query_sq_norms[:, None] - scores, 0.0))


def _top_k(queries: jax.Array, keys: jax.Array, k: int, chunk: int, metric: str,
           mesh: Mesh | None) -> tuple[jax.Array, jax.Array]:
  # The normalisation runs as its own unsharded program: inside a sharded one XLA may vectorise
  # the row norms differently, and the last-bit differences would reorder near-tied neighbours.
  queries, keys, key_bias, query_sq_norms = _prepare(queries, keys, metric)
  scale = 1.0 if metric == "cosine" else 2.0
  scores, indices = _search_jit(queries, keys, key_bias, k, chunk, scale, metric == "cosine", mesh)
  if metric == "cosine":
    return scores, indices
  return _distances(query_sq_norms, scores), indices


def top_k_neighbours(features_a: np.ndarray, features_b: np.ndarray, k: int, chunk_size: int,
                     metric: str, *, mesh: Mesh | None = None) -> tuple[jax.Array, jax.Array]:
  """Finds, for every row of `features_a`, its `k` nearest rows of `features_b`.

  The search is exact (brute force): its cost is one n_a x n_b x d matrix product, which
  dominates; the top-k selection is a small fraction of the time on CPU.

  Args:
    features_a: (n_a, d) queries.
    features_b: (n_b, d) keys searched over.
    k: number of neighbours; clamped to n_b.
    chunk_size: queries per step; memory is O(chunk_size * n_b), or O(chunk_size * n_b / devices)
      with a mesh.
    metric: "cosine" (rows are L2-normalised first) or "euclidean".
    mesh: optional mesh (see `ssl_jax.parallel.make_mesh`) whose `data` axis splits the keys over
      devices; each device finds its local top k and the candidates are merged. Any n_b works (the
      keys are padded to a multiple of the device count, and padding is never returned). The
      results are bit-identical to the single-device ones.

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
  if mesh is not None and parallel.DATA_AXIS not in mesh.shape:
    raise ValueError(f"mesh has no {parallel.DATA_AXIS!r} axis (axes {tuple(mesh.shape)}).")

  k = min(k, features_b.shape[0])
  chunk = min(chunk_size, features_a.shape[0])
  return _top_k(as_float(features_a), as_float(features_b), k, chunk, metric, mesh)


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
                temperature: float = 0.07, chunk_size: int = 1024,
                mesh: Mesh | None = None) -> np.ndarray:
  """Classifies each query row by a temperature-weighted vote of its k nearest training rows.

  The DINO / Wu et al. 2018 kNN protocol: cosine similarity on L2-normalised features, the top-k
  training neighbours vote with weight exp(sim / temperature), and the class with the largest
  total wins (the smallest class index on an exact tie). The defaults k=20, temperature=0.07 are
  DINO's; `KNN_PRESETS` names them and the k=200, temperature=0.1 alternative. A class with no
  training row is never predicted.

  Args:
    train_features: (n_train, d) frozen training features.
    train_labels: (n_train,) ints in [0, num_classes).
    query_features: (n_query, d) features to classify.
    num_classes: number of classes.
    k: neighbours per query; clamped to n_train.
    temperature: softness of the vote; smaller trusts the nearest neighbours more.
    chunk_size: queries per similarity block; memory is O(chunk_size * n_train).
    mesh: optional mesh whose `data` axis splits the training rows over devices (see
      `top_k_neighbours`); the predictions equal the single-device ones.

  Returns:
    (n_query,) int predictions.
  """
  train_features = check_features(train_features, "train_features")
  query_features = check_features(query_features, "query_features")
  train_labels = check_labels(train_labels, train_features.shape[0], num_classes, "train_labels")
  if temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature}.")
  similarities, indices = top_k_neighbours(query_features, train_features, k, chunk_size, "cosine",
                                         mesh=mesh)
  return np.asarray(_weighted_vote(similarities, indices, jnp.asarray(train_labels), num_classes,
                                   temperature))
