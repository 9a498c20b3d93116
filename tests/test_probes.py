"""Tests for the frozen-feature probes in ssl_jax.eval, checked against NumPy and scikit-learn."""

import warnings

import jax
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors
from sklearn.preprocessing import StandardScaler
from sklearn.semi_supervised import LabelPropagation, LabelSpreading

from ssl_jax import parallel
from ssl_jax.eval import approximate_neighbours, knn, label_propagation, linear_probe

NUM_CLASSES = 5


def _clustered(num_rows: int, seed: int, dim: int = 16, spread: float = 2.0):
  """Overlapping Gaussian clusters, so that votes are often split between classes."""
  rng = np.random.default_rng(seed)
  centres = np.random.default_rng(1234).standard_normal((NUM_CLASSES, dim))
  labels = rng.integers(0, NUM_CLASSES, num_rows)
  return centres[labels] + spread * rng.standard_normal((num_rows, dim)), labels


def _numpy_knn(train, train_labels, query, k, temperature, num_classes):
  train = train / np.linalg.norm(train, axis=1, keepdims=True)
  query = query / np.linalg.norm(query, axis=1, keepdims=True)
  similarities = query @ train.T
  neighbours = np.argsort(-similarities, axis=1)[:, :k]
  votes = np.zeros((len(query), num_classes))
  for row, cols in enumerate(neighbours):
    np.add.at(votes[row], train_labels[cols], np.exp(similarities[row, cols] / temperature))
  return votes.argmax(axis=1)


@pytest.fixture(scope="module")
def knn_data():
  train, train_labels = _clustered(400, seed=0)
  query, query_labels = _clustered(150, seed=1)
  return train, train_labels, query, query_labels


@pytest.mark.parametrize("k,temperature", [(20, 0.07), (5, 0.5), (50, 0.02)])
def test_knn_matches_numpy_reference(knn_data, k, temperature):
  train, train_labels, query, query_labels = knn_data
  expected = _numpy_knn(train, train_labels, query, k, temperature, NUM_CLASSES)
  predicted = knn.knn_predict(train, train_labels, query, num_classes=NUM_CLASSES, k=k,
                              temperature=temperature)
  np.testing.assert_array_equal(predicted, expected)
  # Sanity check that the task is neither trivial nor hopeless.
  assert 0.5 < np.mean(predicted == query_labels) < 0.9


def test_knn_matches_sklearn_weighted_classifier(knn_data):
  train, train_labels, query, _ = knn_data
  k, temperature = 20, 0.07
  sklearn_knn = KNeighborsClassifier(
      n_neighbors=k, metric="cosine", algorithm="brute",
      weights=lambda distances: np.exp((1.0 - distances) / temperature)).fit(train, train_labels)
  expected = sklearn_knn.predict(query)
  predicted = knn.knn_predict(train, train_labels, query, num_classes=NUM_CLASSES, k=k,
                              temperature=temperature)
  np.testing.assert_array_equal(predicted, expected)
  # The weighting must matter on this data, or the test above could not catch a wrong weight.
  uniform = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute")
  assert np.any(uniform.fit(train, train_labels).predict(query) != expected)


def test_knn_chunked_equals_unchunked(knn_data):
  train, train_labels, query, _ = knn_data
  kwargs = dict(num_classes=NUM_CLASSES, k=20, temperature=0.07)
  np.testing.assert_array_equal(
      knn.knn_predict(train, train_labels, query, chunk_size=7, **kwargs),
      knn.knn_predict(train, train_labels, query, chunk_size=1024, **kwargs))
  for metric in knn.METRICS:
    small_values, small_indices = knn.top_k_neighbours(query, train, 9, 7, metric)
    large_values, large_indices = knn.top_k_neighbours(query, train, 9, 1024, metric)
    np.testing.assert_array_equal(small_indices, large_indices)
    np.testing.assert_allclose(small_values, large_values, rtol=1e-6, atol=1e-6)


def test_knn_k_larger_than_train_set(knn_data):
  train, train_labels, query, _ = knn_data
  train, train_labels = train[:12], train_labels[:12]
  predicted = knn.knn_predict(train, train_labels, query, num_classes=NUM_CLASSES, k=50)
  expected = _numpy_knn(train, train_labels, query, 12, 0.07, NUM_CLASSES)
  np.testing.assert_array_equal(predicted, expected)
  values, indices = knn.top_k_neighbours(query, train, 50, 16, "cosine")
  assert values.shape == indices.shape == (len(query), 12)


