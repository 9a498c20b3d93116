"""Linear probe: multinomial logistic regression on frozen features, solved with L-BFGS.

The linear-evaluation protocol of self-supervised learning (e.g. Chen et al. 2020, SimCLR;
Caron et al. 2021, DINO) fits a linear classifier on frozen features and reports its test
accuracy, measuring how linearly separable the representation makes the classes. On feature
matrices small enough to hold in memory the convex problem is solved with full-batch L-BFGS
(Liu & Nocedal 1989), which removes the learning-rate and epoch sweeps that SGD probes need.

Objective, on features standardised with the training mean and standard deviation:

  mean_i CE(W x_i + b, y_i) + (l2 / 2) * ||W||^2      (the bias b is not penalised)

Relation to scikit-learn: `LogisticRegression(C=C)` (lbfgs, multinomial) minimises this same
mean-scaled objective with l2 = 1 / (C * n), and stops once max_j |gradient_j| <= tol = 1e-4
(scipy's `gtol`). `fit_linear_classifier` uses that stopping rule and that default tolerance, on
the gradient with respect to (W, b), so both solvers stop at the same distance from the unique
minimiser.

Speed: standardised SSL features are strongly correlated, so the Hessian is badly conditioned
and plain L-BFGS needs hundreds of iterations. We optimise over V with W = L^-T V, where
L L^T = Sigma + (l2 + eps) I is the Cholesky factor of the training covariance plus the
penalty: a change of variables, not a change of objective (the penalty is applied to W itself),
so the minimiser is the same. If the data term's Hessian were q * Sigma, the one in V would be
L^-1 (q Sigma + l2 I) L^-T, whose eigenvalues all lie between min(q, 1) and max(q, 1): the
classic preconditioning of Newton-type methods (Nocedal & Wright 2006, ch. 5.1 and 7.2), after
which L-BFGS converges in a few dozen iterations instead of hundreds. L-BFGS is invariant under
orthogonal changes of variables, so this is equivalent to PCA-rotating and rescaling the
features, without an eigendecomposition. Sigma is estimated on a strided subset of the rows (it
only shapes the path, not the answer) and shared by every l2 of a held-out sweep. The gradient
is written out by hand (`_summed_cross_entropy`) so that both products with the features are
plain matmuls; the price is a second, transposed copy of the standardised features in memory.

Scale: with `mesh`, the training rows are sharded over its `data` axis, padded with zero-weight
rows; every sum is over real rows only, and the result equals the single-device one. Row counts
are also padded to a coarse size (at most 1/8 more rows) so that the fits of a sweep reuse one
compiled solver.

`select_l2` chooses l2 on a stratified held-out part of the training rows (the protocol of
Kornblith et al. 2019, "Do Better ImageNet Models Transfer Better?", and of SimCLR's linear
evaluation), warm-starting along the path from strong to weak penalty (Friedman et al. 2010,
glmnet); `linear_probe_with_selection` refits on all labelled rows with the chosen value.

Degenerate inputs, documented rather than refused:
  - one class among the training labels: every test row is predicted as that class, no solver
    runs (the weights and bias are zero; the other classes' logits are -inf).
  - a class in range(num_classes) with no training rows: its logit is fixed at -inf, so it is
    never predicted; its weights and bias stay zero. (Left free, its unpenalised bias would head
    to -inf and the solver would never meet the tolerance.)
NaN or infinite features are rejected with a ValueError.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from ssl_jax import parallel
from ssl_jax.eval import knn

# Log-spaced, strong to weak, so that each fit warm-starts from a nearby, smoother solution.
DEFAULT_L2_GRID = tuple(10.0 ** -np.arange(0, 7, dtype=np.float64))
# l2 returned by `select_l2` when too few rows exist to hold any out (the default of
# `linear_probe`: a light penalty that keeps separable problems strongly convex).
FALLBACK_L2 = 1e-4
# Added to the covariance's diagonal in the preconditioner, so that it stays positive definite
# when l2 = 0 and some direction of the features is constant.
_PRECONDITIONER_EPS = 1e-6
_COVARIANCE_ROWS_PER_DIM, _COVARIANCE_MIN_ROWS = 16, 4096
# A step lowering the objective by less than this many ulps of it counts as no progress
# (scipy's L-BFGS-B uses 64 float64 ulps); the solver stops after _MAX_STALLS in a row.
_NO_PROGRESS_ULPS, _MAX_STALLS = 4, 3


class LinearClassifier(NamedTuple):
  """A fitted probe: logits = ((x - mean) / std) @ weights + bias, absent classes at -inf."""
  weights: np.ndarray  # (d, num_classes)
  bias: np.ndarray  # (num_classes,)
  mean: np.ndarray  # (d,)
  std: np.ndarray  # (d,)
  present: np.ndarray  # (num_classes,) bool: classes with at least one training row
  num_iterations: int  # L-BFGS iterations run (0 when no solver ran)

  def predict(self, features: np.ndarray) -> np.ndarray:
    features = knn.check_features(features, "test_features")
    if features.shape[1] != self.weights.shape[0]:
      raise ValueError(f"Feature dimensions differ: train {self.weights.shape[0]} vs "
                       f"test {features.shape[1]}.")
    return np.asarray(_predict(jnp.asarray(features, jnp.result_type(float)), self.mean, self.std,
                               self.weights, self.bias, self.present))


class L2Selection(NamedTuple):
  """Result of `select_l2`: the chosen l2 and the held-out accuracy of every grid value."""
  l2: float
  l2_grid: tuple[float, ...]  # strong to weak, the order in which they were fitted
  holdout_accuracy: tuple[float, ...]  # NaN for every value when selection was skipped
  num_holdout: int  # held-out rows; 0 when selection was skipped


class _Prepared(NamedTuple):
  """Standardised training rows and their covariance, shared by every l2 of a sweep."""
  features: jax.Array  # (n_padded, d) standardised; padding rows are zero
  features_t: jax.Array  # (d, n_padded) the same, transposed, for the gradient's product
  targets: jax.Array  # (n_padded, num_classes): one-hot labels times the row weights
  row_weights: jax.Array  # (n_padded,) 1 for real rows, 0 for padding
  mean: jax.Array
  std: jax.Array
  covariance: jax.Array  # (d, d) of the standardised rows, estimated on a strided subset
  present: jax.Array  # (num_classes,) bool


def _covariance_stride(num_rows: int, dims: int) -> int:
  # The covariance only shapes the preconditioner, never the objective, so an estimate from
  # _COVARIANCE_ROWS_PER_DIM * d rows (relative error ~ 1/4) is enough and keeps its cost near a
  # few gradient evaluations (benchmark_eval's 40,000 x 512 features: 16 rows per dimension take
  # 30 iterations, 8 take 35, 4 take 41). A stride rather than a prefix, so that rows sorted by
  # class still give a representative subset.
  return max(1, num_rows // max(_COVARIANCE_ROWS_PER_DIM * dims, _COVARIANCE_MIN_ROWS))


@functools.partial(jax.jit, static_argnames=("num_classes", "covariance_stride"))
def _prepare(features: jax.Array, labels: jax.Array, row_weights: jax.Array, num_classes: int,
             covariance_stride: int) -> _Prepared:
  count = jnp.sum(row_weights)
  mean = row_weights @ features / count
  centred = (features - mean) * row_weights[:, None]
  std = jnp.sqrt(row_weights @ (centred ** 2) / count)
  # A feature (near-)constant on the training set carries no signal; dividing it by its tiny std
  # would blow up its test values. Like scikit-learn's StandardScaler, only centre it instead:
  # its weight gets zero gradient from the data and is held at zero by the penalty.
  std = jnp.where(std < 1e-6, 1.0, std)
  standardised = centred / std
  # Padding rows are zero, so they add nothing; the divisor counts the real rows in the subset.
  subset = standardised[::covariance_stride]
  covariance = jnp.matmul(subset.T, subset, precision=jax.lax.Precision.HIGHEST) / jnp.sum(
      row_weights[::covariance_stride])
  targets = jax.nn.one_hot(labels, num_classes, dtype=features.dtype) * row_weights[:, None]
  present = jnp.sum(targets, axis=0) > 0
  return _Prepared(standardised, standardised.T, targets, row_weights, mean, std, covariance,
                   present)


def _logits(x: jax.Array, weights: jax.Array, bias: jax.Array, present: jax.Array) -> jax.Array:
  # Without HIGHEST, GPUs/TPUs compute f32 matmuls in TF32/bf16, whose gradient noise stalls
  # the line search well before convergence.
  logits = jnp.matmul(x, weights, precision=jax.lax.Precision.HIGHEST) + bias
  return jnp.where(present, logits, -jnp.inf)


@jax.custom_vjp
def _summed_cross_entropy(weights: jax.Array, bias: jax.Array, features: jax.Array,
                          features_t: jax.Array, targets: jax.Array, row_weights: jax.Array,
                          present: jax.Array) -> jax.Array:
  """sum_i row_weight_i * CE(x_i W + b, y_i), with `targets` = one-hot(y) * row_weight.

  Its gradient is written out to use `features_t` (the features transposed, stored once): on
  XLA's CPU backend X^T R as a plain (d, n) x (n, c) product takes half the time of the
  transposed contraction autodiff forms from X, and these two products are nearly all the work
  of an evaluation.
  """
  return _cross_entropy_and_residual(weights, bias, features, targets, row_weights, present)[0]


def _cross_entropy_and_residual(weights, bias, features, targets, row_weights, present):
  logits = _logits(features, weights, bias, present)
  log_normaliser = jax.nn.logsumexp(logits, axis=1)
  # The absent classes' -inf logits meet zero targets only through `where`, never 0 * -inf.
  picked = jnp.sum(jnp.where(targets > 0, targets * logits, 0.0))
  value = row_weights @ log_normaliser - picked
  # d value / d logits: the softmax times the row weight, minus the targets.
  residual = jnp.exp(logits - log_normaliser[:, None]) * row_weights[:, None] - targets
  return value, residual


def _summed_cross_entropy_forward(weights, bias, features, features_t, targets, row_weights,
                                  present):
  value, residual = _cross_entropy_and_residual(weights, bias, features, targets, row_weights,
                                                present)
  return value, (features_t, residual)


def _summed_cross_entropy_backward(saved, cotangent):
  features_t, residual = saved
  grad_weights = jnp.matmul(features_t, residual, precision=jax.lax.Precision.HIGHEST)
  return (cotangent * grad_weights, cotangent * jnp.sum(residual, axis=0), None, None, None,
          None, None)


_summed_cross_entropy.defvjp(_summed_cross_entropy_forward, _summed_cross_entropy_backward)


@jax.jit
def _solve(prepared: _Prepared, l2: jax.Array, init_weights: jax.Array, init_bias: jax.Array,
           max_iter: jax.Array, tol: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """L-BFGS over (V, b) with W = L^-T V; stops when max |d objective / d(W, b)| <= tol."""
  dims = prepared.covariance.shape[0]
  cholesky = jnp.linalg.cholesky(
      prepared.covariance + (l2 + _PRECONDITIONER_EPS) * jnp.eye(dims, dtype=l2.dtype))
  count = jnp.sum(prepared.row_weights)

  # P = L^-T, formed once per fit so that each evaluation is a small matmul rather than a
  # triangular solve (slow on CPU).
  preconditioner = jax.scipy.linalg.solve_triangular(
      cholesky, jnp.eye(dims, dtype=l2.dtype), trans="T", lower=True)

  def to_weights(v):
    return jnp.matmul(preconditioner, v, precision=jax.lax.Precision.HIGHEST)

  def objective(params):
    weights = to_weights(params["v"])
    data_term = _summed_cross_entropy(weights, params["b"], prepared.features,
                                      prepared.features_t, prepared.targets,
                                      prepared.row_weights, prepared.present)
    return data_term / count + 0.5 * l2 * jnp.sum(weights ** 2)

  def max_gradient(grad):
    # d/dW = L d/dV: the gradient in the caller's coordinates, as scikit-learn measures it.
    grad_w = jnp.matmul(cholesky, grad["v"], precision=jax.lax.Precision.HIGHEST)
    return jnp.maximum(jnp.max(jnp.abs(grad_w)), jnp.max(jnp.abs(grad["b"])))

  solver = optax.lbfgs()
  # Reuses the value and gradient the line search already computed at the accepted point.
  value_and_grad = optax.value_and_grad_from_state(objective)

  def step(carry):
    params, state, stalls = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = solver.update(grad, state, params, value=value, grad=grad,
                                   value_fn=objective)
    new_value = optax.tree.get(state, "value")
    ulp = jnp.finfo(value.dtype).eps * jnp.maximum(jnp.abs(value), 1.0)
    stalls = jnp.where(value - new_value > _NO_PROGRESS_ULPS * ulp, 0, stalls + 1)
    return optax.apply_updates(params, updates), state, stalls

  def keep_going(carry):
    _, state, stalls = carry
    converged = max_gradient(optax.tree.get(state, "grad")) <= tol
    count_ = optax.tree.get(state, "count")
    # The state holds no gradient before the first step, hence the count == 0 clause. Like
    # scipy's L-BFGS-B (scikit-learn's solver), also stop when steps no longer lower the
    # objective: in float32 a tight `tol` can sit below the gradient's rounding noise, and the
    # line search would spin until max_iter. Three flat steps in a row rather than one, so that
    # a single short line-search step does not end the fit.
    return (count_ == 0) | ((count_ < max_iter) & ~converged & (stalls < _MAX_STALLS))

  init_v = jnp.matmul(cholesky.T, init_weights, precision=jax.lax.Precision.HIGHEST)
  params = {"v": init_v, "b": jnp.where(prepared.present, init_bias, 0.0)}
  params, state, _ = jax.lax.while_loop(
      keep_going, step, (params, solver.init(params), jnp.asarray(0)))
  return to_weights(params["v"]), params["b"], optax.tree.get(state, "count")


@jax.jit
def _predict(features: jax.Array, mean: jax.Array, std: jax.Array, weights: jax.Array,
             bias: jax.Array, present: jax.Array) -> jax.Array:
  return jnp.argmax(_logits((features - mean) / std, weights, bias, present), axis=1)


def _check_solver_args(l2: float, max_iter: int, tol: float) -> None:
  if not l2 >= 0:
    raise ValueError(f"l2 must be >= 0, got {l2}.")
  if max_iter < 1:
    raise ValueError(f"max_iter must be >= 1, got {max_iter}.")
  if not tol > 0:
    raise ValueError(f"tol must be > 0, got {tol}.")


def _padded_rows(num_rows: int, num_shards: int) -> int:
  """num_rows rounded up to a multiple of num_shards times a power of two near num_rows / 8.

  Padding (with zero-weight rows) to a coarse size means a held-out sweep and the final refit,
  or probes on slightly different subsets, reuse one compiled solver; it adds at most 1/8 of
  the rows.
  """
  granule = num_shards * 2 ** max(0, int(np.log2(max(num_rows, 1))) - 3)
  return -(-num_rows // granule) * granule


def _prepare_rows(features: np.ndarray, labels: np.ndarray, num_classes: int,
                  mesh: Mesh | None) -> _Prepared:
  """Pads the rows with zero-weight rows (see `_padded_rows`) and shards them over `mesh`."""
  dtype = jnp.result_type(float)
  stride = _covariance_stride(len(labels), features.shape[1])
  num_shards = 1 if mesh is None else mesh.shape[parallel.DATA_AXIS]
  padding = _padded_rows(len(labels), num_shards) - len(labels)
  features = np.pad(np.asarray(features, dtype), ((0, padding), (0, 0)))
  labels = np.pad(labels, (0, padding))
  row_weights = np.pad(np.ones(len(labels) - padding, dtype), (0, padding))
  if mesh is not None:
    sharding = parallel.batch_sharded(mesh)
    features, labels, row_weights = (jax.device_put(array, sharding)
                                     for array in (features, labels, row_weights))
  return _prepare(jnp.asarray(features), jnp.asarray(labels), jnp.asarray(row_weights),
                  num_classes, stride)


def _fit_prepared(prepared: _Prepared, l2: float, max_iter: int, tol: float,
                  init: tuple[jax.Array, jax.Array] | None = None) -> LinearClassifier:
  dims, num_classes = prepared.features.shape[1], prepared.present.shape[0]
  dtype = prepared.features.dtype
  present = np.asarray(prepared.present)
  if init is None:
    init = jnp.zeros((dims, num_classes), dtype), jnp.zeros((num_classes,), dtype)
  if present.sum() == 1:
    weights = np.zeros((dims, num_classes), dtype)
    bias = np.zeros((num_classes,), dtype)
    iterations = 0
  else:
    weights, bias, iterations = _solve(prepared, jnp.asarray(l2, dtype), init[0], init[1],
                                       jnp.asarray(max_iter), jnp.asarray(tol, dtype))
  return LinearClassifier(np.asarray(weights), np.asarray(bias), np.asarray(prepared.mean),
                          np.asarray(prepared.std), present, int(iterations))


def fit_linear_classifier(train_features: np.ndarray, train_labels: np.ndarray, *,
                          num_classes: int, l2: float = 1e-4, max_iter: int = 1000,
                          tol: float = 1e-4, mesh: Mesh | None = None) -> LinearClassifier:
  """Fits L2-regularised multinomial logistic regression on standardised features.

  Args:
    train_features: (n, d) frozen features.
    train_labels: (n,) ints in [0, num_classes).
    num_classes: number of classes; classes without training rows are never predicted.
    l2: weight of (1/2) ||W||^2 added to the mean cross-entropy; l2 = 1 / (C * n) matches
      scikit-learn's `LogisticRegression(C=C)`.
    max_iter: maximum number of L-BFGS iterations.
    tol: stop once every entry of the gradient (with respect to W and b, on the mean-scaled
      objective) is at most tol in magnitude: scikit-learn's rule and default.
    mesh: when given, the training rows are sharded over its `data` axis (padded with
      zero-weight rows to a multiple of its size); the result equals the unsharded one.

  Returns:
    The fitted `LinearClassifier`; its `predict` classifies new features.
  """
  train_features = knn.check_features(train_features, "train_features")
  train_labels = knn.check_labels(train_labels, train_features.shape[0], num_classes,
                                  "train_labels")
  _check_solver_args(l2, max_iter, tol)
  prepared = _prepare_rows(train_features, train_labels, num_classes, mesh)
  return _fit_prepared(prepared, l2, max_iter, tol)


def linear_probe(train_features: np.ndarray, train_labels: np.ndarray,
                 test_features: np.ndarray, *, num_classes: int, l2: float = 1e-4,
                 max_iter: int = 1000, tol: float = 1e-4,
                 mesh: Mesh | None = None) -> np.ndarray:
  """Fits L2-regularised multinomial logistic regression on train, predicts test classes.

  The default l2 = 1e-4 is a light penalty: it keeps the problem strongly convex when classes
  are linearly separable (common for high-dimensional SSL features), where the unpenalised
  optimum is at infinity, while barely shrinking the solution otherwise. Unlike scikit-learn's
  C = 1 (l2 = 1 / n), its strength does not change with the size of the training set. For a
  reported number, choose l2 on held-out rows with `linear_probe_with_selection`.

  Args: as `fit_linear_classifier`, plus test_features: (n_test, d) features to classify.

  Returns:
    (n_test,) int predictions.
  """
  train_features, train_labels, test_features = knn.check_train_test(
      train_features, train_labels, test_features, num_classes)
  classifier = fit_linear_classifier(train_features, train_labels, num_classes=num_classes,
                                     l2=l2, max_iter=max_iter, tol=tol, mesh=mesh)
  return classifier.predict(test_features)


def stratified_holdout(labels: np.ndarray, holdout_fraction: float,
                       seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Splits row indices into (fit, holdout), the same fraction of every class held out.

  Each class holds out round(holdout_fraction * count) of its rows, chosen at random with
  `seed`, but always keeps at least one row for fitting, so a class with a single row is never
  held out (and the holdout may then be empty). Both index arrays are sorted.
  """
  if not 0 < holdout_fraction < 1:
    raise ValueError(f"holdout_fraction must lie in (0, 1), got {holdout_fraction}.")
  rng = np.random.default_rng(seed)
  holdout = []
  for label in np.unique(labels):
    rows = rng.permutation(np.flatnonzero(labels == label))
    size = min(int(round(holdout_fraction * len(rows))), len(rows) - 1)
    holdout.append(rows[:size])
  holdout = np.sort(np.concatenate(holdout))
  fit = np.setdiff1d(np.arange(len(labels)), holdout)
  return fit, holdout


