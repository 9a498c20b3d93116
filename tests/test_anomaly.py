"""The anomaly-detection protocol: AUROC against scikit-learn, deep kNN scores against a NumPy
brute force, the one-class average, reconstruction-error scores against NumPy, each
reconstruction method's `reconstruction_error` against its own network's outputs, and the
evaluator's rows and plot in a run's report."""
import json
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ssl_jax import main, methods
from ssl_jax.data import augment
from ssl_jax.eval import anomaly, plots
from ssl_jax.evaluators import anomaly as anomaly_evaluator
from ssl_jax.methods import mae
from ssl_jax.models import apply_in_eval_mode, build_encoder
from ssl_jax.models.decoder import Decoder, EncoderDecoder, GaussianEncoderDecoder
from ssl_jax.models.masked_autoencoder import MAEDecoder, MaskedAutoencoder, patchify
from ssl_jax.report import markdown_table
from test_mae import masked_patch_mse_reference, tiny_mae
from test_reconstruction import LENGTH, tiny_reconstruction
from tiny_configs import tiny_digits, tiny_method


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
  assert not [r for r in report["results"] if r["protocol"] == "anomaly_reconstruction"]
  for row in rows.values():
    per_class = np.array(row["per_class"], float)
    assert len(per_class) == 10 and row["metric"] == "auroc"
    assert row["accuracy"] == pytest.approx(per_class.mean(), abs=1e-6)
  assert rows["raw"]["accuracy"] > 0.9  # digit pixels alone tell a class from the others
  assert "anomaly_auroc.png" in report["plots"]
  assert os.path.exists(os.path.join(workdir, "eval", "anomaly_auroc.png"))
  assert "one-class AUROC" in open(os.path.join(workdir, "eval", "report.md")).read()


# ----------------------------------------------------------------------------------------------
# Reconstruction-error scores.
# ----------------------------------------------------------------------------------------------


def test_error_scores_are_the_robust_distance_from_the_normal_errors():
  rng = np.random.default_rng(3)
  normal, test = rng.gamma(2.0, 0.05, 101), rng.gamma(2.0, 0.08, 40)
  median = np.median(normal)
  mad = np.median(np.abs(normal - median))
  np.testing.assert_allclose(anomaly.error_scores(normal, test[:, None]),
                             np.abs(test - median) / (1.4826 * mad), rtol=1e-12)
  # More than half the errors tie (MAD 0): the standard deviation; all of them: unit scale.
  tied = np.array([0.1, 0.1, 0.1, 0.4])
  np.testing.assert_allclose(anomaly.error_scores(tied, test),
                             np.abs(test - 0.1) / np.std(tied), rtol=1e-12)
  np.testing.assert_allclose(anomaly.error_scores(np.full(5, 0.2), test), np.abs(test - 0.2))


def test_reconstruction_aurocs_score_against_each_normal_class():
  """Each class's errors have their own level (some digits are harder to reconstruct): the
  raw error's AUROCs average to exactly 0.5 over classes of one size, while the distance from
  the normal class's errors tells every class from the rest."""
  rng = np.random.default_rng(4)
  levels = np.array([0.1, 0.2, 0.3, 0.4])
  train_y, test_y = np.repeat(np.arange(4), 50), np.repeat(np.arange(4), 30)
  train_e = levels[train_y] + rng.normal(0, 0.01, len(train_y))
  test_e = levels[test_y] + rng.normal(0, 0.01, len(test_y))
  got = anomaly.reconstruction_aurocs(train_e[:, None], train_y, test_e, test_y, num_classes=5)
  for normal in range(4):
    median = np.median(train_e[train_y == normal])
    assert got[normal] == pytest.approx(roc_auc_score(test_y != normal,
                                                      np.abs(test_e - median)), abs=1e-12)
  assert np.all(got[:4] > 0.99) and np.isnan(got[4])
  raw = [roc_auc_score(test_y != normal, test_e) for normal in range(4)]
  assert np.mean(raw) == pytest.approx(0.5, abs=1e-12) and min(raw) == 0.0


# ----------------------------------------------------------------------------------------------
# Each method's reconstruction error against its own network's outputs.
# ----------------------------------------------------------------------------------------------


def random_model(config, images):
  """(method, params, extra) of `config` with `init`'s structure filled from NumPy (running the
  initialisers would compile each of them): normal(0, 0.2) parameters, BatchNorm statistics of
  mean 0 and variance 1."""
  method = methods.build(config, LENGTH)
  abstract, extra = jax.eval_shape(method.init, jax.random.PRNGKey(0), {"views": images[:, None]})
  rng = np.random.default_rng(1)
  params = jax.tree.map(lambda x: jnp.asarray(rng.normal(0, 0.2, x.shape), x.dtype), abstract)
  extra = jax.tree_util.tree_map_with_path(
      lambda path, x: jnp.full(x.shape, float(path[-1].key == "var"), x.dtype), extra)
  return method, params, extra


