"""Tests for ssl_jax.eval.linear_probe, checked against scikit-learn's LogisticRegression."""

import jax
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from ssl_jax import parallel
from ssl_jax.eval import linear_probe

GRID = (1.0, 1e-1, 1e-2, 1e-3, 1e-4)


@pytest.fixture(scope="module")
def digits_split():
  features, labels = load_digits(return_X_y=True)
  # 1,257 train rows: not a multiple of 8, so the sharded fit needs padding.
  return train_test_split(features, labels, test_size=0.3, random_state=0, stratify=labels)


def _sklearn_fit(train, train_labels, l2, tol):
  scaler = StandardScaler().fit(train)
  model = LogisticRegression(C=1.0 / (l2 * len(train)), tol=tol, max_iter=10000)
  return scaler, model.fit(scaler.transform(train), train_labels)


def test_weights_match_sklearn_at_tight_tolerance(digits_split):
  train, test, train_labels, _ = digits_split
  # In float32 the objective cannot resolve weights to better than ~1e-3 along weakly curved
  # directions, so this comparison runs in float64.
  with jax.enable_x64(True):
    classifier = linear_probe.fit_linear_classifier(train, train_labels, num_classes=10,
                                                    l2=1e-2, tol=1e-8)
  scaler, model = _sklearn_fit(train, train_labels, 1e-2, tol=1e-8)
  np.testing.assert_allclose(classifier.weights, model.coef_.T, atol=1e-4)
  # The unpenalised intercepts are defined up to a shared constant.
  np.testing.assert_allclose(classifier.bias - classifier.bias.mean(),
                             model.intercept_ - model.intercept_.mean(), atol=1e-4)
  np.testing.assert_array_equal(classifier.predict(test),
                                model.predict(scaler.transform(test)))


def test_default_stopping_rule_matches_sklearn_default(digits_split):
  # Both stop at max |gradient| <= 1e-4 on the same mean-scaled objective, at a weak penalty
  # where the optimum is far from the start, so the tolerance matters.
  train, test, train_labels, test_labels = digits_split
  predicted = linear_probe.linear_probe(train, train_labels, test, num_classes=10, l2=1e-4)
  scaler, model = _sklearn_fit(train, train_labels, 1e-4, tol=1e-4)
  expected = model.predict(scaler.transform(test))
  assert abs(np.mean(predicted == test_labels) - np.mean(expected == test_labels)) <= 0.005
  assert np.mean(predicted == expected) >= 0.99


def test_stratified_holdout_keeps_class_fractions():
  labels = np.repeat(np.arange(3), [10, 5, 1])
  fit, holdout = linear_probe.stratified_holdout(labels, 0.2, seed=3)
  np.testing.assert_array_equal(np.bincount(labels[holdout], minlength=3), [2, 1, 0])
  np.testing.assert_array_equal(np.sort(np.concatenate([fit, holdout])), np.arange(16))
  again = linear_probe.stratified_holdout(labels, 0.2, seed=3)
  np.testing.assert_array_equal(holdout, again[1])
  with pytest.raises(ValueError, match="holdout_fraction"):
    linear_probe.stratified_holdout(labels, 1.0, seed=0)


def test_select_l2_matches_sklearn_on_the_same_split(digits_split):
  train, _, train_labels, _ = digits_split
  selection = linear_probe.select_l2(train, train_labels, num_classes=10, l2_grid=GRID[::-1],
                                     holdout_fraction=0.25, seed=1, tol=1e-6)
  assert selection.l2_grid == GRID  # fitted strongest first, whatever order was given
  fit, holdout = linear_probe.stratified_holdout(train_labels, 0.25, seed=1)
  assert selection.num_holdout == len(holdout)
  expected = []
  for l2 in GRID:
    scaler, model = _sklearn_fit(train[fit], train_labels[fit], l2, tol=1e-6)
    predicted = model.predict(scaler.transform(train[holdout]))
    expected.append(np.mean(predicted == train_labels[holdout]))
  np.testing.assert_allclose(selection.holdout_accuracy, expected, atol=1.5 / len(holdout))
  assert selection.l2 == GRID[int(np.argmax(expected))]
  assert selection.holdout_accuracy[GRID.index(selection.l2)] == max(selection.holdout_accuracy)


def test_selection_refits_on_all_rows_with_the_chosen_l2(digits_split):
  train, test, train_labels, _ = digits_split
  predicted, selection = linear_probe.linear_probe_with_selection(
      train, train_labels, test, num_classes=10, l2_grid=GRID[:3], seed=0)
  expected = linear_probe.linear_probe(train, train_labels, test, num_classes=10,
                                       l2=selection.l2)
  np.testing.assert_array_equal(predicted, expected)