@pytest.mark.parametrize("preset", sorted(knn.KNN_PRESETS))
def test_knn_presets_match_numpy_reference(knn_data, preset):
  train, train_labels, query, _ = knn_data
  settings = knn.KNN_PRESETS[preset]
  expected = _numpy_knn(train, train_labels, query, settings["k"], settings["temperature"],
                        NUM_CLASSES)
  predicted = knn.knn_predict(train, train_labels, query, num_classes=NUM_CLASSES, **settings)
  np.testing.assert_array_equal(predicted, expected)
  assert knn.KNN_PRESETS["dino_20"] == {"k": 20, "temperature": 0.07}


@pytest.mark.parametrize("num_devices", [8, 3])
def test_knn_sharded_equals_single_device(knn_data, num_devices):
  train, train_labels, query, _ = knn_data
  assert len(jax.devices()) >= num_devices  # tests/conftest.py asks for 8 fake CPU devices.
  mesh = parallel.make_mesh(num_devices)
  # 403 keys do not split evenly over 8 or 3 devices, so the padding is exercised; k = n_keys
  # compares the whole ranking, near-ties included.
  train, train_labels = np.concatenate([train, train[:3]]), np.concatenate([train_labels,
                                                                            train_labels[:3]])
  for metric, k in (("cosine", len(train)), ("euclidean", 9)):
    values, indices = knn.top_k_neighbours(query, train, k, 64, metric)
    sharded_values, sharded_indices = knn.top_k_neighbours(query, train, k, 64, metric, mesh=mesh)
    np.testing.assert_array_equal(sharded_indices, indices)
    np.testing.assert_array_equal(sharded_values, values)
  kwargs = dict(num_classes=NUM_CLASSES, k=20, temperature=0.07)
  np.testing.assert_array_equal(
      knn.knn_predict(train, train_labels, query, mesh=mesh, **kwargs),
      knn.knn_predict(train, train_labels, query, **kwargs))


def test_knn_sharded_over_more_devices_than_keys(knn_data):
  train, train_labels, query, _ = knn_data
  mesh = parallel.make_mesh(8)
  values, indices = knn.top_k_neighbours(query, train[:5], 20, 16, "cosine", mesh=mesh)
  expected_values, expected_indices = knn.top_k_neighbours(query, train[:5], 20, 16, "cosine")
  assert indices.shape == (len(query), 5)
  np.testing.assert_array_equal(indices, expected_indices)
  np.testing.assert_array_equal(values, expected_values)


def test_knn_rejects_mesh_without_data_axis(knn_data):
  train, _, query, _ = knn_data
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:2]), ("model",))
  with pytest.raises(ValueError, match="no 'data' axis"):
    knn.top_k_neighbours(query, train, 5, 16, "cosine", mesh=mesh)


def test_knn_one_class_and_missing_class(knn_data):
  train, train_labels, query, _ = knn_data
  # A single training class: every query gets it, as in scikit-learn.
  one_class = np.full_like(train_labels, 3)
  np.testing.assert_array_equal(
      knn.knn_predict(train, one_class, query, num_classes=NUM_CLASSES), 3)
  # A class with no training row is never predicted; the rest matches scikit-learn.
  keep = train_labels != 2
  predicted = knn.knn_predict(train[keep], train_labels[keep], query, num_classes=NUM_CLASSES)
  expected = KNeighborsClassifier(
      n_neighbors=20, metric="cosine", algorithm="brute",
      weights=lambda distances: np.exp((1.0 - distances) / 0.07)).fit(
          train[keep], train_labels[keep]).predict(query)
  assert not np.any(predicted == 2)
  np.testing.assert_array_equal(predicted, expected)


def test_euclidean_neighbours_match_sklearn(knn_data):
  train, _, query, _ = knn_data
  expected_distances, expected_indices = NearestNeighbors(n_neighbors=8).fit(train).kneighbors(
      query)
  distances, indices = knn.top_k_neighbours(query, train, 8, 64, "euclidean")
  np.testing.assert_array_equal(indices, expected_indices)
  np.testing.assert_allclose(distances, expected_distances, rtol=1e-4)