def per_image_mse(output, images, counted=None):
  """Mean squared error per image [b] over every element, or over the `counted` ones."""
  error = (np.asarray(output, np.float64) - np.asarray(images, np.float64)) ** 2
  counted = np.ones_like(error, bool) if counted is None else np.broadcast_to(counted, error.shape)
  return (error * counted).sum(axis=(1, 2, 3)) / counted.sum(axis=(1, 2, 3))


@pytest.mark.parametrize("name,code_dim", [("autoencoder", 8), ("inpainting", 16)])
def test_corrupted_reconstruction_error_is_the_loss_per_image(name, code_dim):
  """The picture's corrupted input (the same rng, so the same corruption) through the
  network: the autoencoder's error counts every pixel, inpainting's the hidden ones only."""
  config = tiny_reconstruction(name)
  images = jax.random.normal(jax.random.PRNGKey(1), (6, 8, 8, 1))  # no pixel is exactly 0
  method, params, extra = random_model(config, images)
  network = EncoderDecoder(build_encoder(config.encoder), Decoder(**config.decoder), code_dim)
  rng = jax.random.PRNGKey(2)

  def run(params, extra, images):
    (grid,) = method.pictures(params, extra, images, rng).values()
    _, _, output = apply_in_eval_mode(network, params, extra["batch_stats"], grid[:, 1])
    return grid[:, 1], output, method.reconstruction_error(params, extra, images, rng)

  corrupted, output, errors = jax.device_get(jax.jit(run)(params, extra, images))
  hidden = corrupted == 0
  assert hidden.sum() == 6 * 16  # masking noise on 25% of the pixels; a quadrant hidden
  expected = per_image_mse(output, images, hidden if name == "inpainting" else None)
  assert errors.shape == (6,) and errors.dtype == np.float32
  np.testing.assert_allclose(errors, expected, rtol=1e-5)


def test_vae_reconstruction_error_decodes_the_posterior_mean():
  config = tiny_reconstruction("vae")
  images = jax.random.uniform(jax.random.PRNGKey(1), (5, 8, 8, 1))
  method, params, extra = random_model(config, images)
  network = GaussianEncoderDecoder(build_encoder(config.encoder), Decoder(**config.decoder), 4)

  def run(params, extra, images):
    batch_stats = extra["batch_stats"]
    mean, _ = apply_in_eval_mode(network, params, batch_stats, images,
                                 method=GaussianEncoderDecoder.encode)
    logits = apply_in_eval_mode(network, params, batch_stats, mean, (8, 8, 1),
                                method=GaussianEncoderDecoder.decode)
    # The digits VAE's likelihood is binomial: the decoded image is sigmoid(logits).
    decoded = augment.normalize_unit_images(jax.nn.sigmoid(logits), config)
    errors = [method.reconstruction_error(params, extra, images, jax.random.PRNGKey(seed))
              for seed in (0, 1)]
    return decoded, errors

  decoded, (errors, errors_other_rng) = jax.device_get(jax.jit(run)(params, extra, images))
  np.testing.assert_allclose(errors, per_image_mse(decoded, images), rtol=1e-5)
  np.testing.assert_array_equal(errors, errors_other_rng)  # no sampling


@pytest.mark.parametrize("norm_pix", [True, False])
def test_mae_reconstruction_error_averages_the_masked_patch_error_over_four_masks(norm_pix):
  config = tiny_mae(**{"mae.norm_pix_loss": norm_pix})
  images = jnp.asarray(np.random.default_rng(0).normal(size=(8, 8, 8, 1)), jnp.float32)
  method, params, extra = random_model(config, images)
  network = MaskedAutoencoder(build_encoder(config.encoder), MAEDecoder(**config.decoder))
  rng = jax.random.PRNGKey(5)

  def run(params, extra, images):
    outputs = []
    for key in jax.random.split(rng, 4):
      keep, restore, mask = mae.random_masking(jax.random.split(key, 8), 16, 4)
      _, predicted = network.apply({"params": params}, images, keep, restore)
      outputs.append((predicted, mask))
    return outputs, method.reconstruction_error(params, extra, images, rng)

  outputs, errors = jax.device_get(jax.jit(run)(params, extra, images))
  patches = np.asarray(patchify(images, 2))
  expected = np.mean([[masked_patch_mse_reference(predicted[i], patches[i], mask[i], norm_pix)
                       for i in range(8)] for predicted, mask in outputs], axis=0)
  assert errors.shape == (8,)
  np.testing.assert_allclose(errors, expected, rtol=1e-5)
  single_mask = [masked_patch_mse_reference(outputs[0][0][i], patches[i], outputs[0][1][i],
                                            norm_pix) for i in range(8)]
  assert not np.allclose(errors, single_mask)  # the four masks differ


