"""Colorization (Zhang, Isola, Efros 2016, "Colorful Image Colorization").

A fully convolutional network (`models.colorizer.Colorizer`) sees only the lightness L of
CIE Lab and predicts the colour channels ab per output pixel (the targets are the image's
ab, average-pooled to the output resolution). Undoing the trainer's normalisation with
`config.augment`'s mean and std gives the RGB image the Lab conversion needs
(`ssl_jax.data.color`); the network input is (L - 50) / 50.

`colorization.mode` picks the loss:

  "classification" (the paper, Sec. 2.1-2.2): ab is quantised into bins of side
    `bin_size` (10), keeping the Q bins in the sRGB gamut. The true colour of each pixel is
    soft-encoded over its `neighbours` (5) nearest bins with a Gaussian of `encoding_sigma`
    (5) (Z = H^-1(Y)); the loss is the multinomial cross-entropy, each pixel weighted by the
    class-rebalancing weight of its nearest bin (Eq. 2):
      L = -mean_{h,w} v(Z_hw) sum_q Z_hwq log Zhat_hwq,   v(Z_hw) = w_{argmax_q Z_hwq},
      w ~ ((1 - lambda) p~ + lambda / Q)^-1,   E_p~[w] = 1   (Eq. 3-4, lambda = `rebalance_mix`),
    with p~ the empirical distribution of the pixels' nearest bins smoothed by a Gaussian of
    `prior_sigma` (5) in ab. The point prediction is the annealed mean of Eq. 5 with
    T = `annealing_temperature` (0.38).
  "regression": the L2 loss of Eq. 1, 1/2 ||Y - Yhat||^2 in Lab units averaged over pixels;
    the network's two outputs are ab in hundreds.

The paper computes p (its Fig. 3) once over the ImageNet training set. Here p is the running
mean of each step's global-batch histogram of nearest bins, p_t = p_(t-1) + (h_t -
p_(t-1)) / (t + 1), carried in `extra["color_prior"]`: after t steps it is the histogram of
all training pixels seen so far (the same estimate without a separate pass over the data,
and without the method reading the dataset at build time). The first step's weights come
from its own batch.

The representation is the encoder's last feature map averaged over space, computed from the
L channel only (the paper evaluates the colorization network on grayscale inputs).
`pictures` shows, for the first 8 images, the grayscale input, the predicted colours (L with
the upsampled predicted ab) and the original.
"""
from typing import Any

import jax
import jax.numpy as jnp

from ssl_jax.data import color
from ssl_jax.errors import UserError
from ssl_jax.methods import (Method, StepOutput, check_choice, check_num_views, check_number,
                             check_options, check_sizes)
from ssl_jax.models import apply_in_eval_mode, apply_in_train_mode, init_variables
from ssl_jax.models.colorizer import Colorizer

MODES = ("classification", "regression")
_LIGHTNESS_CENTRE = 50.0  # L in [0, 100] -> (L - 50) / 50 in [-1, 1]
_REGRESSION_UNIT = 100.0  # regression outputs are ab / 100
_PICTURE_ROWS = 8
# Augmentations that change colours: the colours are the targets, so they must stay off.
_COLOUR_CHANGING = ("jitter_prob", "grayscale_prob", "solarize_prob")


def _check_settings(config) -> None:
  """UserErrors for settings that cannot work, before anything is built."""
  settings = config.colorization
  check_choice("config.colorization.mode", settings.mode, MODES)
  if len(config.augment.mean) != 3:
    raise UserError("colorization needs RGB images: config.augment.mean must have 3 entries, "
                    f"got {len(config.augment.mean)}")
  changing = [key for key in _COLOUR_CHANGING
              if any(p > 0 for p in _as_tuple(config.augment[key]))]
  if changing:
    raise UserError(f"colorization predicts the original colours: config.augment.{changing[0]} "
                    "must be 0")
  for key in ("bin_size", "encoding_sigma", "prior_sigma", "annealing_temperature"):
    check_number(f"config.colorization.{key}", settings[key], above=0)
  check_number("config.colorization.rebalance_mix", settings.rebalance_mix, above=0, maximum=1)
  # The lengths of the per-stage settings are checked by `Colorizer.encoder_stages`.
  colorizer = config.colorizer
  check_options("config.colorizer", colorizer, Colorizer, fixed=("num_outputs",))
  check_sizes("config.colorizer.widths", colorizer.get("widths", Colorizer.widths))
  check_sizes("config.colorizer.decoder_widths",
              colorizer.get("decoder_widths", Colorizer.decoder_widths), allow_empty=True)
  for key in ("convs_per_stage", "strides", "dilations"):
    value = colorizer.get(key, getattr(Colorizer, key))
    if isinstance(value, (tuple, list)):
      check_sizes(f"config.colorizer.{key}", value)
    else:  # one value for every stage
      check_number(f"config.colorizer.{key}", value, minimum=1, integer=True)


