"""The reconstruction objectives (autoencoder, VAE, Context Encoder inpainting): their losses
against NumPy references, the corruptions they train on, the decoder's shapes, their pictures,
the sharded step against the 1-device step, and one step of each `cifar10` config on mock
TFDS data."""
import importlib
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from scipy.stats import binom, norm

from ssl_jax import config_lib, corruptions, losses, main, methods, parallel, train
from ssl_jax.data import image_pipeline
from ssl_jax.errors import UserError
from ssl_jax.models import apply_in_eval_mode, build_encoder
from ssl_jax.models.decoder import Decoder, EncoderDecoder, GaussianEncoderDecoder
from tiny_configs import assert_sharded_equals_single_device, host_copy, override, steps_on_meshes

LENGTH = config_lib.TrainingLength(steps_per_epoch=10, total_steps=100, schedule_steps=100)

# Each reconstruction method's digits config, shrunk to a CNN 8-16 with one convolution per
# stage, a decoder 16-8 (4x4 -> 8x8) of transposed convolutions only, and no online probe
# (the trainer's, tested elsewhere): on 2 CPU cores compiling the random initialisation of
# each differently shaped kernel costs seconds.
RECONSTRUCTION = {
    "autoencoder": {"autoencoder.latent_dim": 8},
    "vae": {"vae.latent_dim": 4, "vae.traversal_dims": 3, "vae.traversal_steps": 5},
    "inpainting": {"inpainting.bottleneck_dim": 16},
}


def tiny_reconstruction(name: str, data_dir: str | None = None,
                        **dotted) -> ml_collections.ConfigDict:
  config = importlib.import_module(f"configs.{name}").get_config("digits")
  config.unlock()
  override(config, **{
      "encoder.widths": (8, 16), "encoder.convs_per_stage": 1, "decoder.widths": (16, 8),
      "decoder.convs_per_stage": 0, "online_probe.enabled": False, "batch_size": 32,
      "total_steps": 6, "log_every_steps": 2, "checkpoint_every_steps": 3,
      "optimizer.warmup_steps": 2, "data.data_dir": data_dir, "evaluate_at_end": False,
      **RECONSTRUCTION[name]})
  return override(config, **dotted)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tensorflow_datasets"))


SGD_LR = {"vae": 0.002}  # the VAE's loss sums over pixels: ~50x the mean squared errors


@pytest.fixture(scope="module")
def initial_states(data_dir):
  """name -> (tiny config, its 1-device Trainer, that trainer's initial state on the host):
  one init compile per method, shared by the pictures tests and the sharded-step test. SGD,
  as in test_joint_embedding: Adam would turn rounding noise on parameters whose gradient is
  0 into full steps, and the sharded and 1-device runs would drift apart."""
  cache = {}

  def get(name):
    if name not in cache:
      config = tiny_reconstruction(name, data_dir, **{
          "optimizer.name": "sgd", "optimizer.lr": SGD_LR.get(name, 0.05)})
      trainer = train.Trainer(config, methods.build(config, LENGTH), parallel.make_mesh(1),
                              (8, 8, 1), 10, LENGTH)
      cache[name] = config, trainer, host_copy(trainer.create_state(config.seed))
    return cache[name]

  return get


# ----------------------------------------------------------------------------------------------
# Losses against NumPy.
# ----------------------------------------------------------------------------------------------


def test_gaussian_kl_closed_form_matches_a_monte_carlo_estimate():
  """KL(q || N(0, I)) = E_q[log q(z) - log p(z)], estimated with 200k samples per example."""
  rng = np.random.default_rng(0)
  mean = rng.normal(size=(3, 4))
  log_variance = rng.normal(scale=0.7, size=(3, 4))
  ours = np.asarray(losses.gaussian_kl_to_standard_normal(jnp.asarray(mean),
                                                          jnp.asarray(log_variance)))
  std = np.exp(0.5 * log_variance)
  eps = rng.standard_normal((200_000, 3, 4))
  z = mean + std * eps
  log_ratio = -0.5 * eps ** 2 - np.log(std) + 0.5 * z ** 2  # log N(z; mean, std) - log N(z)
  monte_carlo = log_ratio.sum(-1).mean(0)
  standard_error = log_ratio.sum(-1).std(0) / np.sqrt(len(z))
  assert np.all(np.abs(ours - monte_carlo) < 5 * standard_error), (ours, monte_carlo)
  assert ours.min() > 0.5  # far from N(0, I): the check above is not about tiny numbers
  np.testing.assert_allclose(  # and 0 exactly at the prior
      losses.gaussian_kl_to_standard_normal(jnp.zeros((2, 5)), jnp.zeros((2, 5))), 0.0)