# ----------------------------------------------------------------------------------------------
# The evaluator, its plot and the report.
# ----------------------------------------------------------------------------------------------


def test_a_method_without_reconstruction_adds_only_the_knn_rows():
  config = tiny_method("simclr", None, **{"evals.anomaly.enabled": True})
  method = methods.build(config, LENGTH)
  assert method.reconstruction_error is None
  rng = np.random.default_rng(5)
  split = (rng.normal(size=(40, 4)), np.arange(40) % 2)
  context = types.SimpleNamespace(config=config, method=method, num_classes=2,
                                  features=lambda source: (split, split))
  evaluator = anomaly_evaluator.Evaluator("anomaly", config.evals.anomaly, config)
  output = evaluator.run(context)
  assert [(r["protocol"], r["features"]) for r in output.rows] == [
      ("anomaly", "ssl"), ("anomaly", "random_init"), ("anomaly", "raw")]


def anomaly_row(source, protocol, per_class):
  """A report row as the evaluator writes it (None: a class not scored)."""
  scored = [v for v in per_class if v is not None]
  return {"features": source, "protocol": protocol, "labels_per_class": None,
          "accuracy": float(np.mean(scored)), "std": float(np.std(scored)), "seeds": 1,
          "metric": "auroc", "per_class": per_class}


def test_the_plot_and_the_report_show_both_anomaly_protocols():
  rows = [anomaly_row(s, "anomaly", [0.9, 0.8, 0.7]) for s in ("ssl", "random_init", "raw")]
  rows += [anomaly_row(s, "anomaly_reconstruction", [0.6, None, 0.5])
           for s in ("ssl", "random_init")]
  one_panel, two_panels = plots.anomaly_aurocs(rows[:3]), plots.anomaly_aurocs(rows)
  assert two_panels.shape[0] > 1.7 * one_panel.shape[0]  # a panel per protocol, stacked
  markdown = markdown_table({"dataset": "digits", "checkpoint_step": 2,
                                    "results": rows})
  assert "| anomaly | all | 80.0 ± 8.2 | 80.0 ± 8.2 | 80.0 ± 8.2 |" in markdown
  assert "| anomaly_reconstruction | all | 55.0 ± 5.0 | 55.0 ± 5.0 |  |" in markdown
  assert "reconstruction error's distance from the normal class's" in markdown
  knn_only = markdown_table({"dataset": "digits", "checkpoint_step": 2,
                                    "results": rows[:3]})
  assert "one-class AUROC" in knn_only and "reconstruction" not in knn_only


@pytest.mark.slow
def test_the_reconstruction_rows_of_an_autoencoder_run(tmp_path):
  """End to end through the trainer's evaluate-at-end: a 2-step tiny autoencoder, its kNN
  rows for every source and its reconstruction rows for the two networks."""
  workdir = str(tmp_path / "run")
  config = tiny_reconstruction("autoencoder", str(tmp_path / "tfds"), total_steps=2,
                               checkpoint_every_steps=2, evaluate_at_end=True, mesh="data:1",
                               **{"evals.probes.protocols": ("knn",),
                                  "evals.probes.labels_per_class": (0,),
                                  "evals.probes.seeds": 1, "evals.plots.enabled": False,
                                  "evals.pictures.num_pictures": 0,
                                  "evals.finetune.fractions": (),
                                  "evals.anomaly.enabled": True})
  main.run(config, workdir)
  results = json.load(open(os.path.join(workdir, "eval", "report.json")))
  rows = {(r["protocol"], r["features"]): r for r in results["results"]
          if r.get("metric") == "auroc"}
  assert set(rows) == {("anomaly", "ssl"), ("anomaly", "random_init"), ("anomaly", "raw"),
                       ("anomaly_reconstruction", "ssl"),
                       ("anomaly_reconstruction", "random_init")}
  for row in rows.values():
    per_class = np.array(row["per_class"], float)
    assert len(per_class) == 10 and np.all((per_class >= 0) & (per_class <= 1))
    assert row["accuracy"] == pytest.approx(per_class.mean(), abs=1e-6)
  assert results["plots"] == ["anomaly_auroc.png"]
  markdown = open(os.path.join(workdir, "eval", "report.md")).read()
  assert "| anomaly_reconstruction | all |" in markdown
