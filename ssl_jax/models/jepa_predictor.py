"""The networks of I-JEPA (Assran et al. 2023, "Self-Supervised Learning from Images with a
Joint-Embedding Predictive Architecture", Sec. 3 and Fig. 3): a ViT context encoder that sees
only its context patches, and a narrow ViT predictor that predicts the target encoder's
representation of each target block from the context and one mask token per target position.

Both keep static shapes whatever the blocks' sizes, which vary from image to image: every
sequence holds a slot for every patch, and an attention mask ([batch, T] booleans, True = a
key that may be attended to; `vit.Block`) hides the slots that are not part of it. A token
then attends to exactly the tokens it would attend to in a sequence gathered to its visible
patches (LayerNorm, MLP and the projections act on each token alone), so the outputs at the
visible slots equal those of the paper's shorter sequences; the outputs at hidden slots are
never read. The price is compute: the context encoder runs on all N patch slots instead of
the ~40% it keeps. The official code gathers instead, with every example's masks truncated to
the batch's smallest (its collator), which needs shapes that change from step to step.

There is no CLS token (I-JEPA's ViT has none): `JEPA.patch_tokens` drops the one
`vit.Encoder.embed` puts first, and the representation is the average of the patch tokens.

`JEPAPredictor` (Sec. 3 "Predictions", Appendix A.1): a linear map from the encoder width to
the predictor width with fixed 2-D sin-cos positions added; for each target block, one shared
learned mask token plus the position embedding of each target position; `depth` pre-norm
blocks (`vit.Block`) where a target block's sequence sees only the context and its own mask
tokens (each block is predicted separately, as in the paper, so blocks do not see each
other); a LayerNorm and a linear map back to the encoder width. Weights start as in the
official predictor: truncated normal (std 0.02) for the linear
layers and the mask token, zero biases (its extra per-depth rescaling of the blocks' output
projections is left out).
"""
import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.models import policy, vit

_LINEAR_INIT = nn.initializers.truncated_normal(stddev=0.02)


class JEPAPredictor(nn.Module):
  """Context tokens and target-block masks -> predicted target tokens.

  Attributes:
    width, depth, num_heads, mlp_dim: the predictor transformer (the paper's ViT-H/14 recipe:
      384, 12, 16 (the encoder's heads, as the official code), 1536).
    dtype: computation dtype; the predictions are returned as float32.
    remat: recompute each block in the backward pass (`vit.Encoder.remat`).
  """
  width: int = 384
  depth: int = 12
  num_heads: int = 16
  mlp_dim: int = 1536
  dtype: Any = dataclasses.field(default_factory=policy.compute_dtype)
  remat: bool = dataclasses.field(default_factory=policy.remat_blocks)

  @nn.compact
  def __call__(self, context: jax.Array, context_mask: jax.Array, target_masks: jax.Array,
               train: bool = False) -> jax.Array:
    """context [B, N, D]: the context encoder's output at every patch slot (only the slots in
    `context_mask` [B, N] are read); target_masks [B, M, N] (True = the patch is in block m)
    -> predictions [B, M, N, D] float32, meaningful at each block's own patches."""
    dtype = jnp.dtype(self.dtype)
    batch, num_patches, encoder_width = context.shape
    num_blocks = target_masks.shape[1]
    positions = vit.sincos_2d_posemb(math.isqrt(num_patches), self.width).astype(dtype)
    x = nn.Dense(self.width, dtype=dtype, kernel_init=_LINEAR_INIT, name="embed")(context)
    x = x + positions[None]
    mask_token = self.param("mask_token", _LINEAR_INIT, (1, 1, self.width))
    queries = mask_token.astype(dtype) + positions[None]
    # One slot per patch and block: block m's mask tokens at its patches, the context tokens
    # elsewhere. A patch that is both context and target (only in the collator's rare
    # fallback, `ijepa.sample_block_masks`) is a mask token of that block, so a block is
    # never predicted from its own context tokens (the official predictor would see both).
    targets = target_masks[..., None]
    x = jnp.where(targets, queries[:, None], x[:, None])  # [B, M, N, width]
    attention_mask = target_masks | context_mask[:, None]
    x = x.reshape(batch * num_blocks, num_patches, self.width)
    attention_mask = attention_mask.reshape(batch * num_blocks, num_patches)
    block = vit.block_class(self.remat)
    for index in range(self.depth):
      x = block(self.num_heads, self.mlp_dim, 0.0, 0.0, dtype, name=f"block{index}")(
          x, not train, attention_mask)
    x = nn.LayerNorm(epsilon=1e-6, dtype=dtype, name="norm")(x)
    x = nn.Dense(encoder_width, dtype=dtype, kernel_init=_LINEAR_INIT, name="project")(x)
    return x.reshape(batch, num_blocks, num_patches, encoder_width).astype(jnp.float32)


class JEPA(nn.Module):
  """A ViT encoder (`vit.Encoder`, the context encoder; its EMA copy is the target encoder)
  and a `JEPAPredictor`.

  `__call__(images, context_mask, target_masks)` -> (context tokens [B, N, D], predictions
  [B, M, N, D]); `patch_tokens(images)` is the encoder alone on every patch (the target
  encoder's pass and the representation).
  """
  encoder: vit.Encoder
  predictor: JEPAPredictor

  def patch_tokens(self, images: jax.Array, train: bool = False,
                   attention_mask: jax.Array | None = None) -> jax.Array:
    """Images [B, H, W, C] -> final patch tokens [B, N, D] float32 (row-major grid order, no
    CLS token); with `attention_mask` [B, N] only those patches are seen."""
    tokens = self.encoder.embed(images, train)[:, 1:]
    return self.encoder.encode(tokens, train, attention_mask).astype(jnp.float32)

  def __call__(self, images: jax.Array, context_mask: jax.Array, target_masks: jax.Array,
               train: bool = False) -> tuple[jax.Array, jax.Array]:
    context = self.patch_tokens(images, train, context_mask)
    return context, self.predictor(context, context_mask, target_masks, train)