def select_l2(train_features: np.ndarray, train_labels: np.ndarray, *, num_classes: int,
              l2_grid: tuple[float, ...] = DEFAULT_L2_GRID, holdout_fraction: float = 0.2,
              seed: int = 0, max_iter: int = 1000, tol: float = 1e-4,
              mesh: Mesh | None = None) -> L2Selection:
  """Chooses l2 by held-out accuracy on a stratified split of the training rows.

  The rows are split by `stratified_holdout`; the probe is fitted on the fit part for every l2
  in the grid, strongest penalty first, each fit starting from the previous solution, and scored
  on the held-out part. The best accuracy wins; ties go to the stronger penalty (the simpler
  classifier). When no row can be held out (every class has a single row) the selection is
  skipped and `FALLBACK_L2` is returned with NaN accuracies and num_holdout = 0.
  """
  train_features = knn.check_features(train_features, "train_features")
  train_labels = knn.check_labels(train_labels, train_features.shape[0], num_classes,
                                  "train_labels")
  grid = tuple(sorted((float(value) for value in l2_grid), reverse=True))
  if not grid:
    raise ValueError("l2_grid must hold at least one value.")
  for value in grid:
    _check_solver_args(value, max_iter, tol)
  fit_rows, holdout_rows = stratified_holdout(train_labels, holdout_fraction, seed)
  if len(holdout_rows) == 0:
    return L2Selection(FALLBACK_L2, grid, tuple(float("nan") for _ in grid), 0)
  prepared = _prepare_rows(train_features[fit_rows], train_labels[fit_rows], num_classes, mesh)
  holdout_features, holdout_labels = train_features[holdout_rows], train_labels[holdout_rows]
  accuracies, init = [], None
  for value in grid:
    classifier = _fit_prepared(prepared, value, max_iter, tol, init)
    init = jnp.asarray(classifier.weights), jnp.asarray(classifier.bias)
    accuracies.append(float(np.mean(classifier.predict(holdout_features) == holdout_labels)))
  best = int(np.argmax(accuracies))  # the first maximum: the strongest penalty among ties
  return L2Selection(grid[best], grid, tuple(accuracies), len(holdout_rows))


def linear_probe_with_selection(
    train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray, *,
    num_classes: int, l2_grid: tuple[float, ...] = DEFAULT_L2_GRID,
    holdout_fraction: float = 0.2, seed: int = 0, max_iter: int = 1000, tol: float = 1e-4,
    mesh: Mesh | None = None) -> tuple[np.ndarray, L2Selection]:
  """`select_l2` on the training rows, then `linear_probe` on all of them with the chosen l2.

  Returns:
    (n_test,) int predictions, and the `L2Selection` (its `l2` is the value used).
  """
  train_features, train_labels, test_features = knn.check_train_test(
      train_features, train_labels, test_features, num_classes)
  selection = select_l2(train_features, train_labels, num_classes=num_classes, l2_grid=l2_grid,
                        holdout_fraction=holdout_fraction, seed=seed, max_iter=max_iter,
                        tol=tol, mesh=mesh)
  predictions = linear_probe(train_features, train_labels, test_features,
                             num_classes=num_classes, l2=selection.l2, max_iter=max_iter,
                             tol=tol, mesh=mesh)
  return predictions, selection