def test_knn_rejects_bad_features(knn_data):
  train, train_labels, query, _ = knn_data
  for bad_value in (np.nan, np.inf):
    bad = query.copy()
    bad[3, 2] = bad_value
    with pytest.raises(ValueError, match="contain NaN"):
      knn.knn_predict(train, train_labels, bad, num_classes=NUM_CLASSES)
  with pytest.raises(ValueError, match="dimensions differ"):
    knn.knn_predict(train, train_labels, query[:, :-1], num_classes=NUM_CLASSES)
  with pytest.raises(ValueError, match="train_labels"):
    knn.knn_predict(train, train_labels + NUM_CLASSES, query, num_classes=NUM_CLASSES)


@pytest.fixture(scope="module")
def digits():
  features, labels = load_digits(return_X_y=True)
  return features, labels


def _jittered(features):
  # Digits are small integers, so many rows have exactly equidistant k-th and (k+1)-th neighbours,
  # and which one scikit-learn keeps depends on how it batches queries (not on the index). A tiny
  # jitter splits those ties by ~0.1 in squared distance, far above float32 rounding.
  return features + 1e-3 * np.random.default_rng(0).standard_normal(features.shape)


def _few_labels(labels, per_class, seed, classes=range(10)):
  rng = np.random.default_rng(seed)
  partial = np.full_like(labels, -1)
  for c in classes:
    partial[rng.choice(np.flatnonzero(labels == c), per_class, replace=False)] = c
  return partial


def _sklearn_spreading(features, partial_labels, **kwargs):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # ConvergenceWarning when max_iter is reached on purpose.
    return LabelSpreading(kernel="knn", **kwargs).fit(features, partial_labels)


@pytest.mark.parametrize("per_class,params", [
    (1, dict(n_neighbors=7, alpha=0.2, max_iter=30, tol=1e-3)),
    (5, dict(n_neighbors=7, alpha=0.2, max_iter=30, tol=1e-3)),
    (5, dict(n_neighbors=12, alpha=0.9, max_iter=4, tol=1e-3)),  # Stops at max_iter.
    (5, dict(n_neighbors=3, alpha=0.5, max_iter=50, tol=1e-6)),  # Many rows no label reaches.
])
def test_label_spreading_matches_sklearn(digits, per_class, params):
  features, labels = digits
  features = _jittered(features)
  partial = _few_labels(labels, per_class, seed=0)
  expected = _sklearn_spreading(features, partial, **params)
  predicted = label_propagation.label_spreading(features, partial, num_classes=10, **params)
  distributions = label_propagation.label_distributions(features, partial, num_classes=10,
                                                        **params)
  np.testing.assert_array_equal(predicted, expected.transduction_)
  np.testing.assert_allclose(distributions, expected.label_distributions_, atol=1e-5)


def test_label_spreading_close_to_sklearn_on_tied_raw_digits(digits):
  features, labels = digits
  for per_class in (1, 5):
    partial = _few_labels(labels, per_class, seed=per_class)
    expected = _sklearn_spreading(features, partial).transduction_
    predicted = label_propagation.label_spreading(features, partial, num_classes=10)
    assert np.mean(predicted != expected) <= 0.01


def test_label_spreading_chunked_equals_unchunked(digits):
  features, labels = digits
  partial = _few_labels(labels, 2, seed=7)
  np.testing.assert_array_equal(
      label_propagation.label_distributions(features, partial, num_classes=10, chunk_size=97),
      label_propagation.label_distributions(features, partial, num_classes=10, chunk_size=4096))


def test_label_spreading_unlabelled_class_is_never_predicted(digits):
  features, labels = digits
  features = _jittered(features)
  partial = _few_labels(labels, 3, seed=3, classes=[c for c in range(10) if c != 4])
  predicted = label_propagation.label_spreading(features, partial, num_classes=10)
  assert not np.any(predicted == 4)
  np.testing.assert_array_equal(predicted, _sklearn_spreading(features, partial).transduction_)


def test_label_spreading_unreached_rows_get_first_labelled_class():
  rng = np.random.default_rng(0)
  near = rng.standard_normal((10, 3))
  far = 100.0 + rng.standard_normal((10, 3))
  features = np.concatenate([near, far])
  partial = np.full(20, -1)
  partial[:4] = [2, 3, 2, 3]
  predicted = label_propagation.label_spreading(features, partial, num_classes=4, n_neighbors=3)
  expected = _sklearn_spreading(features, partial, n_neighbors=3).transduction_
  np.testing.assert_array_equal(predicted, expected)
  np.testing.assert_array_equal(predicted[10:], 2)