def test_reconstruction_negative_log_likelihoods_match_numpy_and_scipy():
  rng = np.random.default_rng(1)
  logits = rng.normal(scale=3.0, size=(4, 8, 8, 1))
  counts = rng.integers(0, 17, size=(4, 8, 8, 1))
  pixels = counts / 16.0  # grey levels, as the digits have
  p = 1.0 / (1.0 + np.exp(-logits))
  bernoulli = -(pixels * np.log(p) + (1 - pixels) * np.log(1 - p)).sum(axis=(1, 2, 3))
  np.testing.assert_allclose(
      losses.bernoulli_negative_log_likelihood(jnp.asarray(logits), jnp.asarray(pixels)),
      bernoulli, rtol=1e-5)
  binomial = -binom.logpmf(counts, 16, p).sum(axis=(1, 2, 3))
  np.testing.assert_allclose(
      losses.binomial_negative_log_likelihood(jnp.asarray(logits), jnp.asarray(pixels), 16),
      binomial, rtol=1e-5)
  mean = rng.uniform(size=(4, 8, 8, 1))
  gaussian = -norm.logpdf(pixels, mean, 0.1).sum(axis=(1, 2, 3))
  np.testing.assert_allclose(
      losses.gaussian_negative_log_likelihood(jnp.asarray(mean), jnp.asarray(pixels), 0.1),
      gaussian, rtol=1e-5)


def test_mean_squared_error_and_its_masked_region_form_match_numpy():
  rng = np.random.default_rng(2)
  prediction, target = rng.normal(size=(2, 5, 6, 6, 3))
  mask = rng.uniform(size=(5, 6, 6, 1)) < 0.3
  np.testing.assert_allclose(losses.mean_squared_error(prediction, target),
                             np.mean((prediction - target) ** 2), rtol=1e-5)
  # Pathak et al. Eq. 1 over the hidden pixels (every channel), divided by their count.
  hidden = np.broadcast_to(mask, prediction.shape)
  np.testing.assert_allclose(losses.mean_squared_error(prediction, target, mask),
                             np.mean((prediction - target)[hidden] ** 2), rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Corruptions.
# ----------------------------------------------------------------------------------------------

pixel_noise = jax.jit(corruptions.pixel_noise, static_argnums=(2, 3))
hidden_region_mask = jax.jit(corruptions.hidden_region_mask, static_argnums=(1, 2, 3, 4, 5, 6))


@pytest.mark.parametrize("kind", ["masking", "salt_and_pepper"])
def test_pixel_noise_corrupts_exactly_the_configured_fraction(kind):
  pixels = jnp.full((64, 8, 8, 3), 0.5)
  noisy = np.asarray(pixel_noise(jax.random.PRNGKey(0), pixels, kind, 0.25))
  changed = np.any(noisy != 0.5, axis=-1)  # [B, H, W]: a pixel changes in all channels
  assert np.all(changed.sum(axis=(1, 2)) == 16)  # round(0.25 * 64) per image
  assert np.all(noisy.min(-1) == noisy.max(-1))
  values = noisy[..., 0][changed]
  if kind == "masking":
    assert np.all(values == 0.0)
  else:
    assert set(np.unique(values)) == {0.0, 1.0}
    assert 0.4 < np.mean(values) < 0.6  # a fair coin over 1024 pixels
  assert changed.mean(axis=0).min() > 0.1  # every position gets hit in some image


def test_gaussian_noise_has_the_configured_std_and_none_is_the_identity():
  pixels = jnp.full((64, 8, 8, 3), 0.5)
  noisy = np.asarray(pixel_noise(jax.random.PRNGKey(0), pixels, "gaussian", 0.2))
  np.testing.assert_allclose(np.std(noisy - 0.5), 0.2, rtol=0.03)
  np.testing.assert_allclose(np.mean(noisy - 0.5), 0.0, atol=0.01)
  assert corruptions.pixel_noise(jax.random.PRNGKey(0), pixels, "none", 0.2) is pixels
  with pytest.raises(UserError, match="fraction"):
    corruptions.check_noise("masking", 1.5)
  with pytest.raises(UserError, match="noise must be one of"):
    corruptions.check_noise("dropout", 0.1)


@pytest.mark.parametrize("side,expected_side,offset", [(8, 4, 2), (128, 64, 32), (32, 16, 8)])
def test_center_region_is_the_central_block_of_a_quarter_of_the_image(side, expected_side,
                                                                      offset):
  mask = np.asarray(hidden_region_mask(jax.random.PRNGKey(0), 2, side, side,
                                                   "center", 0.25, 4))
  assert mask.shape == (2, side, side, 1)
  assert mask.sum() == 2 * expected_side ** 2  # exact pixel count
  expected = np.zeros((side, side), bool)
  expected[offset:offset + expected_side, offset:offset + expected_side] = True
  assert np.array_equal(mask[0, ..., 0], expected) and np.array_equal(mask[1], mask[0])


def test_random_blocks_hide_whole_grid_blocks_covering_the_configured_fraction():
  mask = np.asarray(hidden_region_mask(jax.random.PRNGKey(3), 32, 8, 8,
                                                   "random_blocks", 0.25, 4))[..., 0]
  assert np.all(mask.sum(axis=(1, 2)) == 16)  # 4 of the 16 2x2 blocks of each image
  blocks = mask.reshape(32, 4, 2, 4, 2)
  assert np.all(blocks.min(axis=(2, 4)) == blocks.max(axis=(2, 4)))  # whole blocks only
  assert len({m.tobytes() for m in mask}) > 20  # different blocks per image
  with pytest.raises(UserError, match="hidden fraction"):
    corruptions.check_region("center", 1.0, 4)


# ----------------------------------------------------------------------------------------------
# Decoder and pictures.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("widths,image_shape,code_shape", [
    ((32, 16, 8), (8, 8, 1), (3, 16)),  # digits: 2x2 -> 8x8
    ((32, 16, 8, 8), (32, 32, 3), (3, 16)),  # CIFAR: 4x4 -> 32x32
    ((16, 8), (32, 32, 3), (3, 16, 16, 5)),  # a feature map of the first resolution
])
def test_decoder_output_shapes(widths, image_shape, code_shape):
  decoder = Decoder(widths=widths)
  code = jnp.ones(code_shape)
  out, _ = jax.eval_shape(
      lambda c: decoder.init_with_output(jax.random.PRNGKey(0), c, image_shape), code)
  assert out.shape == (3, *image_shape)


