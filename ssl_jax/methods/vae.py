"""The variational autoencoder (Kingma & Welling 2014, "Auto-Encoding Variational Bayes"),
with the beta-VAE weighting of Higgins et al. 2017.

The encoder (`config.encoder` and a dense layer) gives the mean and log-variance of a
diagonal Gaussian posterior q(z|x) over `latent_dim` dimensions (Appendix C.2); a latent is
sampled with the reparameterisation z = mu + sigma * eps, eps ~ N(0, I) (Sec. 2.4), and the
decoder (`ssl_jax.models.decoder`) gives the parameters of p(x|z). The loss is the negative
ELBO of Eq. 10 with its closed-form KL (Appendix B), one sample per image, averaged over the
batch:

  -ELBO = -log p(x|z) + beta * KL(q(z|x) || N(0, I)),

beta = 1 being the paper's bound and beta > 1 Higgins et al.'s disentangling pressure. The
likelihood (`likelihood`) is over the pixels on the [0, 1] scale (the normalised input
un-normalised with `config.augment`, clipped to [0, 1]): "bernoulli" (the decoder outputs
logits; Appendix C.1, the paper's choice for MNIST), "binomial" (each pixel the fraction of
`binomial_trials` binary sub-pixels that are on, with one probability per pixel: the UCI
digits' pixels count the set pixels of 4x4 blocks of a 32x32 bitmap, so 16 trials models that
bitmap with the paper's Bernoulli pixels, one probability per block) or "gaussian" with a
fixed std `observation_std` (the decoder outputs the mean).

The representation is the posterior mean mu (eval mode), as in the textbook use of a VAE for
semi-supervised learning: encode, then propagate a few labels over the latent means.

The reconstruction error (the anomaly evaluation's score) is the mean squared error, in the
normalised input space, of the image decoded from the posterior mean (the mean of p(x|mu),
as the pictures' "reconstructions" show it): deterministic, where the ELBO's sampled term
would add noise to every row's score, and on the same scale as the other reconstruction
methods' errors (An & Cho 2015 score a VAE by its reconstruction probability instead).

Config (`config.vae`): latent_dim, beta, likelihood, binomial_trials, observation_std, and
the pictures' layout (sample_rows, sample_columns, traversal_dims, traversal_steps,
traversal_range); `config.encoder` and `config.decoder` give the networks.
"""
from typing import Any

import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.data import augment
from ssl_jax.methods import (Method, StepOutput, check_choice, check_image_decoder,
                             check_num_views, check_number)
from ssl_jax.models import apply_in_eval_mode, apply_in_train_mode, init_variables
from ssl_jax.models.decoder import GaussianEncoderDecoder, build_encoder_decoder

LIKELIHOODS = ("bernoulli", "binomial", "gaussian")


def _check(config) -> None:
  settings = config.vae
  check_choice("config.vae.likelihood", settings.likelihood, LIKELIHOODS)
  check_number("config.vae.beta", settings.beta, minimum=0)
  check_number("config.vae.binomial_trials", settings.binomial_trials, minimum=1, integer=True)
  check_number("config.vae.observation_std", settings.observation_std, above=0)
  for name in ("sample_rows", "sample_columns", "traversal_dims", "traversal_steps"):
    check_number(f"config.vae.{name}", settings[name], minimum=1, integer=True)
  check_number("config.vae.traversal_range", settings.traversal_range, above=0)
  check_image_decoder(config)


