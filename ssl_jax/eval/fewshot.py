"""Few-shot classification on frozen features by closed-form ridge regression.

The few-shot linear protocol of Kolesnikov et al. 2020 ("Big Transfer (BiT): General Visual
Representation Learning") and Dosovitskiy et al. 2021 ("An Image is Worth 16x16 Words", appendix),
implemented in big_vision as `evaluators/fewshot_lsr.py`: take k labelled examples per class,
regress their one-hot targets written in {-1, +1} with L2-regularised least squares, and predict
the class whose output is largest. The fit is one linear solve, with no learning rate, epochs or
iterative optimiser, so it is cheap enough to repeat over several shot counts and random draws.

With the features X centred by their training mean and the targets Y in {-1, +1}, the weights
minimise ||Xc W - (Y - mean(Y))||^2 + l2 ||W||^2, and the scores of a test row x are

  (x - mean(X)) W + mean(Y)                           (the bias mean(Y) is not penalised)

This is exactly scikit-learn's `RidgeClassifier(alpha=l2, fit_intercept=True)`, which also
binarises the labels to {-1, +1} (`LabelBinarizer(pos_label=1, neg_label=-1)`) and fits the
intercept by centring X and Y.

The weights have two equal closed forms:

  primal: W = (Xc^T Xc + l2 I_d)^-1 Xc^T Yc           a (d x d) system
  dual:   W = Xc^T (Xc Xc^T + l2 I_n)^-1 Yc           an (n x n) system

and the smaller system is solved. With 1-25 shots per class n is far below the feature
dimension d of most backbones, so the dual form turns a d x d solve into a small n x n one.
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.eval import knn


def _matmul(a: jax.Array, b: jax.Array) -> jax.Array:
  # Without HIGHEST, GPUs/TPUs compute f32 matmuls in TF32/bf16, whose ~3 significant digits would
  # dominate the error of the Gram matrices and hence of the solve.
  return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


@functools.partial(jax.jit, static_argnames=("dual",))
def _ridge_weights(features: jax.Array, targets: jax.Array, l2: float, dual: bool) -> jax.Array:
  """Solves min_W ||features W - targets||^2 + l2 ||W||^2 in its primal or dual form.

  Both forms give the same (d x num_outputs) weights; `dual` only picks which system is solved.
  The inputs are expected to be centred already (centring is how the bias is handled).
  """
  num_rows, dim = features.shape
  if dual:
    gram = _matmul(features, features.T) + l2 * jnp.eye(num_rows, dtype=features.dtype)
    return _matmul(features.T, jnp.linalg.solve(gram, targets))
  gram = _matmul(features.T, features) + l2 * jnp.eye(dim, dtype=features.dtype)
  return jnp.linalg.solve(gram, _matmul(features.T, targets))


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _fit_and_predict(train: jax.Array, labels: jax.Array, test: jax.Array, num_classes: int,
                     l2: float) -> jax.Array:
  mean = jnp.mean(train, axis=0)
  train, test = train - mean, test - mean
  targets = 2.0 * jax.nn.one_hot(labels, num_classes, dtype=train.dtype) - 1.0
  bias = jnp.mean(targets, axis=0)
  # Shapes are static under jit, so this picks the smaller system at trace time.
  weights = _ridge_weights(train, targets - bias, l2, dual=train.shape[0] < train.shape[1])
  return jnp.argmax(_matmul(test, weights) + bias, axis=1)


def _check_inputs(train_features: np.ndarray, train_labels: np.ndarray,
                  test_features: np.ndarray, num_classes: int,
                  l2: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  train_features, train_labels, test_features = knn.check_train_test(
      train_features, train_labels, test_features, num_classes)
  # The penalty is what keeps the dual system (rank <= n - 1 after centring) invertible.
  if not l2 > 0:
    raise ValueError(f"l2 must be > 0, got {l2}.")
  return train_features, train_labels, test_features


def ridge_classifier(train_features: np.ndarray, train_labels: np.ndarray,
                     test_features: np.ndarray, *, num_classes: int,
                     l2: float = 1.0) -> np.ndarray:
  """Fits ridge regression to {-1, +1} one-hot targets on train, predicts test classes.

  The big_vision / BiT few-shot classifier, identical to scikit-learn's
  `RidgeClassifier(alpha=l2, fit_intercept=True)`: features are centred with the training mean,
  the unpenalised bias is the mean target, and the weights come from one float32 linear solve
  (the dual form when n_train < d). A test row gets the class with the largest score (the
  smallest class index on an exact tie). A class absent from train scores -1 everywhere.

  Args:
    train_features: (n_train, d) frozen features.
    train_labels: (n_train,) ints in [0, num_classes).
    test_features: (n_test, d) features to classify.
    num_classes: number of classes.
    l2: weight of ||W||^2 added to the summed squared error; must be > 0.

  Returns:
    (n_test,) int predictions.
  """
  train_features, train_labels, test_features = _check_inputs(
      train_features, train_labels, test_features, num_classes, l2)
  predictions = _fit_and_predict(
      jnp.asarray(train_features, jnp.float32), jnp.asarray(train_labels),
      jnp.asarray(test_features, jnp.float32), num_classes, l2)
  return np.asarray(predictions)


def _sample_shots(labels: np.ndarray, shots: int, num_classes: int, seed: int) -> np.ndarray:
  """Row indices of `shots` examples per class, drawn without replacement, class 0 first."""
  rng = np.random.default_rng(seed)
  return np.concatenate([rng.choice(np.flatnonzero(labels == c), shots, replace=False)
                         for c in range(num_classes)])


def fewshot_accuracy(train_features: np.ndarray, train_labels: np.ndarray,
                     test_features: np.ndarray, test_labels: np.ndarray, *, num_classes: int,
                     shots: Sequence[int] = (1, 5, 10, 25), seeds: int = 3,
                     l2: float = 1.0) -> list[dict]:
  """Test accuracy of `ridge_classifier` fitted on k examples per class, for each k in `shots`.

  The BiT / ViT few-shot protocol: for every shot count k and every seed s in range(seeds), draw
  k training rows of each class without replacement using `np.random.default_rng(s)` (class 0's
  rows first, then class 1's, ...), fit the ridge classifier on those k * num_classes rows, and
  score it on the whole test set. Each draw is a deterministic function of (k, s), so results
  are reproducible and comparable across feature extractors evaluated on the same labels.

  Args:
    train_features: (n_train, d) frozen features the shots are drawn from.
    train_labels: (n_train,) ints in [0, num_classes); every class needs >= max(shots) rows.
    test_features: (n_test, d) features to evaluate on.
    test_labels: (n_test,) ints in [0, num_classes).
    num_classes: number of classes.
    shots: examples per class to fit on, one result row per entry.
    seeds: number of random draws per shot count.
    l2: ridge penalty, as in `ridge_classifier`.

  Returns:
    One dict per shot count, in the order of `shots`: {"shots": k, "accuracy": mean test
    accuracy over the seeds, "std": its population standard deviation (0 for one seed),
    "seeds": seeds}.
  """
  train_features, train_labels, test_features = _check_inputs(
      train_features, train_labels, test_features, num_classes, l2)
  test_labels = knn.check_labels(test_labels, test_features.shape[0], num_classes, "test_labels")
  shots = list(shots)
  if not shots or min(shots) < 1:
    raise ValueError(f"shots must be a non-empty sequence of ints >= 1, got {shots}.")
  if seeds < 1:
    raise ValueError(f"seeds must be >= 1, got {seeds}.")
  counts = np.bincount(train_labels, minlength=num_classes)
  for c in range(num_classes):
    if counts[c] < max(shots):
      raise ValueError(f"Class {c} has {counts[c]} training examples, fewer than the "
                       f"{max(shots)} shots requested.")

  # Converted once: the test set is reused by every fit.
  train = jnp.asarray(train_features, jnp.float32)
  test = jnp.asarray(test_features, jnp.float32)
  rows = []
  for k in shots:
    accuracies = []
    for seed in range(seeds):
      index = _sample_shots(train_labels, k, num_classes, seed)
      predictions = _fit_and_predict(train[index], jnp.asarray(train_labels[index]), test,
                                     num_classes, l2)
      accuracies.append(float(np.mean(np.asarray(predictions) == test_labels)))
    rows.append({"shots": k, "accuracy": float(np.mean(accuracies)),
                 "std": float(np.std(accuracies)), "seeds": seeds})
  return rows