def build(config, length) -> Method:
  check_num_views(config, 1, "Colorization")
  del length  # no schedule besides the optimizer's
  _check_settings(config)
  settings = config.colorization
  classification = settings.mode == "classification"
  centres = jnp.asarray(color.ab_gamut_bins(float(settings.bin_size)))
  num_bins = centres.shape[0]
  if classification:
    check_number(f"config.colorization.neighbours (of the {num_bins} in-gamut bins)",
                 settings.neighbours, minimum=1, maximum=num_bins, integer=True)
  network = Colorizer(**config.colorizer, num_outputs=num_bins if classification else 2)
  network.encoder_stages()  # checks the per-stage settings now, not at the first step
  mean = jnp.asarray(config.augment.mean, jnp.float32)
  std = jnp.asarray(config.augment.std, jnp.float32)

  def to_lab(images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Normalised RGB images -> (network input (L - 50) / 50 [..., 1], Lab [..., 3])."""
    lab = color.srgb_to_lab(jnp.clip(images * std + mean, 0.0, 1.0))
    return (lab[..., :1] - _LIGHTNESS_CENTRE) / _LIGHTNESS_CENTRE, lab

  def predicted_ab(outputs: jax.Array) -> jax.Array:
    """The network's point estimate of ab per output pixel."""
    if classification:
      return color.annealed_mean(outputs, centres, settings.annealing_temperature)
    return outputs * _REGRESSION_UNIT

  def init(rng: jax.Array, batch: dict[str, jax.Array]) -> tuple[Any, Any]:
    network_input, _ = to_lab(batch["views"][:, 0])
    params, batch_stats = init_variables(network, rng, network_input)
    extra = {"batch_stats": batch_stats}
    if classification:  # uniform until the first step: every rebalancing weight is 1
      extra["color_prior"] = jnp.full((num_bins,), 1.0 / num_bins, jnp.float32)
    return params, extra

  def loss(params, extra, batch, rng, step):
    del rng
    network_input, lab = to_lab(batch["views"][:, 0])
    (outputs, features), batch_stats = apply_in_train_mode(
        network, params, extra["batch_stats"], network_input)
    target = _average_pool(lab[..., 1:], outputs.shape[1:3])
    new_extra = {"batch_stats": batch_stats}
    if classification:
      indices, weights = color.soft_encode(target, centres, settings.neighbours,
                                           settings.encoding_sigma)
      nearest = indices[..., 0]
      counts = jax.ops.segment_sum(jnp.ones(nearest.size, jnp.float32), nearest.reshape(-1),
                                   num_segments=num_bins)
      prior = extra["color_prior"]
      prior = prior + (counts / nearest.size - prior) / jnp.asarray(step + 1, jnp.float32)
      rebalancing = color.rebalancing_weights(
          color.smoothed_prior(prior, centres, settings.prior_sigma), settings.rebalance_mix)
      value = rebalanced_cross_entropy(outputs, indices, weights, rebalancing[nearest])
      new_extra["color_prior"] = prior
    else:
      value = jnp.mean(0.5 * jnp.sum((outputs * _REGRESSION_UNIT - target) ** 2, axis=-1))
    error = jnp.sqrt(jnp.mean(jnp.sum((predicted_ab(outputs) - target) ** 2, axis=-1)))
    return value, StepOutput(new_extra, {"ab_rmse": error}, features)

  def represent(params, extra, images):
    network_input, _ = to_lab(images)
    _, features = apply_in_eval_mode(network, params, extra["batch_stats"], network_input)
    return features

  def pictures(params, extra, images, rng):
    del rng
    images = images[:_PICTURE_ROWS]
    network_input, lab = to_lab(images)
    outputs, _ = apply_in_eval_mode(network, params, extra["batch_stats"], network_input)
    ab = jax.image.resize(predicted_ab(outputs), lab.shape[:-1] + (2,), "bilinear")
    lightness = lab[..., :1]
    columns = [color.lab_to_srgb(jnp.concatenate([lightness, jnp.zeros_like(ab)], axis=-1)),
               color.lab_to_srgb(jnp.concatenate([lightness, ab], axis=-1)),
               jnp.clip(images * std + mean, 0.0, 1.0)]
    return {"colorization": (jnp.stack(columns, axis=1) - mean) / std}

  return Method(init=init, loss=loss, represent=represent, pictures=pictures,
                coupling="its colour prior and BatchNorm are statistics of the batch")


def rebalanced_cross_entropy(logits: jax.Array, indices: jax.Array, weights: jax.Array,
                             pixel_weights: jax.Array) -> jax.Array:
  """Eq. 2 averaged over pixels: -mean v * sum_q Z_q log softmax(logits)_q, with the soft
  target Z given by its nonzero entries (`indices`, `weights` [..., K]) and v the per-pixel
  rebalancing weight [...]."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  cross_entropy = -jnp.sum(weights * jnp.take_along_axis(log_probs, indices, axis=-1), axis=-1)
  return jnp.mean(pixel_weights * cross_entropy)


def _as_tuple(value) -> tuple:
  """A probability or a per-view tuple of them, as a tuple."""
  return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _average_pool(ab: jax.Array, size: tuple[int, int]) -> jax.Array:
  """[B, H, W, 2] -> [B, h, w, 2], the mean of each (H/h) x (W/w) block."""
  batch, height, width, channels = ab.shape
  out_height, out_width = size
  if height % out_height or width % out_width:
    raise UserError(f"the colorizer's output ({out_height}x{out_width}) must divide the "
                    f"image ({height}x{width}): check colorizer.strides and decoder_widths")
  return ab.reshape(batch, out_height, height // out_height, out_width, width // out_width,
                    channels).mean(axis=(2, 4))