def build(config, length) -> Method:
  check_num_views(config, 1, "VAE")
  del length  # no schedule besides the optimizer's
  _check(config)
  settings = config.vae
  latent_dim, beta = settings.latent_dim, float(settings.beta)
  likelihood = settings.likelihood
  network = build_encoder_decoder(config, GaussianEncoderDecoder, latent_dim,
                                  "config.vae.latent_dim")

  def negative_log_likelihood(decoded: jax.Array, pixels: jax.Array) -> jax.Array:
    if likelihood == "bernoulli":
      return losses.bernoulli_negative_log_likelihood(decoded, pixels)
    if likelihood == "binomial":
      return losses.binomial_negative_log_likelihood(decoded, pixels, settings.binomial_trials)
    return losses.gaussian_negative_log_likelihood(decoded, pixels, settings.observation_std)

  def decoded_images(decoded: jax.Array) -> jax.Array:
    """The mean of p(x|z) on the pixel scale (sigmoid of the logits, or the Gaussian mean),
    normalised."""
    mean = decoded if likelihood == "gaussian" else jax.nn.sigmoid(decoded)
    return augment.normalize_unit_images(mean, config)

  def init(rng: jax.Array, batch: dict[str, jax.Array]) -> tuple[Any, Any]:
    images = batch["views"][:, 0]
    params, batch_stats = init_variables(network, rng, images,
                                         jnp.zeros((images.shape[0], latent_dim)))
    return params, {"batch_stats": batch_stats}

  def loss(params, extra, batch, rng, step):
    del step
    sample_rng, dropout_rng = jax.random.split(rng)
    images = batch["views"][:, 0]
    pixels = jnp.clip(augment.unnormalize_images(images, config), 0.0, 1.0)
    standard_normal = jax.random.normal(sample_rng, (images.shape[0], latent_dim))
    (mean, log_variance, decoded), batch_stats = apply_in_train_mode(
        network, params, extra["batch_stats"], images, standard_normal, rng=dropout_rng)
    reconstruction = negative_log_likelihood(decoded, pixels)
    kl = losses.gaussian_kl_to_standard_normal(mean, log_variance)
    value = jnp.mean(reconstruction + beta * kl)
    metrics = {"reconstruction_nll": jnp.mean(reconstruction), "kl": jnp.mean(kl),
               "negative_elbo": jnp.mean(reconstruction + kl)}
    return value, StepOutput({"batch_stats": batch_stats}, metrics, mean)

  def encode(params, extra, images):
    return apply_in_eval_mode(network, params, extra["batch_stats"], images,
                              method=GaussianEncoderDecoder.encode)

  def decode(params, extra, z, image_shape):
    decoded = apply_in_eval_mode(network, params, extra["batch_stats"], z, image_shape,
                                 method=GaussianEncoderDecoder.decode)
    return decoded_images(decoded)

  def represent(params, extra, images):
    mean, _ = encode(params, extra, images)
    return mean

  def reconstruct(params, extra, images):
    """(posterior means, the images decoded from them)."""
    mean, _ = encode(params, extra, images)
    return mean, decode(params, extra, mean, images.shape[1:])

  def reconstruction_error(params, extra, images, rng):
    del rng  # deterministic: the posterior mean, not a sample
    _, reconstructed = reconstruct(params, extra, images)
    return jax.vmap(losses.mean_squared_error)(reconstructed, images)

  def pictures(params, extra, images, rng):
    """"reconstructions" (input, decoded posterior mean), "samples" (decoded z ~ N(0, I),
    sample_rows x sample_columns) and "traversal" (the first image's posterior mean with
    latent d, one row per d < traversal_dims, set to traversal_steps values across
    +-traversal_range)."""
    image_shape = images.shape[1:]
    mean, reconstructed = reconstruct(params, extra, images)
    reconstructions = jnp.stack([images, reconstructed], axis=1)

    rows, columns = settings.sample_rows, settings.sample_columns
    z = jax.random.normal(rng, (rows * columns, latent_dim))
    samples = decode(params, extra, z, image_shape).reshape(rows, columns, *image_shape)

    dims = min(settings.traversal_dims, latent_dim)
    values = jnp.linspace(-settings.traversal_range, settings.traversal_range,
                          settings.traversal_steps)
    chosen = jnp.eye(latent_dim)[:dims, None, :]  # [dims, 1, latent]: which latent varies
    z = mean[0] * (1.0 - chosen) + values[None, :, None] * chosen
    traversal = decode(params, extra, z.reshape(-1, latent_dim), image_shape)
    traversal = traversal.reshape(dims, settings.traversal_steps, *image_shape)
    return {"reconstructions": reconstructions, "samples": samples, "traversal": traversal}

  return Method(init=init, loss=loss, represent=represent, pictures=pictures,
                reconstruction_error=reconstruction_error,
                coupling="its decoder normalises by the batch's statistics (BatchNorm)")
