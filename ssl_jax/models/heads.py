"""Projection and prediction heads (MLPs) that sit on top of an encoder.

SimCLR (Chen et al. 2020, Sec. 2.1 and B.9) shows that the contrastive loss works much better
on a non-linear projection g(h) than on h itself, and that h (before g) is the better
representation downstream; the same MLP shape serves as BYOL/SimSiam predictor.
"""
import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.models import policy, vit


class MLPHead(nn.Module):
  """`num_layers` dense layers; hidden ones are Dense -> BatchNorm -> ReLU.

  `output_norm` adds a BatchNorm (no scale/bias) after the last layer, as in SimCLR v2's,
  SimSiam's and MoCo v3's projectors; `hidden_norm=False` drops the hidden BatchNorms (MoCo
  v2's Dense -> ReLU -> Dense head).
  """
  hidden_dim: int = 2048
  output_dim: int = 128
  num_layers: int = 2
  hidden_norm: bool = True
  output_norm: bool = False
  dtype: Any = dataclasses.field(default_factory=policy.compute_dtype)

  @nn.compact
  def __call__(self, x, train: bool = False):
    dtype = jnp.dtype(self.dtype)
    for _ in range(self.num_layers - 1):
      x = nn.Dense(self.hidden_dim, use_bias=not self.hidden_norm, dtype=dtype)(x)
      if self.hidden_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=dtype)(x)
      x = nn.relu(x)
    x = nn.Dense(self.output_dim, dtype=dtype)(x)
    if self.output_norm:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, use_scale=False,
                       use_bias=False, dtype=dtype)(x)
    return x.astype(jnp.float32)


class ProjectedEncoder(nn.Module):
  """h = f(x) and z = g(h): an encoder with its projection head, the unit every
  joint-embedding method trains (and, as an EMA copy, uses as target/teacher)."""
  encoder: nn.Module
  projector: nn.Module

  def __call__(self, x, train: bool = False, dense: bool = False):
    """(h, z); with `dense=True` (h's feature map, None): the projector is not applied."""
    if dense:
      return self.encoder(x, train=train, dense=True), None
    h = self.encoder(x, train=train)
    return h, self.projector(h, train=train)


class DINOHead(nn.Module):
  """DINO's projection head (Caron et al. 2021, Sec. 3.1 and Appendix).

  An MLP (`num_layers` dense layers, hidden width `hidden_dim`, GELU, optional BatchNorm)
  down to a `bottleneck_dim` embedding, L2-normalised, then a weight-normalised linear layer
  without bias to `output_dim` prototypes: W_k = g_k v_k / ||v_k||. With `norm_last_layer`
  the gains g are fixed to 1 (the paper's choice for ViT-S stability); otherwise they train.
  """
  hidden_dim: int = 2048
  bottleneck_dim: int = 256
  output_dim: int = 65536
  num_layers: int = 3
  use_bn: bool = False
  norm_last_layer: bool = True
  dtype: Any = dataclasses.field(default_factory=policy.compute_dtype)

  @nn.compact
  def __call__(self, x, train: bool = False):
    dtype = jnp.dtype(self.dtype)
    dense = lambda features: nn.Dense(  # pylint: disable=g-long-lambda
        features, dtype=dtype, kernel_init=nn.initializers.truncated_normal(0.02))
    for _ in range(self.num_layers - 1):
      x = dense(self.hidden_dim)(x)
      if self.use_bn:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=dtype)(x)
      x = nn.gelu(x, approximate=False)
    x = dense(self.bottleneck_dim)(x).astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-24))
    direction = self.param("last_layer_direction", nn.initializers.truncated_normal(0.02),
                           (self.bottleneck_dim, self.output_dim))
    direction = direction * jax.lax.rsqrt(jnp.sum(direction * direction, axis=0, keepdims=True))
    if not self.norm_last_layer:
      direction = direction * self.param("last_layer_gain", nn.initializers.ones,
                                         (self.output_dim,))
    return x @ direction


class MaskedDistillationNetwork(nn.Module):
  """A ViT whose CLS token and patch tokens both go through a `DINOHead`: the student and
  teacher of iBOT (Zhou et al. 2022, Sec. 3.2) and DINOv2 (Oquab et al. 2024, Sec. 4).

  `patch_head` None: one head (its MLP and prototypes) serves the CLS token and every patch
  token, iBOT's shared head; otherwise the patch tokens get their own head, DINOv2's
  separate iBOT head. The encoder must be a `vit.Encoder` (built with `mask_token=True` for
  the masked student).
  """
  encoder: nn.Module
  head: nn.Module
  patch_head: nn.Module | None = None

  def __call__(self, x, train: bool = False, patch_mask=None, patches: bool = True,
               dense: bool = False):
    """(h, cls_token, cls_logits, patch_logits): h the encoder's pooled features (its `pool`),
    cls_token the final CLS token (what KoLeo spreads), the head's outputs for the CLS token
    [B, K] and, with `patches`, for each patch token [B, N, K'] (else None). `patch_mask`
    [B, N] masks patches as `vit.Encoder.embed` does. With `dense=True`: (the patch-token
    map, None, None, None), for the dense probe."""
    if dense:
      return self.encoder(x, train=train, dense=True), None, None, None
    tokens = self.encoder.tokens(x, train, patch_mask)
    h = vit.pool_tokens(tokens, self.encoder.pool)
    if not patches:
      return h, tokens[:, 0], self.head(tokens[:, 0], train=train), None
    if self.patch_head is None:
      logits = self.head(tokens, train=train)
      return h, tokens[:, 0], logits[:, 0], logits[:, 1:]
    return (h, tokens[:, 0], self.head(tokens[:, 0], train=train),
            self.patch_head(tokens[:, 1:], train=train))