def test_decoder_rejects_an_image_side_its_upsamplings_cannot_reach():
  with pytest.raises(UserError, match="not a multiple"):
    Decoder(widths=(8, 8, 8, 8)).init(jax.random.PRNGKey(0), jnp.ones((1, 4)), (12, 12, 1))
  config = tiny_reconstruction("autoencoder", **{"data.image_size": 12, "decoder.widths":
                                                 (8, 8, 8, 8)})
  with pytest.raises(UserError, match="not a multiple"):
    methods.build(config, LENGTH)


# Each pictures test jits one function (pictures and the reference computation) on the
# initial parameters: on 2 CPU cores a compile costs seconds, and eager Flax is slower still.


def _model(state):
  return state["params"]["model"], state["extra"]


def _picture_and_network_outputs(initial_states, name, code_dim, images):
  """(the method's one picture grid, the network's output on the grid's middle column
  (the corrupted input), the encoder features h of `images`, represent(images))."""
  config, trainer, state = initial_states(name)
  method = trainer.method
  network = EncoderDecoder(build_encoder(config.encoder), Decoder(**config.decoder), code_dim)

  def run(params, extra, images):
    (grid,) = method.pictures(params, extra, images, jax.random.PRNGKey(2)).values()
    _, _, output = apply_in_eval_mode(network, params, extra["batch_stats"], grid[:, 1])
    h, _ = apply_in_eval_mode(network, params, extra["batch_stats"], images,
                              method=EncoderDecoder.encode)
    return grid, output, h, method.represent(params, extra, images)

  return jax.device_get(jax.jit(run)(*_model(state), images))


