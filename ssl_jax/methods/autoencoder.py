"""A convolutional (denoising) autoencoder (Hinton & Salakhutdinov 2006; Vincent et al. 2008,
"Extracting and Composing Robust Features with Denoising Autoencoders").

The encoder (`config.encoder`) pools an image to features h, a dense layer maps h to a code of
`latent_dim`, and the decoder (`ssl_jax.models.decoder`) maps the code back to an image; the
loss is the mean squared error to the clean input (`losses.mean_squared_error`). With
`noise` set, the input is first corrupted on the device with the step's rng and the network
must still reconstruct the clean image (Vincent et al.'s denoising criterion, Sec. 2.3 /
Eq. 3): "gaussian" (additive, std `noise_level`), "masking" (a `noise_level` fraction of the
pixels set to 0) or "salt_and_pepper" (that fraction set to 0 or 1), on the [0, 1] pixel
scale (`ssl_jax.corruptions`). The logged `noisy_input_mse` is the error of returning the
noisy input unchanged, which the reconstruction has to beat.

The representation is the pooled encoder features h, not the code: the code is a linear map
of h, so a linear probe on h can do all a probe on the code can, and h is what the other
methods (and the `random_init` baseline) report for the same encoder. `represent` encodes
clean images; the online probe sees h of the noisy ones.

The reconstruction error, the anomaly evaluation's score (Japkowicz et al. 1995; Sakurada &
Yairi 2014), is the loss's per image: the error of reconstructing the clean image from a
noisy one, the noise drawn from the evaluation's fixed rng (`corrupted_reconstruction_method`).

Config (`config.autoencoder`): latent_dim, noise, noise_level; `config.encoder` and
`config.decoder` give the networks.
"""
import jax

from ssl_jax import corruptions, losses
from ssl_jax.data import augment
from ssl_jax.methods import (Method, check_image_decoder, check_num_views,
                             corrupted_reconstruction_method)
from ssl_jax.models.decoder import EncoderDecoder, build_encoder_decoder


def build(config, length) -> Method:
  check_num_views(config, 1, "autoencoder")
  del length  # no schedule besides the optimizer's
  settings = config.autoencoder
  corruptions.check_noise(settings.noise, settings.noise_level, "config.autoencoder")
  check_image_decoder(config)
  noise, noise_level = settings.noise, float(settings.noise_level)
  network = build_encoder_decoder(config, EncoderDecoder, settings.latent_dim,
                                  "config.autoencoder.latent_dim")

  def corrupt(rng: jax.Array, images: jax.Array):
    """Normalised images -> (the same with `noise` applied on the pixel scale, no mask: the
    loss counts every pixel, metrics)."""
    noisy = images
    if noise != "none":
      pixels = augment.unnormalize_images(images, config)
      noisy = augment.normalize_unit_images(
          corruptions.pixel_noise(rng, pixels, noise, noise_level), config)
    return noisy, None, {"noisy_input_mse": losses.mean_squared_error(noisy, images)}

  # Picture "reconstructions": input, noisy input, reconstruction.
  return corrupted_reconstruction_method(network, corrupt, "reconstructions")
