"""The masked autoencoder network of MAE (He et al. 2021, "Masked Autoencoders Are Scalable
Vision Learners", Sec. 3 and Fig. 1): a ViT encoder that sees only the visible patches, and a
light transformer decoder that predicts the pixels of every patch.

Encoder: the ViT's own patch embedding and position embeddings (`vit.Encoder.embed`) on all
patches; the visible patch tokens are gathered (the CLS token always stays) and only they run
through the blocks and final LayerNorm (`vit.Encoder.encode`), so the encoder costs a quarter
of a full pass at the paper's 75% masking.

Decoder (`MAEDecoder`): a linear map from the encoder width to the decoder width, one shared
learned mask token for every masked patch, the tokens put back in image order, fixed 2-D
sin-cos position embeddings (zero for the CLS token) added to all of them, `depth` pre-norm
transformer blocks (`vit.Block`), a LayerNorm and a linear layer to the patch's pixels.
As in MAE, the mask token starts as normal(std 0.02) and the two linear maps as Xavier-uniform;
the blocks keep `vit.Block`'s truncated-normal(0.02) initialisation (MAE's code uses Xavier-
uniform there too).

Patches are flattened as (row in patch, column in patch, channel), row-major over the grid,
which is the order of the ViT's patch embedding and of MAE's `patchify`.
"""
import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.models import policy, vit

_XAVIER = nn.initializers.xavier_uniform()


def patchify(images: jax.Array, patch_size: int) -> jax.Array:
  """[B, H, W, C] -> [B, (H / p) * (W / p), p * p * C], patches in row-major grid order."""
  batch, height, width, channels = images.shape
  rows, columns = height // patch_size, width // patch_size
  x = images.reshape(batch, rows, patch_size, columns, patch_size, channels)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(batch, rows * columns, patch_size * patch_size * channels)


def unpatchify(patches: jax.Array, patch_size: int, channels: int) -> jax.Array:
  """Inverse of `patchify` for square images: [B, N, p * p * C] -> [B, H, W, C]."""
  batch, num_patches, _ = patches.shape
  grid = math.isqrt(num_patches)
  x = patches.reshape(batch, grid, grid, patch_size, patch_size, channels)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(batch, grid * patch_size, grid * patch_size, channels)


class MAEDecoder(nn.Module):
  """Latent tokens of the visible patches -> predicted pixels of every patch.

  Attributes:
    width, depth, num_heads, mlp_dim: the decoder transformer (MAE's ViT-B recipe: 512, 8, 16,
      2048).
    dtype: computation dtype; the prediction is returned as float32.
  """
  width: int = 512
  depth: int = 8
  num_heads: int = 16
  mlp_dim: int = 2048
  dtype: Any = dataclasses.field(default_factory=policy.compute_dtype)
  # Recompute each block in the backward pass (`vit.Encoder.remat`).
  remat: bool = dataclasses.field(default_factory=policy.remat_blocks)

  @nn.compact
  def __call__(self, latent: jax.Array, restore_indices: jax.Array, patch_dim: int,
               train: bool = False) -> jax.Array:
    """latent [B, 1 + K, D] (CLS first, then the K visible patches in `keep` order),
    restore_indices [B, N] (position of each image patch in [visible..., masked...])
    -> predicted patches [B, N, patch_dim] in image order."""
    dtype = jnp.dtype(self.dtype)
    batch, num_patches = restore_indices.shape
    x = nn.Dense(self.width, dtype=dtype, kernel_init=_XAVIER, name="embed")(latent)
    mask_token = self.param("mask_token", nn.initializers.normal(stddev=0.02),
                            (1, 1, self.width))
    num_masked = num_patches - (x.shape[1] - 1)
    mask_tokens = jnp.broadcast_to(mask_token.astype(dtype), (batch, num_masked, self.width))
    shuffled = jnp.concatenate([x[:, 1:], mask_tokens], axis=1)
    patches = jnp.take_along_axis(shuffled, restore_indices[..., None], axis=1)
    positions = vit.sincos_2d_posemb(math.isqrt(num_patches), self.width)
    x = jnp.concatenate([x[:, :1], patches + positions[None].astype(dtype)], axis=1)
    block = vit.block_class(self.remat)
    for index in range(self.depth):
      x = block(self.num_heads, self.mlp_dim, 0.0, 0.0, dtype, name=f"block{index}")(x, not train)
    x = nn.LayerNorm(epsilon=1e-6, dtype=dtype, name="norm")(x)
    x = nn.Dense(patch_dim, dtype=dtype, kernel_init=_XAVIER, name="predict")(x)
    return x[:, 1:].astype(jnp.float32)


class MaskedAutoencoder(nn.Module):
  """A ViT encoder (`vit.Encoder`) and an `MAEDecoder`.

  `__call__(images, keep_indices, restore_indices)` -> (latent [B, 1 + K, D] float32, predicted
  patches [B, N, p * p * C]); `encode_visible` is the encoder half alone and `features` the
  encoder on all patches, pooled as the encoder's `pool` says (the representation).
  """
  encoder: vit.Encoder
  decoder: MAEDecoder

  def encode_visible(self, images: jax.Array, keep_indices: jax.Array,
                     train: bool = False) -> jax.Array:
    """Images [B, H, W, C] and the kept patch indices [B, K] -> latent [B, 1 + K, D]: the
    encoder's final tokens for the CLS token and the K visible patches only."""
    tokens = self.encoder.embed(images, train)
    visible = jnp.take_along_axis(tokens[:, 1:], keep_indices[..., None], axis=1)
    tokens = jnp.concatenate([tokens[:, :1], visible], axis=1)
    return self.encoder.encode(tokens, train).astype(jnp.float32)

  def __call__(self, images: jax.Array, keep_indices: jax.Array, restore_indices: jax.Array,
               train: bool = False) -> tuple[jax.Array, jax.Array]:
    latent = self.encode_visible(images, keep_indices, train)
    patch_dim = self.encoder.patch_size ** 2 * images.shape[-1]
    return latent, self.decoder(latent, restore_indices, patch_dim, train)

  def features(self, images: jax.Array, train: bool = False, dense: bool = False) -> jax.Array:
    """The encoder on every patch, no masking, pooled: [B, D] float32 (with `dense=True` the
    patch tokens on their grid [B, grid, grid, D])."""
    return self.encoder(images, train, dense=dense)