def test_autoencoder_pictures_show_input_noisy_input_and_the_network_output(initial_states):
  images = jax.random.uniform(jax.random.PRNGKey(1), (5, 8, 8, 1))  # [0, 1]: mean 0, std 1
  grid, output, h, represented = _picture_and_network_outputs(initial_states, "autoencoder",
                                                              8, images)
  assert grid.shape == (5, 3, 8, 8, 1)
  np.testing.assert_array_equal(grid[:, 0], images)
  assert np.all((grid[:, 1] == 0).sum(axis=(1, 2, 3)) == 16)  # masking noise, 25% of 64
  np.testing.assert_allclose(grid[:, 2], output, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(represented, h, rtol=1e-6)  # features of the clean images


def test_training_then_evaluation_writes_the_vaes_pictures_into_the_report(data_dir, tmp_path):
  """End to end through the trainer's evaluate-at-end: the VAE's three pictures and the two
  plots are written as PNGs beside the report and linked from report.md (one cheap protocol,
  one feature source and one device, to keep it fast; sharded evaluation is test_train's)."""
  config = tiny_reconstruction("vae", data_dir, total_steps=2, evaluate_at_end=True,
                               mesh="data:1", **{
      "evals.probes.protocols": ("knn",), "eval.feature_sources": ("ssl",),
      "evals.probes.labels_per_class": (0,), "evals.probes.seeds": 1,
      "evals.pictures.num_pictures": 3, "evals.plots.enabled": True,
      "evals.finetune.fractions": ()})
  workdir = str(tmp_path / "vae")
  main.run(config, workdir)
  report = json.load(open(os.path.join(workdir, "eval", "report.json")))
  assert report["pictures"] == ["reconstructions.png", "samples.png", "traversal.png"]
  assert report["plots"] == ["accuracy_vs_labels.png", "feature_map.png"]
  markdown = open(os.path.join(workdir, "eval", "report.md")).read()
  for name in report["plots"] + report["pictures"]:
    assert f"![{name}]({name})" in markdown
    assert Image.open(os.path.join(workdir, "eval", name)).size[0] > 100
  # 3 test images, input beside reconstruction: 8 px cells enlarged to 64 px, 1 px gutters.
  reconstructions = np.asarray(Image.open(os.path.join(workdir, "eval", "reconstructions.png")))
  assert reconstructions.shape == (3 * 65 - 1, 2 * 65 - 1)
  assert reconstructions.std() > 0


def test_vae_pictures_representation_and_beta_weighted_loss(initial_states):
  """Pictures: reconstructions decode the posterior mean, samples decode z ~ N(0, I), row d of
  the traversal varies latent d of the first image's mean over -3..3; the representation is
  the posterior mean; the loss is recon NLL + beta KL (beta 3 adds 2 KL to beta 1's)."""
  config, trainer, state = initial_states("vae")
  method = trainer.method
  config_beta_3 = config.copy_and_resolve_references()
  config_beta_3.vae.beta = 3.0
  method_beta_3 = methods.build(config_beta_3, LENGTH)
  network = GaussianEncoderDecoder(build_encoder(config.encoder), Decoder(**config.decoder), 4)

  def run(params, extra, images):
    batch_stats = extra["batch_stats"]
    grids = method.pictures(params, extra, images, jax.random.PRNGKey(2))
    mean, _ = apply_in_eval_mode(network, params, batch_stats, images,
                                 method=GaussianEncoderDecoder.encode)

    def decode(z):  # binomial: the picture is the pixel mean sigmoid(logits) (unit pixels)
      return jax.nn.sigmoid(apply_in_eval_mode(network, params, batch_stats, z, (8, 8, 1),
                                               method=GaussianEncoderDecoder.decode))

    traversal_row_1 = jnp.repeat(mean[:1], 5, axis=0).at[:, 1].set(jnp.linspace(-3, 3, 5))
    batch = {"views": images[:, None]}
    losses_by_beta = [m.loss(params, extra, batch, jax.random.PRNGKey(4), 0)
                      for m in (method, method_beta_3)]
    return (grids, mean, method.represent(params, extra, images), decode(mean),
            decode(traversal_row_1), losses_by_beta)

  images = jax.random.uniform(jax.random.PRNGKey(1), (5, 8, 8, 1))
  grids, mean, represented, decoded_mean, decoded_row_1, losses_by_beta = jax.device_get(
      jax.jit(run)(*_model(state), images))
  assert {k: v.shape for k, v in grids.items()} == {
      "reconstructions": (5, 2, 8, 8, 1), "samples": (4, 8, 8, 8, 1),
      "traversal": (3, 5, 8, 8, 1)}
  np.testing.assert_array_equal(grids["reconstructions"][:, 0], images)
  np.testing.assert_allclose(grids["reconstructions"][:, 1], decoded_mean, rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(grids["traversal"][1], decoded_row_1, rtol=1e-5, atol=1e-6)
  samples = grids["samples"].reshape(32, -1)
  assert np.all((samples >= 0) & (samples <= 1)) and np.ptp(samples, axis=0).max() > 0
  np.testing.assert_allclose(represented, mean, rtol=1e-6)

  (loss_1, out_1), (loss_3, out_3) = losses_by_beta
  kl = float(out_1.metrics["kl"])
  assert kl > 0
  np.testing.assert_allclose(loss_1, out_1.metrics["negative_elbo"], rtol=1e-6)
  np.testing.assert_allclose(loss_3 - loss_1, 2 * kl, rtol=1e-4)
  np.testing.assert_allclose(out_1.features, out_3.features)  # the posterior means


def test_inpainting_pictures_fill_only_the_hidden_region_with_the_prediction(initial_states):
  """The digits config hides one random quadrant (random_blocks, grid 2, size 0.25)."""
  images = jax.random.normal(jax.random.PRNGKey(1), (6, 8, 8, 1))  # no pixel is exactly 0
  grid, prediction, h, represented = _picture_and_network_outputs(initial_states,
                                                                  "inpainting", 16, images)
  assert grid.shape == (6, 3, 8, 8, 1)
  np.testing.assert_array_equal(grid[:, 0], images)
  hidden = grid[:, 1] == 0
  np.testing.assert_array_equal(grid[:, 1][~hidden], np.asarray(images)[~hidden])
  quadrants = hidden[..., 0].reshape(6, 2, 4, 2, 4).transpose(0, 1, 3, 2, 4).reshape(6, 4, 16)
  assert np.all(quadrants.all(-1).sum(-1) == 1) and np.all(hidden.sum(axis=(1, 2, 3)) == 16)
  np.testing.assert_array_equal(grid[:, 2][~hidden], np.asarray(images)[~hidden])
  np.testing.assert_allclose(grid[:, 2][hidden], prediction[hidden], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(represented, h, rtol=1e-6)  # the full, unmasked image's features


# ----------------------------------------------------------------------------------------------
# Through the trainer.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(RECONSTRUCTION))
def test_sharded_equals_single_device_for_three_steps(name, initial_states):
  """3 steps on 8 fake devices equal 3 on 1: params, losses and BatchNorm statistics (so the
  corruptions and the VAE's samples are the same draws however the batch is split)."""
  assert jax.device_count() == 8, "conftest.py must give 8 fake CPU devices"
  config, single, initial = initial_states(name)
  batches = image_pipeline.train_batches(config, start_step=0, process_index=0, process_count=1)
  batches = [next(batches) for _ in range(3)]
  del single  # the pictures tests' trainer; the helper builds one per mesh
  results = steps_on_meshes(config, batches, (8, 8, 1), LENGTH, initial=initial)
  moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), results[1][1]["params"],
                       initial["params"])
  assert max(jax.tree.leaves(moved)) > 1e-3  # the steps really changed the parameters
  assert_sharded_equals_single_device(results)


@pytest.mark.parametrize("variant", ["cifar10", "imagenet2012"])
@pytest.mark.parametrize("name", list(RECONSTRUCTION))
def test_one_step_of_the_real_dataset_configs_on_mock_tfds(name, variant, tmp_path):
  """The variant's pipeline, normalisation, corruption, likelihood and optimizer, with a tiny CNN
  in place of ResNet-18/50, a one-stage decoder (dense to 32x32x8, then the output
  convolution), no online probe, ImageNet's crops shrunk to 32 px and one device (the sharded
  step is tested above; orbax's per-device copies would double the time)."""
  config = importlib.import_module(f"configs.{name}").get_config(f"{variant},runlocal=True")
  config.unlock()
  override(config, total_steps=1, evaluate_at_end=False, batch_size=8, mesh="data:1",
           encoder={"name": "convnet", "widths": (8, 16), "convs_per_stage": 1},
           decoder={"widths": (8,), "convs_per_stage": 0}, **{"online_probe.enabled": False})
  if variant == "imagenet2012":
    override(config, **{"data.image_size": 32, "data.eval_resize": 36})
  with tfds.testing.mock_data(num_examples=16):
    state = train.run(config, str(tmp_path / name))
  assert int(state["step"]) == 1
  row = json.loads(open(tmp_path / name / "metrics.jsonl").readline())
  assert row["step"] == 1 and np.isfinite(row["loss"])
  if name == "inpainting":
    # cifar10: 4 of the 16 8x8 blocks; imagenet2012: the central 16x16 of 32x32.
    assert row["hidden_fraction"] == pytest.approx(0.25)
