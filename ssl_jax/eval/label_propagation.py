"""Label spreading over a kNN graph of frozen features (Zhou et al. 2004), and RBF propagation.

Zhou et al. 2004, "Learning with Local and Global Consistency", propagate the few known labels
through a similarity graph: with S the symmetrically normalised affinity D^-1/2 W D^-1/2 and Y
the one-hot labels (zero rows for unlabelled points), iterate

  F <- alpha * S F + (1 - alpha) * Y

so each point keeps a (1 - alpha) share of its own label and takes an alpha share from its
neighbours. As a probe it asks whether classes form connected, well-separated regions of the
representation with only a handful of labels per class.

This reproduces scikit-learn's `LabelSpreading(kernel="knn")` exactly, in JAX:

* W is the directed kNN connectivity graph: W[i, j] = 1 when j is among the n_neighbors
  Euclidean nearest rows of i, where i counts as its own nearest neighbour (scikit-learn queries
  the fitted set with itself).
* D is the in-degree of W not counting self-loops (`scipy.sparse.csgraph.laplacian(normed=True)`
  sums columns and subtracts the diagonal); a node with zero degree gets D = 1.
* The diagonal of S is zero.
* Iteration starts from F = Y and stops before the first update where the summed absolute change
  of F over the previous update is below `tol`, or after `max_iter` updates.
* Rows of F are normalised to sum to 1 (an all-zero row, unreachable from any label, stays 0).

W is never materialised: each row of S is stored as its n_neighbors neighbour indices and edge
weights, so memory is O(n * (n_neighbors + num_classes)). The exact graph costs one n x n x d
matrix product (split over devices with a mesh); `approximate=ClusteredSearch(...)` swaps in an
approximate graph for large n.

`rbf_label_propagation` is the other scikit-learn variant, `LabelPropagation(kernel="rbf")`
(Zhu and Ghahramani 2002): a dense RBF graph with hard clamping of the labelled rows, for small n.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from ssl_jax.eval import approximate_neighbours, knn
from ssl_jax.eval.approximate_neighbours import ClusteredSearch

# The RBF variant holds the dense n x n transition matrix: 10,000 rows are 400 MB in float32.
DEFAULT_RBF_MAX_ROWS = 10_000


def _graph_weights(indices: jax.Array) -> jax.Array:
  """Returns the (n, k) edge weights of S; row i of S holds weights[i, t] at indices[i, t]."""
  n = indices.shape[0]
  # Self-loops are dropped twice over in scikit-learn: the Laplacian's degree excludes the
  # diagonal, and LabelSpreading zeroes the diagonal of S.
  off_diagonal = (indices != jnp.arange(n)[:, None]).astype(jnp.result_type(float))
  in_degree = jax.ops.segment_sum(off_diagonal.ravel(), indices.ravel(), num_segments=n)
  inv_sqrt_degree = 1.0 / jnp.sqrt(jnp.where(in_degree == 0, 1.0, in_degree))
  return off_diagonal * inv_sqrt_degree[:, None] * inv_sqrt_degree[indices]


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _spread(indices: jax.Array, labels: jax.Array, num_classes: int, alpha: float, max_iter: int,
            tol: float) -> jax.Array:
  weights = _graph_weights(indices)
  # jax.nn.one_hot maps -1 to an all-zero row, which is exactly Y for an unlabelled point.
  y = jax.nn.one_hot(labels, num_classes, dtype=weights.dtype)
  y_static = (1.0 - alpha) * y

  def graph_matmul(f):
    # One neighbour slot at a time: gathering f[indices] for all slots at once would materialise
    # an (n, k, num_classes) array.
    def add_slot(t, acc):
      return acc + weights[:, t, None] * f[indices[:, t]]
    return jax.lax.fori_loop(0, indices.shape[1], add_slot, jnp.zeros_like(f))

  def not_converged(state):
    step, f, previous = state
    return (step < max_iter) & (jnp.sum(jnp.abs(f - previous)) >= tol)

  def update(state):
    step, f, _ = state
    return step + 1, alpha * graph_matmul(f) + y_static, f

  # Starting "previous" at zero makes the first check compare against Y, as scikit-learn does.
  _, f, _ = jax.lax.while_loop(not_converged, update, (0, y, jnp.zeros_like(y)))
  normaliser = jnp.sum(f, axis=1, keepdims=True)
  return f / jnp.where(normaliser == 0, 1.0, normaliser)


def label_distributions(features: np.ndarray, labels: np.ndarray, *, num_classes: int,
                        n_neighbors: int = 7, alpha: float = 0.2, max_iter: int = 30,
                        tol: float = 1e-3, chunk_size: int = 1024,
                        mesh: Mesh | None = None,
                        approximate: ClusteredSearch | None = None) -> np.ndarray:
  """Spreads the known labels over the kNN graph and returns per-row class distributions.

  Equals scikit-learn's `LabelSpreading(kernel="knn", ...).label_distributions_` for the columns
  of classes that have a labelled row; columns of classes without one are all zero.

  Args:
    features: (n, d) frozen features of all rows, labelled and unlabelled.
    labels: (n,) ints in [0, num_classes), or -1 for an unlabelled row.
    num_classes: number of classes.
    n_neighbors: neighbours per row in the kNN graph (the row itself included); clamped to n.
    alpha: share of each update taken from neighbours, in (0, 1).
    max_iter: maximum number of updates.
    tol: stop once the summed absolute change of all entries falls below this.
    chunk_size: rows per step of the neighbour search; its memory is O(chunk_size * n).
    mesh: optional mesh whose `data` axis splits the neighbour search over devices (see
      `knn.top_k_neighbours`); the graph, and so the result, equals the single-device one.
    approximate: if given, build the kNN graph with the clustered search of
      `approximate_neighbours` (cost n x rounds * probe_blocks * block_size x d instead of
      n x n x d, one device) instead of the exact one; the result then no longer equals
      scikit-learn's. Its effect depends on the data: on digits (3 labels per class) 3 rounds of
      4 x 64-row blocks find ~98% of the true neighbours and accuracy moves by 0.4-1.4 points; on the
      benchmark's Gaussian clusters (n=20,000, two data seeds) the defaults find 83-86%, change
      8-16% of the predictions and moved accuracy by +2.5 to +5.5 points, because with alpha=0.2
      and 30 steps a far row's label hinges on tiny propagated mass, so on every edge. Meant for n
      where the exact O(n^2 d) search is too slow (n=200,000, d=256: ~16 s on 2 CPU cores), not
      as a drop-in replacement.

  Returns:
    (n, num_classes) rows summing to 1, or all zero for a row no label reached.

  Raises:
    ValueError: if no row is labelled, or on malformed input.
  """
  features = knn.check_features(features, "features")
  labels = knn.check_labels(labels, features.shape[0], num_classes, "labels",
                            allow_unlabelled=True)
  if not np.any(labels >= 0):
    raise ValueError("labels has no labelled row (every entry is -1); nothing to spread.")
  if n_neighbors < 1:
    raise ValueError(f"n_neighbors must be >= 1, got {n_neighbors}.")
  if not 0 < alpha < 1:
    raise ValueError(f"alpha must lie in (0, 1), got {alpha}.")
  if max_iter < 1:
    raise ValueError(f"max_iter must be >= 1, got {max_iter}.")
  if tol < 0:
    raise ValueError(f"tol must be >= 0, got {tol}.")
  if approximate is None:
    _, indices = knn.top_k_neighbours(features, features, n_neighbors, chunk_size, "euclidean",
                                      mesh=mesh)
  elif mesh is not None:
    raise ValueError("approximate (clustered) search runs on one device; pass mesh=None.")
  else:
    _, indices = approximate_neighbours.clustered_neighbours(knn.as_float(features), n_neighbors,
                                                             approximate)
  return np.asarray(_spread(indices, jnp.asarray(labels), num_classes, alpha, max_iter, tol))


def label_spreading(features: np.ndarray, labels: np.ndarray, *, num_classes: int,
                    n_neighbors: int = 7, alpha: float = 0.2, max_iter: int = 30,
                    tol: float = 1e-3, chunk_size: int = 1024,
                    mesh: Mesh | None = None,
                    approximate: ClusteredSearch | None = None) -> np.ndarray:
  """Predicts a label for every row by label spreading (Zhou et al. 2004) over a kNN graph.

  Equals scikit-learn's `LabelSpreading(kernel="knn", ...).transduction_`; see
  `label_distributions` for the arguments. A class in range(num_classes) with no labelled row is
  never predicted, since nothing spreads its label. A row that no label reaches gets the smallest
  labelled class, as in scikit-learn.

  Returns:
    (n,) int predictions; labelled rows usually, but not necessarily, keep their label.

  Raises:
    ValueError: if no row is labelled, or on malformed input.
  """
  distributions = label_distributions(
      features, labels, num_classes=num_classes, n_neighbors=n_neighbors, alpha=alpha,
      max_iter=max_iter, tol=tol, chunk_size=chunk_size, mesh=mesh, approximate=approximate)
  return transduction(distributions, labels, num_classes)


def transduction(distributions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
  """Each row's predicted class [n] from its propagated distribution: the most probable class
  that has a labelled row (scikit-learn's `transduction_`)."""
  labels = np.asarray(labels)
  has_label = np.bincount(labels[labels >= 0], minlength=num_classes) > 0
  # Masking unlabelled classes sends all-zero rows to the first labelled class, not to class 0.
  return np.argmax(np.where(has_label, distributions, -1.0), axis=1)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _propagate_rbf(features: jax.Array, labels: jax.Array, num_classes: int, gamma: float,
                   max_iter: int, tol: float) -> jax.Array:
  # Distances are translation invariant; centring first shrinks the norms, and with them the
  # float32 cancellation in ||x||^2 - 2 x.y + ||y||^2.
  features = features - jnp.mean(features, axis=0)
  sq_norms = jnp.sum(features * features, axis=1)
  dots = jnp.matmul(features, features.T, precision=jax.lax.Precision.HIGHEST)
  sq_distances = jnp.maximum(sq_norms[:, None] - 2.0 * dots + sq_norms[None, :], 0.0)
  # The diagonal is exp(0) = 1, so no row sum is zero.
  affinity = jnp.exp(-gamma * sq_distances)
  transition = affinity / jnp.sum(affinity, axis=1, keepdims=True)
  y = jax.nn.one_hot(labels, num_classes, dtype=transition.dtype)
  labelled = (labels >= 0)[:, None]

  def not_converged(state):
    step, f, previous = state
    return (step < max_iter) & (jnp.sum(jnp.abs(f - previous)) >= tol)

  def update(state):
    step, f, _ = state
    f_next = jnp.matmul(transition, f, precision=jax.lax.Precision.HIGHEST)
    normaliser = jnp.sum(f_next, axis=1, keepdims=True)
    f_next = f_next / jnp.where(normaliser == 0, 1.0, normaliser)
    # Hard clamping: labelled rows are reset to their one-hot label after every step.
    return step + 1, jnp.where(labelled, y, f_next), f

  _, f, _ = jax.lax.while_loop(not_converged, update, (0, y, jnp.zeros_like(y)))
  normaliser = jnp.sum(f, axis=1, keepdims=True)
  return f / jnp.where(normaliser == 0, 1.0, normaliser)


def rbf_label_distributions(features: np.ndarray, labels: np.ndarray, *, num_classes: int,
                            gamma: float = 20.0, max_iter: int = 1000, tol: float = 1e-3,
                            max_rows: int = DEFAULT_RBF_MAX_ROWS) -> np.ndarray:
  """Label propagation (Zhu and Ghahramani 2002) on a dense RBF graph; per-row distributions.

  Zhu and Ghahramani 2002, "Learning from Labeled and Unlabeled Data with Label Propagation"
  (CMU-CALD-02-107): with W[i, j] = exp(-gamma ||x_i - x_j||^2) (self-affinity 1 included) and
  the row-stochastic T = D^-1 W, iterate F <- T F, renormalise each row of F to sum to 1 (a zero
  row stays 0) and reset the labelled rows to their one-hot labels (hard clamping, unlike label
  spreading's soft alpha). The start, stopping rule and final row normalisation are those of
  `label_distributions`, so this equals scikit-learn's
  `LabelPropagation(kernel="rbf", gamma, max_iter, tol).label_distributions_` for the columns of
  labelled classes (columns of classes without a labelled row are zero).

  T is dense, O(n^2) memory and O(n^2 num_classes) time per step, so this is for small n; the
  kNN-graph `label_spreading` is the scalable probe. gamma is in units of 1 / squared feature
  distance: scikit-learn's default of 20 suits unit-scale features; a row whose neighbours are all
  much farther than 1 / sqrt(gamma) keeps (almost) only its self-affinity, and stays unreached.

  Args:
    features: (n, d) features of all rows, labelled and unlabelled.
    labels: (n,) ints in [0, num_classes), or -1 for an unlabelled row.
    num_classes: number of classes.
    gamma: RBF kernel width, > 0.
    max_iter: maximum number of updates.
    tol: stop once the summed absolute change of all entries falls below this.
    max_rows: largest n accepted; the n x n matrix takes 4 n^2 bytes in float32.

  Returns:
    (n, num_classes) rows summing to 1, or all zero for a row no label reached.

  Raises:
    ValueError: if n > max_rows, if no row is labelled, or on malformed input.
  """
  features = knn.check_features(features, "features")
  if features.shape[0] > max_rows:
    raise ValueError(f"RBF label propagation is dense O(n^2): {features.shape[0]} rows exceed "
                     f"max_rows={max_rows}; use label_spreading (kNN graph) or raise max_rows.")
  labels = knn.check_labels(labels, features.shape[0], num_classes, "labels",
                            allow_unlabelled=True)
  if not np.any(labels >= 0):
    raise ValueError("labels has no labelled row (every entry is -1); nothing to propagate.")
  if not gamma > 0:
    raise ValueError(f"gamma must be > 0, got {gamma}.")
  if max_iter < 1:
    raise ValueError(f"max_iter must be >= 1, got {max_iter}.")
  if tol < 0:
    raise ValueError(f"tol must be >= 0, got {tol}.")
  return np.asarray(_propagate_rbf(knn.as_float(features), jnp.asarray(labels), num_classes,
                                   gamma, max_iter, tol))


def rbf_label_propagation(features: np.ndarray, labels: np.ndarray, *, num_classes: int,
                          gamma: float = 20.0, max_iter: int = 1000, tol: float = 1e-3,
                          max_rows: int = DEFAULT_RBF_MAX_ROWS) -> np.ndarray:
  """Predicts a label for every row by RBF label propagation (Zhu and Ghahramani 2002).

  Equals scikit-learn's `LabelPropagation(kernel="rbf", ...).transduction_`; see
  `rbf_label_distributions` for the arguments and the size limit. Labelled rows keep their label
  (they are clamped); as in `label_spreading`, a class with no labelled row is never predicted and
  an unreached row gets the smallest labelled class.

  Returns:
    (n,) int predictions.
  """
  distributions = rbf_label_distributions(
      features, labels, num_classes=num_classes, gamma=gamma, max_iter=max_iter, tol=tol,
      max_rows=max_rows)
  return transduction(distributions, labels, num_classes)
