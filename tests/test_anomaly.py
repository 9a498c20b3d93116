"""The anomaly-detection protocol: AUROC against scikit-learn, deep kNN scores against a NumPy
brute force, the one-class average, and the evaluator's rows and plot in a run's report."""
import json
import os

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ssl_jax import main
from ssl_jax.eval import anomaly
from tiny_configs import tiny_digits


def test_auroc_equals_scikit_learn_with_ties():
  rng = np.random.default_rng(0)
  for _ in range(5):
    scores = rng.integers(0, 6, 300).astype(float)  # many ties
    positive = rng.random(300) < 0.3
    assert anomaly.auroc(scores, positive) == pytest.approx(roc_auc_score(positive, scores),
                                                            abs=1e-12)
  with pytest.raises(ValueError, match="both positive and negative"):
    anomaly.auroc(np.ones(3), np.ones(3, bool))


def test_knn_scores_are_the_mean_cosine_distance_to_the_k_nearest():
  rng = np.random.default_rng(1)
  reference, queries = rng.normal(size=(40, 6)), rng.normal(size=(15, 6))
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
  distances = 1 - unit(queries) @ unit(reference).T
  expected = np.sort(distances, axis=1)[:, :3].mean(axis=1)
  np.testing.assert_allclose(anomaly.knn_scores(reference, queries, k=3), expected, atol=1e-6)


def test_one_class_aurocs_follow_the_definition():
  rng = np.random.default_rng(2)
  centres = rng.normal(size=(3, 8)) * 6
  train_y, test_y = rng.integers(0, 3, 90), rng.integers(0, 3, 60)
  train_x = centres[train_y] + rng.normal(size=(90, 8))
  test_x = centres[test_y] + rng.normal(size=(60, 8))
  got = anomaly.one_class_aurocs(train_x, train_y, test_x, test_y, num_classes=4, k=2)
  for normal in range(3):
    scores = anomaly.knn_scores(train_x[train_y == normal], test_x, 2)
    assert got[normal] == pytest.approx(roc_auc_score(test_y != normal, scores))
    assert got[normal] > 0.9  # well-separated clusters
  assert np.isnan(got[3])  # a class without rows


@pytest.mark.slow
def test_the_anomaly_rows_and_plot_of_a_digits_run(tmp_path):
  workdir = str(tmp_path / "run")
  config = tiny_digits(str(tmp_path / "tfds"), total_steps=2, checkpoint_every_steps=2,
                       evaluate_at_end=True, mesh="data:1", **{
                           "evals.probes.protocols": ("knn",),
                           "evals.probes.labels_per_class": (0,), "evals.probes.seeds": 1,
                           "evals.anomaly.enabled": True})
  main.run(config, workdir)
  report = json.load(open(os.path.join(workdir, "eval", "report.json")))
  rows = {r["features"]: r for r in report["results"] if r["protocol"] == "anomaly"}
  assert set(rows) == {"ssl", "random_init", "raw"}
  for row in rows.values():
    per_class = np.array(row["per_class"], float)
    assert len(per_class) == 10 and row["metric"] == "auroc"
    assert row["accuracy"] == pytest.approx(per_class.mean(), abs=1e-6)
  assert rows["raw"]["accuracy"] > 0.9  # digit pixels alone tell a class from the others
  assert "anomaly_auroc.png" in report["plots"]
  assert os.path.exists(os.path.join(workdir, "eval", "anomaly_auroc.png"))
  assert "one-class AUROC" in open(os.path.join(workdir, "eval", "report.md")).read()
