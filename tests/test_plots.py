"""The evaluation's figures (ssl_jax/eval/plots.py): the t-SNE map keeps well-separated classes
apart, and both figures render to RGB images with one panel per source / protocol."""
import numpy as np
import pytest
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from ssl_jax.eval import plots


def _clusters(num_classes: int = 3, per_class: int = 40, dim: int = 20, seed: int = 0):
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(num_classes), per_class)
  centres = 10.0 * rng.standard_normal((num_classes, dim))
  return centres[labels] + rng.standard_normal((len(labels), dim)), labels


def test_tsne_map_keeps_separated_classes_apart():
  features, labels = _clusters()
  points = plots.embed_2d(features, seed=0)
  assert points.shape == (len(labels), 2)
  nearest = KNeighborsClassifier(n_neighbors=1)
  assert cross_val_score(nearest, points, labels, cv=5).mean() == 1.0
  np.testing.assert_array_equal(points, plots.embed_2d(features, seed=0))  # seeded
  with pytest.raises(ValueError, match="at least 3 rows"):
    plots.embed_2d(features[:2])


def test_feature_map_has_a_panel_per_source():
  features, labels = _clusters()
  one = plots.feature_map({"ssl": (features, labels)})
  two = plots.feature_map({"ssl": (features, labels), "raw": (features[:, :5], labels)},
                          max_points=50)
  assert one.dtype == np.uint8 and one.ndim == 3 and one.shape[2] == 3
  assert two.shape[1] > 1.5 * one.shape[1] - 100  # a second panel, the legend drawn once


def test_accuracy_curves_draw_probe_rows_and_skip_finetuning():
  rows = [{"features": f, "protocol": p, "labels_per_class": n, "accuracy": a, "std": 0.01,
           "seeds": 3}
          for f, a in (("ssl", 0.8), ("raw", 0.6)) for p in ("linear", "knn")
          for n in (1, 5, None)]
  image = plots.accuracy_curves(rows + [{"features": "ssl", "protocol": "finetune",
                                         "labels_per_class": 12.6, "label_fraction": 0.1,
                                         "accuracy": 0.9, "std": 0.0, "seeds": 1}],
                                all_labels_x=125.7)
  assert image.dtype == np.uint8 and image.shape[2] == 3 and image.shape[1] > image.shape[0]
  with pytest.raises(ValueError, match="no accuracy rows"):
    plots.accuracy_curves([], all_labels_x=10)
