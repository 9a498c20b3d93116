"""Colorization (Zhang et al. 2016): Lab conversion, ab quantisation, soft-encoding, class
rebalancing, annealed mean and the loss against NumPy references written from the paper;
pictures; the sharded step against the 1-device step; the cifar10 config on mock TFDS data and
the imagenet2012 config's network shapes."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from skimage import color as skimage_color

from configs import colorization as colorization_config
from configs.recipes import augmentations
from ssl_jax import config_lib, methods, train
from ssl_jax.data import augment, color
from ssl_jax.data.builders import photos
from ssl_jax.errors import UserError
from ssl_jax.models import apply_in_eval_mode, apply_in_train_mode
from ssl_jax.models.colorizer import Colorizer
from tiny_configs import assert_sharded_equals_single_device, override, steps_on_meshes

LENGTH = config_lib.TrainingLength(steps_per_epoch=10, total_steps=100, schedule_steps=100)
TINY_COLORIZER = {"colorizer.widths": (8, 16), "colorizer.convs_per_stage": (1, 1),
                  "colorizer.strides": (2, 2), "colorizer.dilations": (1, 1),
                  "colorizer.decoder_widths": (8,)}  # 32 px in, 8x8 features, 16x16 out
RNG = np.random.default_rng(0)
srgb_to_lab, lab_to_srgb = jax.jit(color.srgb_to_lab), jax.jit(color.lab_to_srgb)


def tiny_config(arg: str = "photos", **dotted):
  config = colorization_config.get_config(arg)
  config.unlock()
  return override(config, **{**TINY_COLORIZER, "batch_size": 16, **dotted})


# NumPy references, written from the CIE definitions and the paper's equations.

_M = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
               [0.019334, 0.119193, 0.950227]])


def numpy_lab(rgb: np.ndarray) -> np.ndarray:
  rgb = np.asarray(rgb, np.float64)
  linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
  xyz = linear @ _M.T / np.array([0.95047, 1.0, 1.08883])
  f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
  return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                   200 * (f[..., 1] - f[..., 2])], axis=-1)


def numpy_soft_encoding(ab: np.ndarray, centres: np.ndarray, neighbours=5, sigma=5.0):
  """Dense Z [N, Q]: a Gaussian over the `neighbours` nearest centres, normalised (Sec. 2.1)."""
  ab = ab.reshape(-1, 2).astype(np.float64)
  distances = np.linalg.norm(ab[:, None] - centres[None].astype(np.float64), axis=-1)
  z = np.zeros_like(distances)
  for row, d in enumerate(distances):
    nearest = np.argsort(d)[:neighbours]
    g = np.exp(-d[nearest] ** 2 / (2 * sigma ** 2))
    z[row, nearest] = g / g.sum()
  return z


def numpy_rebalancing(prior: np.ndarray, centres: np.ndarray, sigma=5.0, mix=0.5):
  """w of Eq. 4 from the smoothed prior p~; returns (p~, w)."""
  c = centres.astype(np.float64)
  kernel = np.exp(-((c[:, None] - c[None]) ** 2).sum(-1) / (2 * sigma ** 2))
  smoothed = kernel @ prior
  smoothed /= smoothed.sum()
  w = 1 / ((1 - mix) * smoothed + mix / len(prior))
  return smoothed, w / (smoothed * w).sum()


def numpy_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.fixture(scope="module")
def centres():
  return color.ab_gamut_bins(10.0)


# Lab.


def test_lab_reference_values_skimage_and_round_trip():
  np.testing.assert_allclose(srgb_to_lab(jnp.array([[1.0, 1, 1], [0, 0, 0]])),
                             [[100, 0, 0], [0, 0, 0]], atol=0.01)
  np.testing.assert_allclose(srgb_to_lab(jnp.array([1.0, 0, 0])), [53.24, 80.09, 67.20],
                             atol=0.01)
  rgb = RNG.uniform(size=(500, 3)).astype(np.float32)
  rgb[:20] *= 0.03  # the linear segments near black
  lab = np.asarray(srgb_to_lab(jnp.asarray(rgb)))
  np.testing.assert_allclose(lab, numpy_lab(rgb), atol=2e-3)
  np.testing.assert_allclose(lab, skimage_color.rgb2lab(rgb), atol=2e-3)
  np.testing.assert_allclose(lab_to_srgb(jnp.asarray(lab)), rgb, atol=2e-5)
  np.testing.assert_allclose(lab_to_srgb(jnp.asarray(lab)),
                             skimage_color.lab2rgb(lab.astype(np.float64)), atol=2e-4)
  # Out of the sRGB gamut: clipped into [0, 1].
  clipped = np.asarray(lab_to_srgb(jnp.array([50.0, 120.0, -120.0])))
  assert clipped.min() == 0.0 and clipped.max() <= 1.0


# The quantised ab space.


def test_gamut_bins_cover_every_srgb_colour(centres):
  assert centres.shape == (261, 2)
  np.testing.assert_array_equal(centres % 10, 0)
  assert np.any(np.all(centres == 0, axis=1))
  ab = numpy_lab(RNG.uniform(size=(20_000, 3)))[:, 1:]
  nearest = np.min(np.linalg.norm(ab[:, None] - centres[None], axis=-1), axis=1)
  assert nearest.max() <= 5 * np.sqrt(2) + 1e-6  # every colour lies in some in-gamut bin


def test_soft_encoding_against_numpy(centres):
  ab = numpy_lab(RNG.uniform(size=(300, 3)))[:, 1:].astype(np.float32)
  indices, weights = color.soft_encode(jnp.asarray(ab), jnp.asarray(centres), 5, 5.0)
  indices, weights = np.asarray(indices), np.asarray(weights)
  dense = np.zeros((len(ab), len(centres)))
  np.put_along_axis(dense, indices, weights, axis=1)
  reference = numpy_soft_encoding(ab, centres)
  np.testing.assert_allclose(dense, reference, atol=1e-5)
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
  # The nearest bin comes first and gets the largest weight.
  distances = np.linalg.norm(ab[:, None] - centres[None], axis=-1)
  np.testing.assert_array_equal(indices[:, 0], distances.argmin(1))
  assert np.all(weights[:, 0] == weights.max(-1))


def test_rebalancing_weights_against_numpy(centres):
  prior = RNG.dirichlet(np.full(len(centres), 0.1))
  smoothed = np.asarray(color.smoothed_prior(jnp.asarray(prior, jnp.float32),
                                             jnp.asarray(centres), 5.0))
  weights = np.asarray(color.rebalancing_weights(jnp.asarray(smoothed), 0.5))
  reference_smoothed, reference_weights = numpy_rebalancing(prior, centres)
  np.testing.assert_allclose(smoothed, reference_smoothed, rtol=1e-4, atol=1e-9)
  np.testing.assert_allclose(weights, reference_weights, rtol=1e-4)
  assert np.sum(smoothed * weights) == pytest.approx(1.0, abs=1e-5)  # E_p~[w] = 1
  assert weights[smoothed.argmin()] > 1.5 > weights[smoothed.argmax()]  # rare colours boosted
  # lambda = 1 is no rebalancing.
  np.testing.assert_allclose(color.rebalancing_weights(jnp.asarray(smoothed), 1.0), 1.0,
                             rtol=1e-5)


def test_annealed_mean(centres):
  logits = RNG.normal(size=(7, len(centres))).astype(np.float32) * 3
  probabilities = np.exp(numpy_log_softmax(logits.astype(np.float64)))
  for temperature in (1.0, 0.38):
    tempered = np.exp(np.log(probabilities) / temperature)
    tempered /= tempered.sum(-1, keepdims=True)
    np.testing.assert_allclose(
        color.annealed_mean(jnp.asarray(logits), jnp.asarray(centres), temperature),
        tempered @ centres, atol=1e-3)
  # T -> 0 is the mode.
  np.testing.assert_allclose(color.annealed_mean(jnp.asarray(logits), jnp.asarray(centres),
                                                 1e-3),
                             centres[logits.argmax(-1)], atol=1e-3)


# The method's loss.


@pytest.fixture(scope="module")
def test_images():
  """Ten test patches of the photos dataset, uint8 [10, 32, 32, 3]."""
  return photos.cut_patches("test").images[::80]


def _method_and_inputs(config, images):
  """The built method, its initial (params, extra), a normalised batch and the RGB images."""
  method = methods.build(config, LENGTH)
  mean, std = np.array(config.augment.mean), np.array(config.augment.std)
  normalised = ((images / 255.0 - mean) / std).astype(np.float32)
  batch = {"views": jnp.asarray(normalised[:, None])}
  params, extra = jax.jit(method.init)(jax.random.PRNGKey(0), batch)
  return method, params, extra, batch, images / 255.0


@pytest.fixture(scope="module")
def classifier(test_images):
  config = tiny_config()
  return (config, *_method_and_inputs(config, test_images))


def _network_outputs(config, params, batch_stats, lab, num_outputs, train_mode):
  """The colorizer applied to (L - 50) / 50 directly: (outputs, features)."""
  network = Colorizer(**config.colorizer, num_outputs=num_outputs)
  apply = apply_in_train_mode if train_mode else apply_in_eval_mode
  network_input = jnp.asarray((lab[..., :1] - 50) / 50, jnp.float32)
  out = jax.jit(lambda p, s, x: apply(network, p, s, x))(params, batch_stats, network_input)
  return out[0] if train_mode else out


@pytest.mark.parametrize("mode", ["classification", "regression"])
def test_loss_against_numpy(mode, centres, classifier, test_images):
  """The whole loss from normalised images: un-normalise, Lab, L in, ab pooled 2x2 to the
  16x16 output; Eq. 2 with weights from the running prior (step 3), or Eq. 1."""
  if mode == "classification":
    config, method, params, extra, batch, rgb = classifier
    extra = {**extra, "color_prior": jnp.asarray(RNG.dirichlet(np.ones(len(centres))),
                                                 jnp.float32)}
  else:
    config = tiny_config(**{"colorization.mode": mode})
    method, params, extra, batch, rgb = _method_and_inputs(config, test_images)
  value, output = jax.jit(method.loss)(params, extra, batch, None, jnp.asarray(3))
  lab = numpy_lab(rgb)
  outputs, features = _network_outputs(config, params, extra["batch_stats"], lab,
                                       len(centres) if mode == "classification" else 2, True)
  outputs = np.asarray(outputs, np.float64)
  assert outputs.shape[:3] == (10, 16, 16) and features.shape == (10, 16)
  target = lab[..., 1:].reshape(10, 16, 2, 16, 2, 2).mean((2, 4)).reshape(-1, 2)
  if mode == "regression":
    expected = np.mean(0.5 * np.sum((100 * outputs.reshape(-1, 2) - target) ** 2, -1))
  else:
    z = numpy_soft_encoding(target, centres)
    histogram = np.bincount(z.argmax(1), minlength=len(centres)) / len(z)
    prior = np.asarray(extra["color_prior"], np.float64)
    prior = prior + (histogram - prior) / 4  # running mean after 3 earlier steps
    np.testing.assert_allclose(output.extra["color_prior"], prior, rtol=1e-5, atol=1e-7)
    _, w = numpy_rebalancing(prior, centres)
    log_probs = numpy_log_softmax(outputs.reshape(-1, len(centres)))
    expected = np.mean(-w[z.argmax(1)] * np.sum(z * log_probs, axis=1))
  assert float(value) == pytest.approx(expected, rel=2e-4)
  # atol: the features are O(1), and a near-zero one (1e-4) differs from the separately
  # compiled forward pass in its last bits (1.7e-9).
  np.testing.assert_allclose(output.features, features, rtol=1e-5, atol=1e-7)


def test_pictures_and_represent(centres, classifier):
  config, method, params, extra, batch, rgb = classifier
  images = batch["views"][:, 0]
  grid = np.asarray(jax.jit(method.pictures)(params, extra, images, jax.random.PRNGKey(0))
                    ["colorization"])
  assert grid.shape == (8, 3, 32, 32, 3)  # the first 8 of the 10 images
  mean, std = np.array(config.augment.mean), np.array(config.augment.std)
  shown = grid * std + mean
  gray, predicted, truth = shown[:, 0], shown[:, 1], shown[:, 2]
  np.testing.assert_allclose(truth, rgb[:8], atol=1e-4)
  np.testing.assert_allclose(gray[..., 0], gray[..., 2], atol=1e-4)  # neutral: R = G = B
  lab = numpy_lab(rgb[:8])
  np.testing.assert_allclose(numpy_lab(gray)[..., 0], lab[..., 0], atol=0.05)
  # The predicted column is L with the network's annealed-mean ab, upsampled.
  outputs, _ = _network_outputs(config, params, extra["batch_stats"], lab, len(centres), False)
  ab = jax.image.resize(color.annealed_mean(outputs, jnp.asarray(centres), 0.38),
                        (8, 32, 32, 2), "bilinear")
  expected = lab_to_srgb(jnp.concatenate([jnp.asarray(lab[..., :1], jnp.float32), ab], -1))
  np.testing.assert_allclose(predicted, expected, atol=1e-4)
  assert np.abs(predicted - gray).max() > 0.01  # the prediction is not gray
  # The representation sees only L: a grayscale copy of the images gives the same features.
  represent = jax.jit(method.represent)
  features = represent(params, extra, images[:8])
  gray_features = represent(params, extra, jnp.asarray(grid[:, 0], jnp.float32))
  assert features.shape == (8, 16)
  np.testing.assert_allclose(gray_features, features, rtol=1e-3, atol=1e-3)


def test_config_errors():
  for dotted, message in (({"colorization.mode": "gan"}, "mode"),
                          ({"data.num_views": 2}, "views"),
                          ({"augment": augmentations.cifar_augment()}, "jitter_prob"),
                          ({"colorization.rebalance_mix": 0.0}, "rebalance_mix"),
                          ({"colorization.neighbours": 300}, "neighbours"),
                          ({"colorizer.strides": (2, 2, 2)}, "strides")):
    with pytest.raises(UserError, match=message):
      methods.build(tiny_config(**dotted), LENGTH)


def test_adam_adds_the_l2_gradient_before_the_adam_step():
  """optimizer.name = "adam" (the paper's Caffe solver): the update for w is Adam's on
  g + wd * w for kernels and on g alone for biases and BatchNorm parameters."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from ssl_jax import optimizers  # pylint: disable=g-import-not-at-top
  settings = ml_collections.ConfigDict(dict(name="adam", weight_decay=0.1, b1=0.9, b2=0.99,
                                            grad_clip_norm=0.0))
  tx = optimizers.build(settings, optax.constant_schedule(0.01))
  params = {"kernel": jnp.asarray(RNG.normal(size=(3, 4)), jnp.float32),
            "bias": jnp.asarray(RNG.normal(size=(4,)), jnp.float32)}
  grads = jax.tree.map(lambda p: jnp.asarray(RNG.normal(size=p.shape), jnp.float32), params)
  state = tx.init(params)
  reference = optax.adam(0.01, b1=0.9, b2=0.99)
  reference_state = reference.init(params)
  for _ in range(2):
    updates, state = tx.update(grads, state, params)
    l2_grads = {"kernel": grads["kernel"] + 0.1 * params["kernel"], "bias": grads["bias"]}
    expected, reference_state = reference.update(l2_grads, reference_state, params)
    for key in params:
      np.testing.assert_allclose(updates[key], expected[key], rtol=1e-5, atol=1e-8)
    params = optax.apply_updates(params, updates)


# Through the trainer.


def test_sharded_equals_single_device():
  """3 steps on 8 devices equal 3 steps on 1: parameters, losses, BatchNorm statistics and
  the running colour prior (a histogram over the global batch)."""
  assert jax.device_count() == 8, "conftest.py must give 8 fake CPU devices"
  config = tiny_config(batch_size=32, **{"optimizer.name": "sgd", "optimizer.lr": 0.05,
                                         "optimizer.warmup_steps": 20})
  train_patches = photos.cut_patches("train")
  order = np.random.default_rng(1).permutation(len(train_patches.labels))[:3 * 32]
  batches = [{"views": train_patches.images[order[i:i + 32], None],
              "label": train_patches.labels[order[i:i + 32]].astype(np.int32)}
             for i in range(0, 96, 32)]
  results = steps_on_meshes(config, batches, (32, 32, 3), LENGTH)
  assert_sharded_equals_single_device(results)
  states = {size: state for size, (_, state) in results.items()}
  prior = states[1]["extra"]["color_prior"]
  assert prior.sum() == pytest.approx(1.0, abs=1e-5) and prior.max() > 5 / len(prior)


@pytest.mark.parametrize("variant", ["cifar10", "imagenet2012"])
def test_one_step_of_the_real_dataset_configs_on_mock_tfds(variant, tmp_path):
  """The variant's pipeline, augmentation, optimizer (Adam with L2) and loss, with a tiny
  colorizer, ImageNet's 176 px crops shrunk to 32 px, on one device."""
  config = colorization_config.get_config(f"{variant},runlocal=True")
  config.unlock()
  override(config, total_steps=1, evaluate_at_end=False, batch_size=8, mesh="data:1",
           **TINY_COLORIZER)
  if variant == "imagenet2012":
    override(config, **{"data.image_size": 32, "data.eval_resize": 36})
  with tfds.testing.mock_data(num_examples=16):
    state = train.run(config, str(tmp_path / variant))
  assert int(state["step"]) == 1
  row = json.loads(open(tmp_path / variant / "metrics.jsonl").readline())
  assert row["step"] == 1 and np.isfinite(row["loss"]) and row["ab_rmse"] > 0


def test_imagenet2012_config_is_the_papers_network():
  """Shapes only (no compilation): 176 px crops in, logits at 1/4 resolution (44 x 44) out,
  conv7's 512 channels pooled as the representation, bfloat16 activations."""
  config = colorization_config.get_config("imagenet2012")
  method = methods.build(config, LENGTH)
  views = jax.ShapeDtypeStruct((2, 1, 176, 176, 3), jnp.float32)
  params, extra = jax.eval_shape(method.init, jax.random.PRNGKey(0), {"views": views})
  convs = [leaf.shape for path, leaf in jax.tree_util.tree_leaves_with_path(params)
           if jax.tree_util.keystr(path).endswith("['kernel']")]
  assert len(convs) == 2 + 2 + 3 + 3 * 4 + 3 + 1  # conv1-conv8 and the 1x1 classifier
  assert (1, 1, 256, 261) in convs and convs.count((3, 3, 512, 512)) == 11
  (outputs, features), _ = jax.eval_shape(
      lambda p, e, x: apply_in_train_mode(
          Colorizer(**config.colorizer, num_outputs=261), p, e["batch_stats"], x),
      params, extra, jax.ShapeDtypeStruct((2, 176, 176, 1), jnp.float32))
  assert outputs.shape == (2, 44, 44, 261) and features.shape == (2, 512)
  assert extra["color_prior"].shape == (261,)