def test_label_spreading_sharded_equals_single_device(digits):
  features, labels = digits
  partial = _few_labels(labels, 3, seed=5)
  kwargs = dict(num_classes=10, chunk_size=256)
  np.testing.assert_array_equal(
      label_propagation.label_distributions(features, partial, mesh=parallel.make_mesh(8),
                                            **kwargs),
      label_propagation.label_distributions(features, partial, **kwargs))


def test_label_spreading_one_labelled_class(digits):
  features, labels = digits
  features = _jittered(features)[:300]
  partial = np.full(300, -1)
  partial[np.flatnonzero(labels[:300] == 6)[:4]] = 6
  predicted = label_propagation.label_spreading(features, partial, num_classes=10)
  expected = _sklearn_spreading(features, partial)
  np.testing.assert_array_equal(predicted, 6)
  np.testing.assert_array_equal(predicted, expected.transduction_)


def test_label_spreading_more_neighbours_than_rows(digits):
  # n_neighbors is clamped to n (scikit-learn raises instead), i.e. the complete graph.
  features, labels = digits
  features, labels = _jittered(features)[:40], labels[:40]
  partial = _few_labels(labels, 1, seed=0, classes=range(4))
  predicted = label_propagation.label_distributions(features, partial, num_classes=10,
                                                    n_neighbors=100)
  expected = _sklearn_spreading(features, partial, n_neighbors=40).label_distributions_
  np.testing.assert_allclose(predicted[:, :4], expected, atol=1e-5)


def _recall(found, exact):
  return np.mean([len(set(a) & set(b)) for a, b in zip(found, exact)]) / exact.shape[1]


def test_clustered_search_probing_every_block_is_exact(digits):
  features, _ = digits
  features = _jittered(features)
  exact_distances, exact_indices = knn.top_k_neighbours(features, features, 7, 512, "euclidean")
  settings = approximate_neighbours.ClusteredSearch(block_size=100, probe_blocks=18, rounds=1)
  distances, indices = approximate_neighbours.clustered_neighbours(
      knn.as_float(features), 7, settings)
  assert _recall(np.asarray(indices), np.asarray(exact_indices)) == 1.0
  np.testing.assert_array_equal(np.asarray(indices)[:, 0], np.arange(len(features)))
  # Squared-norm cancellation leaves up to ~0.05 of float32 noise near 0 on raw digits (norms ~50).
  np.testing.assert_allclose(distances, exact_distances, rtol=1e-4, atol=0.1)


def test_clustered_label_spreading_close_to_exact(digits):
  features, labels = digits
  features = _jittered(features)
  partial = _few_labels(labels, 3, seed=0)
  unlabelled = partial < 0
  _, exact_indices = knn.top_k_neighbours(features, features, 7, 512, "euclidean")
  one_round = approximate_neighbours.ClusteredSearch(block_size=64, probe_blocks=4, rounds=1)
  settings = one_round._replace(rounds=3)
  recalls = [_recall(np.asarray(approximate_neighbours.clustered_neighbours(
      knn.as_float(features), 7, s)[1]), np.asarray(exact_indices)) for s in (one_round, settings)]
  # Independent clusterings mend the edges one clustering cuts at its block borders.
  assert recalls[0] < 0.9 < 0.97 < recalls[1]
  exact = label_propagation.label_spreading(features, partial, num_classes=10)
  approximate = label_propagation.label_spreading(features, partial, num_classes=10,
                                                  approximate=settings)
  exact_accuracy = np.mean(exact[unlabelled] == labels[unlabelled])
  approximate_accuracy = np.mean(approximate[unlabelled] == labels[unlabelled])
  assert abs(approximate_accuracy - exact_accuracy) <= 0.02
  assert exact_accuracy > 0.8


def test_clustered_search_rejects_bad_settings(digits):
  features, labels = digits
  with pytest.raises(ValueError, match="exceeds ClusteredSearch.block_size"):
    approximate_neighbours.clustered_neighbours(
        knn.as_float(features), 20, approximate_neighbours.ClusteredSearch(block_size=16))
  with pytest.raises(ValueError, match="probe_blocks >= 2"):
    approximate_neighbours.clustered_neighbours(
        knn.as_float(features), 7, approximate_neighbours.ClusteredSearch(probe_blocks=1))
  with pytest.raises(ValueError, match="pass mesh=None"):
    label_propagation.label_spreading(features, labels, num_classes=10,
                                      mesh=parallel.make_mesh(2),
                                      approximate=approximate_neighbours.ClusteredSearch())