def test_selection_ties_go_to_the_stronger_penalty():
  # Two well-separated clusters: every l2 in the grid classifies the held-out rows perfectly.
  rng = np.random.default_rng(0)
  labels = np.repeat([0, 1], 20)
  features = 10.0 * labels[:, None] + rng.standard_normal((40, 3))
  selection = linear_probe.select_l2(features, labels, num_classes=2, l2_grid=(1e-3, 1e-1, 1e-2))
  assert selection.holdout_accuracy == (1.0, 1.0, 1.0)
  assert selection.l2 == 1e-1


def test_selection_is_skipped_when_no_row_can_be_held_out():
  features = np.eye(3)
  selection = linear_probe.select_l2(features, np.arange(3), num_classes=3)
  assert selection.l2 == linear_probe.FALLBACK_L2 and selection.num_holdout == 0
  assert np.all(np.isnan(selection.holdout_accuracy))


def test_sharded_fit_equals_single_device(digits_split):
  assert jax.device_count() == 8
  train, test, train_labels, _ = digits_split
  mesh = parallel.make_mesh()
  with jax.enable_x64(True):  # float32 rounding differs with the reduction order
    single = linear_probe.fit_linear_classifier(train, train_labels, num_classes=10, l2=1e-2,
                                                tol=1e-6)
    sharded = linear_probe.fit_linear_classifier(train, train_labels, num_classes=10, l2=1e-2,
                                                 tol=1e-6, mesh=mesh)
  np.testing.assert_allclose(sharded.weights, single.weights, atol=1e-5)
  np.testing.assert_allclose(sharded.bias, single.bias, atol=1e-5)
  np.testing.assert_allclose(sharded.mean, single.mean, rtol=1e-5)
  np.testing.assert_array_equal(sharded.predict(test), single.predict(test))


def test_one_training_class_predicts_it_everywhere(digits_split):
  train, test, _, _ = digits_split
  classifier = linear_probe.fit_linear_classifier(train, np.full(len(train), 3), num_classes=10)
  assert classifier.num_iterations == 0
  np.testing.assert_array_equal(classifier.predict(test), 3)


def test_class_without_training_rows_is_never_predicted(digits_split):
  train, test, train_labels, _ = digits_split
  keep = train_labels != 9
  classifier = linear_probe.fit_linear_classifier(train[keep], train_labels[keep],
                                                  num_classes=10, l2=1e-2, tol=1e-6)
  predicted = classifier.predict(test)
  assert not np.any(predicted == 9)
  assert np.all(classifier.weights[:, 9] == 0) and classifier.bias[9] == 0
  # The other nine classes are the nine-class problem scikit-learn solves.
  scaler, model = _sklearn_fit(train[keep], train_labels[keep], 1e-2, tol=1e-8)
  assert np.mean(predicted == model.predict(scaler.transform(test))) >= 0.995


def test_rejects_bad_inputs(digits_split):
  train, test, train_labels, _ = digits_split
  bad = train.copy()
  bad[5, 7] = np.nan
  with pytest.raises(ValueError, match="contain NaN"):
    linear_probe.linear_probe(bad, train_labels, test, num_classes=10)
  with pytest.raises(ValueError, match="contain NaN"):
    linear_probe.linear_probe_with_selection(train, train_labels, bad, num_classes=10)
  with pytest.raises(ValueError, match="l2 must be >= 0"):
    linear_probe.select_l2(train, train_labels, num_classes=10, l2_grid=(1.0, -1.0))
  with pytest.raises(ValueError, match="tol must be > 0"):
    linear_probe.linear_probe(train, train_labels, test, num_classes=10, tol=0.0)
  with pytest.raises(ValueError, match="train_labels must lie in"):
    linear_probe.linear_probe(train, train_labels, test, num_classes=9)


def test_evaluation_protocol_uses_the_configured_l2_rule(digits_split):
  """`probes.run_protocol("linear")`: "fixed" is scikit-learn's C per labelled row, "heldout"
  is `linear_probe_with_selection` seeded by the draw (sharding is tested above)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from ssl_jax.evaluators import probes  # pylint: disable=g-import-not-at-top
  train, test, train_labels, test_labels = digits_split
  labelled = np.arange(300)
  settings = ml_collections.ConfigDict(dict(linear_c=1.0, linear_max_iter=1000, linear_tol=1e-4,
                                            linear_l2="fixed"))
  fixed = probes.run_protocol("linear", (train, train_labels), (test, test_labels), labelled,
                              10, settings)
  expected = linear_probe.linear_probe(train[:300], train_labels[:300], test, num_classes=10,
                                       l2=1.0 / 300)
  assert fixed == np.mean(expected == test_labels)
  settings.linear_l2 = "heldout"
  heldout = probes.run_protocol("linear", (train, train_labels), (test, test_labels), labelled,
                                10, settings, seed=1)
  predictions, _ = linear_probe.linear_probe_with_selection(
      train[:300], train_labels[:300], test, num_classes=10, seed=1)
  assert heldout == np.mean(predictions == test_labels)
