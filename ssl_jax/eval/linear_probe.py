"""Linear probe: multinomial logistic regression on frozen features, solved with L-BFGS.

The linear-evaluation protocol of self-supervised learning (e.g. Chen et al. 2020, SimCLR;
Caron et al. 2021, DINO) fits a linear classifier on frozen features and reports its test
accuracy, measuring how linearly separable the representation makes the classes. On feature
matrices small enough to hold in memory the convex problem is solved to convergence with
full-batch L-BFGS (Liu & Nocedal 1989), which removes the learning-rate and epoch sweeps that
SGD probes need.

Objective, on features standardised with the training mean and standard deviation:

  mean_i CE(W x_i + b, y_i) + (l2 / 2) * ||W||^2      (the bias b is not penalised)

Relation to scikit-learn: `LogisticRegression(C=C)` (lbfgs, multinomial) minimises
C * sum_i CE_i + ||W||^2 / 2, which divided by C * n is the objective above with
l2 = 1 / (C * n). Both have a unique minimiser, so with tight tolerances they find the same
classifier.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssl_jax.eval import knn


def _standardise(train: jax.Array, test: jax.Array) -> tuple[jax.Array, jax.Array]:
  mean = jnp.mean(train, axis=0)
  std = jnp.std(train, axis=0)
  # A feature (near-)constant on the training set carries no signal; dividing it by its tiny std
  # would blow up its test values. Like scikit-learn's StandardScaler, only centre it instead:
  # its weight gets zero gradient from the data and is held at zero by the penalty.
  std = jnp.where(std < 1e-6, 1.0, std)
  return (train - mean) / std, (test - mean) / std


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _fit_and_predict(train: jax.Array, labels: jax.Array, test: jax.Array, num_classes: int,
                     l2: float, max_iter: int, tol: float) -> jax.Array:
  train, test = _standardise(train, test)

  def logits(params, x):
    # Without HIGHEST, GPUs/TPUs compute f32 matmuls in TF32/bf16, whose gradient noise stalls
    # the line search well before convergence.
    return jnp.matmul(x, params["w"], precision=jax.lax.Precision.HIGHEST) + params["b"]

  def objective(params):
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits(params, train), labels)
    return jnp.mean(cross_entropy) + 0.5 * l2 * jnp.sum(params["w"] ** 2)

  solver = optax.lbfgs()
  # Reuses the value and gradient the line search already computed at the accepted point.
  value_and_grad = optax.value_and_grad_from_state(objective)

  def step(carry):
    params, state = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = solver.update(grad, state, params, value=value, grad=grad,
                                   value_fn=objective)
    return optax.apply_updates(params, updates), state

  def keep_going(carry):
    _, state = carry
    count = optax.tree.get(state, "count")
    grad_norm = optax.tree.norm(optax.tree.get(state, "grad"))
    # The state holds no gradient before the first step, hence the count == 0 clause.
    return (count == 0) | ((count < max_iter) & (grad_norm >= tol))

  params = {
      "w": jnp.zeros((train.shape[1], num_classes), train.dtype),
      "b": jnp.zeros((num_classes,), train.dtype),
  }
  params, _ = jax.lax.while_loop(keep_going, step, (params, solver.init(params)))
  return jnp.argmax(logits(params, test), axis=1)


def linear_probe(train_features: np.ndarray, train_labels: np.ndarray,
                 test_features: np.ndarray, *, num_classes: int, l2: float = 1e-4,
                 max_iter: int = 1000, tol: float = 1e-5) -> np.ndarray:
  """Fits L2-regularised multinomial logistic regression on train, predicts test classes.

  The default l2 = 1e-4 is a light penalty: it keeps the problem strongly convex when classes
  are linearly separable (common for high-dimensional SSL features), where the unpenalised
  optimum is at infinity, while barely shrinking the solution otherwise. Unlike scikit-learn's
  C = 1 (l2 = 1 / n), its strength does not change with the size of the training set. For a
  reported number, sweep l2 on a validation split.

  Args:
    train_features: (n_train, d) frozen features.
    train_labels: (n_train,) ints in [0, num_classes).
    test_features: (n_test, d) features to classify.
    num_classes: number of classes.
    l2: weight of (1/2) ||W||^2 added to the mean cross-entropy; l2 = 1 / (C * n_train)
      matches scikit-learn's `LogisticRegression(C=C)`.
    max_iter: maximum number of L-BFGS iterations.
    tol: stop once the L2 norm of the gradient falls below this.

  Returns:
    (n_test,) int predictions.
  """
  train_features, train_labels, test_features = knn.check_train_test(
      train_features, train_labels, test_features, num_classes)
  if l2 < 0:
    raise ValueError(f"l2 must be >= 0, got {l2}.")
  if max_iter < 1:
    raise ValueError(f"max_iter must be >= 1, got {max_iter}.")
  dtype = jnp.result_type(float)
  predictions = _fit_and_predict(
      jnp.asarray(train_features, dtype), jnp.asarray(train_labels),
      jnp.asarray(test_features, dtype), num_classes, l2, max_iter, tol)
  return np.asarray(predictions)
