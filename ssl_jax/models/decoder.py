"""A convolutional decoder (code -> image) and the encoder-decoder networks built on it.

The reconstruction objectives (autoencoders, Vincent et al. 2008; the VAE, Kingma & Welling
2014; Context Encoders, Pathak et al. 2016) need a network that maps a code back to pixels.
`Decoder` follows the DCGAN generator (Radford et al. 2016) that Pathak et al.'s decoder is
adapted from: a dense layer reshapes a code vector into a small feature map, then each entry of
`widths` after the first doubles the resolution with a 4x4 stride-2 transposed convolution,
followed by `convs_per_stage` 3x3 convolutions, each with BatchNorm and ReLU; a final 3x3
convolution gives the image channels with no activation (the caller reads them as pixels,
normalised pixels or Bernoulli logits). The first feature map is image_side / 2^(len(widths)-1),
so 8x8 digits take 3 widths (2 -> 4 -> 8), 32x32 CIFAR 4 (4 -> 32) and 224 px ImageNet 6
(7 -> 224). The output shape is given at call time (`image_shape`), from the images the
encoder saw, so one config section serves every dataset.

The encoders here (`convnet`, `resnet`) pool their last feature map to a vector, so the
methods decode vectors; a feature map [B, h, w, c] of the first resolution is also accepted
(a 1x1 convolution takes it to `widths[0]` channels), for encoders that keep their spatial map.
"""
import dataclasses
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.config_lib import check_number
from ssl_jax.errors import UserError
from ssl_jax.models import build_encoder, policy


def first_feature_map_side(image_side: int, widths: Sequence[int],
                           key: str = "config.decoder.widths") -> int:
  """The side of the decoder's first feature map; a UserError (naming the config key `key`)
  unless the image side is a multiple of 2^(len(widths) - 1), which the stride-2 upsamplings
  need."""
  if not widths:
    raise UserError(f"{key} must name at least one stage")
  factor = 2 ** (len(widths) - 1)
  if image_side % factor:
    raise UserError(f"{key} has {len(widths)} stages, which upsample by {factor}; "
                    f"the image side {image_side} is not a multiple of it")
  return image_side // factor


class Decoder(nn.Module):
  """Code [B, D] (or a feature map [B, h, w, c]) -> image [B, H, W, C]; see the module doc."""
  widths: Sequence[int] = (128, 64, 32)
  convs_per_stage: int = 1
  dtype: Any = dataclasses.field(default_factory=policy.compute_dtype)

  @nn.compact
  def __call__(self, code: jax.Array, image_shape: tuple[int, int, int],
               train: bool = False) -> jax.Array:
    dtype = jnp.dtype(self.dtype)
    height, width, channels = image_shape
    first = (first_feature_map_side(height, self.widths),
             first_feature_map_side(width, self.widths))
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             dtype=dtype)
    x = code.astype(dtype)
    if x.ndim == 2:
      x = nn.Dense(first[0] * first[1] * self.widths[0], use_bias=False, dtype=dtype)(x)
      x = x.reshape((x.shape[0], *first, self.widths[0]))
    elif x.shape[1:3] == first:
      x = nn.Conv(self.widths[0], (1, 1), use_bias=False, dtype=dtype)(x)
    else:
      raise UserError(f"the decoder's first feature map is {first}, got a code of shape "
                      f"{code.shape}")
    x = nn.relu(norm()(x))
    for stage, stage_width in enumerate(self.widths):
      if stage > 0:
        x = nn.ConvTranspose(stage_width, (4, 4), (2, 2), padding="SAME", use_bias=False,
                             dtype=dtype)(x)
        x = nn.relu(norm()(x))
      for _ in range(self.convs_per_stage):
        x = nn.Conv(stage_width, (3, 3), use_bias=False, dtype=dtype)(x)
        x = nn.relu(norm()(x))
    return nn.Conv(channels, (3, 3), dtype=dtype)(x).astype(jnp.float32)


class EncoderDecoder(nn.Module):
  """x -> encoder -> h -> Dense -> code [B, code_dim] -> decoder -> image like x.

  The autoencoder's latent and the Context Encoder's fully connected bottleneck (Pathak et
  al. 2016, Sec. 3.1: it lets every decoder unit see the whole encoding; on a pooled encoder
  vector a channel-wise fully connected layer is a dense layer).
  """
  encoder: nn.Module
  decoder: nn.Module
  code_dim: int

  def setup(self):
    self.to_code = nn.Dense(self.code_dim)

  def encode(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    """(h, code): the pooled encoder features and the bottleneck code."""
    h = self.encoder(x, train=train)
    return h, self.to_code(h)

  def decode(self, code: jax.Array, image_shape: tuple[int, int, int],
             train: bool = False) -> jax.Array:
    return self.decoder(code, image_shape, train=train)

  def __call__(self, x: jax.Array, train: bool = False):
    """(h, code, reconstruction)."""
    h, code = self.encode(x, train=train)
    return h, code, self.decode(code, x.shape[1:], train=train)


class GaussianEncoderDecoder(nn.Module):
  """The VAE's networks (Kingma & Welling 2014, Sec. 3 and Appendix C.2): the encoder and a
  dense layer give the mean and log-variance of a diagonal Gaussian q(z|x) over `latent_dim`
  dimensions; the decoder maps a latent z to the parameters of p(x|z)."""
  encoder: nn.Module
  decoder: nn.Module
  latent_dim: int

  def setup(self):
    self.to_posterior = nn.Dense(2 * self.latent_dim)

  def encode(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    """(mean, log_variance) of q(z|x), each [B, latent_dim]."""
    mean, log_variance = jnp.split(self.to_posterior(self.encoder(x, train=train)), 2, axis=-1)
    return mean, log_variance

  def decode(self, z: jax.Array, image_shape: tuple[int, int, int],
             train: bool = False) -> jax.Array:
    return self.decoder(z, image_shape, train=train)

  def __call__(self, x: jax.Array, standard_normal: jax.Array, train: bool = False):
    """(mean, log_variance, decoded z) with the reparameterised sample
    z = mean + exp(log_variance / 2) * standard_normal (Sec. 2.4, Eq. 10's sampling)."""
    mean, log_variance = self.encode(x, train=train)
    z = mean + jnp.exp(0.5 * log_variance) * standard_normal
    return mean, log_variance, self.decode(z, x.shape[1:], train=train)


def build_encoder_decoder(config: Any, network_class: type[nn.Module], code_dim: int,
                          code_key: str) -> nn.Module:
  """`network_class(encoder, decoder, code_dim)` from `config.encoder` and `config.decoder`,
  after the build-time checks: a code of at least one dimension (`code_key` names its config
  key in the error) and a `config.data.image_size` the decoder's upsamplings reach."""
  check_number(code_key, code_dim, minimum=1, integer=True)
  first_feature_map_side(config.data.image_size, config.decoder.widths)
  return network_class(build_encoder(config.encoder), Decoder(**config.decoder), code_dim)