@pytest.mark.parametrize("propagate", [label_propagation.label_spreading,
                                       label_propagation.rbf_label_propagation])
def test_label_propagation_rejects_unlabelled_or_nan_inputs(digits, propagate):
  features, labels = digits
  with pytest.raises(ValueError, match="no labelled row"):
    propagate(features, np.full_like(labels, -1), num_classes=10)
  bad = features.copy()
  bad[0, 0] = np.nan
  with pytest.raises(ValueError, match="contain NaN"):
    propagate(bad, labels, num_classes=10)


@pytest.fixture(scope="module")
def small_digits():
  features, labels = load_digits(return_X_y=True)
  # Scaled to [0, 1] so that gamma ~ 1 gives a graph that is neither empty nor complete.
  return features[:400] / 16.0, labels[:400]


def _sklearn_rbf_propagation(features, partial_labels, **kwargs):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # ConvergenceWarning when max_iter is reached on purpose.
    return LabelPropagation(kernel="rbf", **kwargs).fit(features, partial_labels)


@pytest.mark.parametrize("params", [
    dict(gamma=0.5, max_iter=1000, tol=1e-3),  # Stops by tol.
    dict(gamma=1.0, max_iter=6, tol=1e-3),  # Stops at max_iter.
])
def test_rbf_label_propagation_matches_sklearn(small_digits, params):
  features, labels = small_digits
  partial = _few_labels(labels, 3, seed=0)
  expected = _sklearn_rbf_propagation(features, partial, **params)
  distributions = label_propagation.rbf_label_distributions(features, partial, num_classes=10,
                                                            **params)
  predicted = label_propagation.rbf_label_propagation(features, partial, num_classes=10, **params)
  np.testing.assert_allclose(distributions, expected.label_distributions_, atol=1e-5)
  np.testing.assert_array_equal(predicted, expected.transduction_)
  np.testing.assert_array_equal(predicted[partial >= 0], partial[partial >= 0])


def test_rbf_label_propagation_unlabelled_class(small_digits):
  features, labels = small_digits
  partial = _few_labels(labels, 3, seed=1, classes=[c for c in range(10) if c != 7])
  predicted = label_propagation.rbf_label_propagation(features, partial, num_classes=10,
                                                      gamma=0.5)
  assert not np.any(predicted == 7)
  np.testing.assert_array_equal(
      predicted, _sklearn_rbf_propagation(features, partial, gamma=0.5).transduction_)


def test_rbf_label_propagation_rejects_bad_inputs(small_digits):
  features, labels = small_digits
  with pytest.raises(ValueError, match="exceed max_rows=100"):
    label_propagation.rbf_label_propagation(features, labels, num_classes=10, max_rows=100)
  with pytest.raises(ValueError, match="gamma"):
    label_propagation.rbf_label_propagation(features, labels, num_classes=10, gamma=0.0)


def test_linear_probe_matches_sklearn(digits):
  features, labels = digits
  train, test, train_labels, test_labels = train_test_split(
      features, labels, test_size=0.3, random_state=0, stratify=labels)
  l2 = 1e-4
  scaler = StandardScaler().fit(train)
  sklearn_probe = LogisticRegression(C=1.0 / (l2 * len(train)), tol=1e-5, max_iter=5000)
  expected = sklearn_probe.fit(scaler.transform(train), train_labels).predict(
      scaler.transform(test))
  predicted = linear_probe.linear_probe(train, train_labels, test, num_classes=10, l2=l2,
                                        tol=1e-5)
  accuracy, expected_accuracy = np.mean(predicted == test_labels), np.mean(expected == test_labels)
  assert abs(accuracy - expected_accuracy) <= 0.005
  assert np.mean(predicted == expected) >= 0.99
  assert accuracy > 0.93


def test_linear_probe_rejects_nan(digits):
  features, labels = digits
  bad = features.copy()
  bad[5, 7] = np.nan
  with pytest.raises(ValueError, match="contain NaN"):
    linear_probe.linear_probe(bad, labels, features, num_classes=10)
