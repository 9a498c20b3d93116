"""The dense (segmentation) probe: mIoU and pixel accuracy against a direct NumPy count, a
probe on features that are the one-hot labels reaching mIoU 1, the ink masks of the embedded
digits, `represent_dense` of every encoder, and the evaluation end to end (a tiny digits run;
`scene_parse150` by name under TFDS's mock data)."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from ssl_jax.eval import segmentation
from ssl_jax.evaluators.segmentation import ink_masks
from tiny_configs import override, tiny_digits


def miou_reference(truth, predicted, num_classes, ignore):
  """Per class: |truth = c and predicted = c| / |truth = c or predicted = c| over the pixels
  not ignored; the mean over classes with a non-empty union, the ignore label excluded."""
  keep = truth != ignore
  ious = []
  for c in range(num_classes):
    if c == ignore:
      continue
    t, p = (truth == c) & keep, (predicted == c) & keep
    union = np.sum(t | p)
    if union:
      ious.append(np.sum(t & p) / union)
  return np.mean(ious), np.mean(truth[keep] == predicted[keep])


def test_miou_and_pixel_accuracy_equal_a_direct_count():
  rng = np.random.default_rng(0)
  truth = rng.integers(0, 5, size=(6, 9, 7))
  predicted = np.where(rng.random(truth.shape) < 0.6, truth, rng.integers(0, 5, truth.shape))
  for ignore in (None, 0):
    result = segmentation.scores(segmentation.confusion_matrix(truth, predicted, 5, ignore),
                                 ignore)
    miou, accuracy = miou_reference(truth, predicted, 5, -1 if ignore is None else ignore)
    assert result.miou == pytest.approx(miou, abs=1e-12)
    assert result.pixel_accuracy == pytest.approx(accuracy, abs=1e-12)
  perfect = segmentation.scores(segmentation.confusion_matrix(truth, truth, 5, None))
  assert perfect.miou == 1.0 and perfect.pixel_accuracy == 1.0


def test_a_probe_on_one_hot_label_features_reaches_miou_1():
  """Features [n, h, w, classes] that are the one-hot labels of 2x2 blocks; the labels at 4x
  the resolution (each block's pixels share its class, an ignored border ring around): the
  upsampled linear probe recovers every pixel that is not near a block edge, and all of them
  when the masks are at the feature resolution."""
  rng = np.random.default_rng(1)
  coarse = rng.integers(0, 4, size=(40, 3, 3))
  features = np.eye(4, dtype=np.float32)[coarse]
  result, predicted = segmentation.evaluate((features[:30], coarse[:30]),
                                            (features[30:], coarse[30:]), 4, None,
                                            epochs=60, lr=0.1, batch_size=10, seed=0)
  assert result.miou == 1.0 and result.pixel_accuracy == 1.0
  assert predicted.shape == (10, 3, 3)


def test_ink_masks_give_the_class_to_the_strokes_and_0_to_the_background():
  images = np.zeros((2, 4, 4, 1), np.uint8)
  images[0, 1:3, 1, 0] = 200
  images[1, 0, :, 0] = 16
  images[1, 3, 3, 0] = 3  # below a quarter of the brightest pixel: background
  masks = ink_masks(images, np.array([7, 2]), threshold=0.25)
  expected = np.zeros((2, 4, 4), np.int32)
  expected[0, 1:3, 1] = 8
  expected[1, 0, :] = 3
  np.testing.assert_array_equal(masks, expected)


@pytest.mark.parametrize("encoder,shape", [
    ({"name": "convnet", "widths": (4, 8)}, (2, 4, 4, 8)),
    ({"name": "resnet", "depth": 18, "width": 4, "cifar_stem": True}, (2, 2, 2, 32)),
    ({"name": "vit", "size": "tiny", "width": 16, "depth": 1, "num_heads": 2, "mlp_dim": 32,
      "patch_size": 4, "image_size": 16}, (2, 4, 4, 16)),
])
def test_represent_dense_is_the_map_that_represent_pools(encoder, shape, tmp_path):
  """A CNN's mean-pooled last map, a ViT's mean of patch tokens (pool="mean"), equal
  `represent`."""
  from ssl_jax import config_lib, methods  # pylint: disable=g-import-not-at-top
  if encoder["name"] == "vit":
    encoder = {**encoder, "pool": "mean"}
  config = tiny_digits(str(tmp_path), encoder=encoder, **{"data.image_size": 16})
  method = methods.build(config, config_lib.TrainingLength(10, 10, 10))
  size = 8 if encoder["name"] == "convnet" else 16
  images = jax.random.normal(jax.random.PRNGKey(0), (2, size, size, 1))
  params, extra = method.init(jax.random.PRNGKey(1), {"views": jnp.stack([images] * 2, 1)})
  dense = method.represent_dense(params, extra, images)
  assert dense.shape == shape
  np.testing.assert_allclose(jnp.mean(dense, axis=(1, 2)), method.represent(params, extra, images),
                             rtol=1e-5, atol=1e-5)


SEGMENTATION = {"evals.segmentation.enabled": True, "evals.segmentation.epochs": 5,
                "evals.segmentation.max_train_images": 200,
                "evals.segmentation.max_test_images": 100}


@pytest.mark.slow
def test_the_evaluation_reports_segmentation_rows_for_every_source(tmp_path):
  """A tiny digits SimCLR run evaluated with the segmentation probe: two rows per source
  (ssl, random_init, raw), the per-class IoU section and the PNG; the rows' numbers equal
  the probe library's on the same features."""
  from ssl_jax import evaluate, train  # pylint: disable=g-import-not-at-top
  config = tiny_digits(str(tmp_path / "tfds"), **{"evals.probes.protocols": ("knn",)})
  workdir = str(tmp_path / "run")
  train.train(config, workdir)
  overrides = {key: str(value) for key, value in SEGMENTATION.items()}
  report = evaluate.run(workdir, overrides)
  rows = {(r["protocol"], r["features"]): r["accuracy"] for r in report["results"]
          if r["protocol"].startswith("segmentation")}
  assert set(rows) == {(p, s) for p in ("segmentation_miou", "segmentation_pixel_accuracy")
                       for s in ("ssl", "random_init", "raw")}
  for value in rows.values():
    assert 0.0 < value <= 1.0
  section = report["segmentation"]
  assert section["classes"] == 11 and section["test_images"] == 100
  assert len(section["iou"]["ssl"]) == 11
  assert os.path.exists(os.path.join(evaluate.report_dir(workdir, overrides),
                                     "segmentation.png"))


@pytest.mark.slow
def test_scene_parse150_by_name_under_mock_data(tmp_path):
  """One training step of a tiny CIFAR-10 run on mock data, then the probe on TFDS's
  `scene_parse150` (mock images of random sizes, resized to 32 px; class in channel 0 of the
  annotation, 0 ignored)."""
  import importlib  # pylint: disable=g-import-not-at-top
  from ssl_jax import evaluate, train  # pylint: disable=g-import-not-at-top
  config = importlib.import_module("configs.simclr").get_config("cifar10,runlocal=True")
  config.unlock()
  override(config, total_steps=1, batch_size=8, mesh="data:1", evaluate_at_end=False,
           encoder={"name": "convnet", "widths": (8, 16)})
  workdir = str(tmp_path / "run")
  overrides = {"evals.segmentation.enabled": "True",
               "evals.segmentation.dataset": "scene_parse150",
               "evals.segmentation.mask_key": "annotation",
               "evals.segmentation.num_classes": "256",  # mock labels are any uint8
               "evals.segmentation.ignore_label": "0", "evals.segmentation.epochs": "2",
               "evals.segmentation.image_size": "32", "evals.probes.protocols": "('knn',)",
               "evals.probes.labels_per_class": "(0,)",
               "evals.finetune.fractions": "()", "evals.plots.enabled": "False",
               "eval.feature_sources": "('ssl',)"}
  with tfds.testing.mock_data(num_examples=8):
    train.train(config, workdir)
    report = evaluate.run(workdir, overrides)
  assert report["segmentation"]["dataset"] == "scene_parse150"
  assert report["segmentation"]["test_images"] == 8
  miou = next(r["accuracy"] for r in report["results"] if r["protocol"] == "segmentation_miou")
  assert 0.0 <= miou <= 1.0
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["evals"]["segmentation"]["enabled"] is False  # an override only
