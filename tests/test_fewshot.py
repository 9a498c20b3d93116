"""Tests for ssl_jax.eval.fewshot, checked against its own dual form and scikit-learn."""

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import RidgeClassifier
from sklearn.model_selection import train_test_split

from ssl_jax.eval import fewshot

NUM_CLASSES = 10


@pytest.fixture(scope="module")
def digits():
  features, labels = load_digits(return_X_y=True)
  train, test, train_labels, test_labels = train_test_split(
      features, labels, test_size=0.4, random_state=0, stratify=labels)
  return train, train_labels, test, test_labels


@pytest.mark.parametrize("num_rows,dim", [(20, 100), (200, 30)])
def test_primal_and_dual_weights_agree(num_rows, dim):
  rng = np.random.default_rng(0)
  features = rng.standard_normal((num_rows, dim)).astype(np.float32)
  features -= features.mean(axis=0)
  targets = rng.standard_normal((num_rows, 4)).astype(np.float32)
  primal = np.asarray(fewshot._ridge_weights(features, targets, 1.0, dual=False))
  dual = np.asarray(fewshot._ridge_weights(features, targets, 1.0, dual=True))
  assert np.linalg.norm(primal - dual) <= 1e-4 * np.linalg.norm(primal)
  # Both solve the normal equations of the ridge objective.
  normal = (features.T @ features + np.eye(dim)) @ primal
  np.testing.assert_allclose(normal, features.T @ targets, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("num_rows,dim", [(250, 2048), (2500, 256)])
def test_smaller_system_is_accurate_in_float32(num_rows, dim):
  # At these sizes the larger float32 system loses ~1e-3 relative; the smaller one, which
  # ridge_classifier solves, stays within 1e-4 of a float64 reference.
  rng = np.random.default_rng(0)
  features = rng.standard_normal((num_rows, dim)).astype(np.float32)
  features -= features.mean(axis=0)
  targets = rng.standard_normal((num_rows, 4)).astype(np.float32)
  weights = np.asarray(fewshot._ridge_weights(features, targets, 1.0, dual=num_rows < dim))
  features = features.astype(np.float64)
  expected = np.linalg.solve(features.T @ features + np.eye(dim), features.T @ targets)
  assert np.linalg.norm(weights - expected) <= 1e-4 * np.linalg.norm(expected)


# 20 and 50 rows are below the 64 digit features (dual form); 1078 is the full split (primal).
@pytest.mark.parametrize("num_rows", [20, 50, 1078])
@pytest.mark.parametrize("l2", [0.1, 1.0, 10.0])
def test_ridge_classifier_matches_sklearn(digits, num_rows, l2):
  train, train_labels, test, _ = digits
  train, train_labels = train[:num_rows], train_labels[:num_rows]
  predicted = fewshot.ridge_classifier(train, train_labels, test, num_classes=NUM_CLASSES, l2=l2)
  # RidgeClassifier also regresses {-1, +1} targets (LabelBinarizer(pos_label=1, neg_label=-1))
  # with an unpenalised intercept fitted by centring, in float64.
  expected = RidgeClassifier(alpha=l2, fit_intercept=True).fit(train, train_labels).predict(test)
  assert np.mean(predicted == expected) >= 0.995


def test_fewshot_accuracy_rows(digits):
  rows = fewshot.fewshot_accuracy(*digits, num_classes=NUM_CLASSES, shots=(1, 25), seeds=3)
  assert [row["shots"] for row in rows] == [1, 25]
  for row in rows:
    assert set(row) == {"shots", "accuracy", "std", "seeds"}
    assert row["seeds"] == 3
    assert 0.0 <= row["accuracy"] <= 1.0 and row["std"] >= 0.0
  assert rows[1]["accuracy"] > rows[0]["accuracy"] + 0.1
  assert rows[1]["accuracy"] > 0.85


def test_fewshot_accuracy_is_deterministic_per_seed(digits):
  train, train_labels, test, test_labels = digits
  kwargs = dict(num_classes=NUM_CLASSES, shots=(5,), seeds=2)
  first = fewshot.fewshot_accuracy(train, train_labels, test, test_labels, **kwargs)
  assert first == fewshot.fewshot_accuracy(train, train_labels, test, test_labels, **kwargs)
  # One seed is one draw: default_rng(0), 5 rows of each class without replacement, class 0 first.
  rng = np.random.default_rng(0)
  index = np.concatenate([rng.choice(np.flatnonzero(train_labels == c), 5, replace=False)
                          for c in range(NUM_CLASSES)])
  predicted = fewshot.ridge_classifier(train[index], train_labels[index], test,
                                       num_classes=NUM_CLASSES)
  single = fewshot.fewshot_accuracy(train, train_labels, test, test_labels,
                                    num_classes=NUM_CLASSES, shots=(5,), seeds=1)
  assert single == [{"shots": 5, "accuracy": float(np.mean(predicted == test_labels)),
                     "std": 0.0, "seeds": 1}]


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_features_are_rejected(digits, bad):
  train, train_labels, test, test_labels = digits
  corrupted = train.copy()
  corrupted[3, 7] = bad
  with pytest.raises(ValueError, match="NaN or infinite"):
    fewshot.ridge_classifier(corrupted, train_labels, test, num_classes=NUM_CLASSES)
  corrupted = test.copy()
  corrupted[0, 0] = bad
  with pytest.raises(ValueError, match="NaN or infinite"):
    fewshot.fewshot_accuracy(train, train_labels, corrupted, test_labels,
                             num_classes=NUM_CLASSES)


def test_too_few_examples_names_the_class(digits):
  train, train_labels, test, test_labels = digits
  keep = np.flatnonzero(train_labels != 3)
  keep = np.concatenate([keep, np.flatnonzero(train_labels == 3)[:4]])
  with pytest.raises(ValueError, match="Class 3 has 4 training examples"):
    fewshot.fewshot_accuracy(train[keep], train_labels[keep], test, test_labels,
                             num_classes=NUM_CLASSES, shots=(1, 5))


def test_invalid_arguments_are_rejected(digits):
  train, train_labels, test, test_labels = digits
  with pytest.raises(ValueError, match="l2 must be > 0"):
    fewshot.ridge_classifier(train, train_labels, test, num_classes=NUM_CLASSES, l2=0.0)
  with pytest.raises(ValueError, match="Feature dimensions differ"):
    fewshot.ridge_classifier(train, train_labels, test[:, :10], num_classes=NUM_CLASSES)
  with pytest.raises(ValueError, match="shots must be"):
    fewshot.fewshot_accuracy(train, train_labels, test, test_labels, num_classes=NUM_CLASSES,
                             shots=(0,))
  with pytest.raises(ValueError, match="seeds must be"):
    fewshot.fewshot_accuracy(train, train_labels, test, test_labels, num_classes=NUM_CLASSES,
                             seeds=0)
