"""wav2vec 2.0's networks (Baevski, Zhou, Mohamed & Auli 2020, "wav2vec 2.0: A Framework for
Self-Supervised Learning of Speech Representations", Sec. 2 and Fig. 1).

- Feature encoder f: X -> Z (Sec. 2): strided 1-D convolutions over the raw waveform, each
  followed by GELU; the first layer's output is normalised per channel over the sequence
  (GroupNorm with one group per channel, the BASE model's normalisation, Sec. 4.2). The
  convolutions are unpadded, so encoded step j reads input samples
  [j * S, j * S + R) (S the product of the strides, R the receptive field), and a recording of
  `length` samples gives `encoded_length` steps that read recorded samples only.
- Context network g: Z -> C: LayerNorm and a linear projection of z to the model width, the
  learned mask embedding in place of the masked steps, a convolutional relative positional
  embedding (a grouped convolution of kernel `position_kernel` followed by GELU, added to its
  input, Sec. 2 "Contextualized representations with Transformers"; Mohamed et al. 2019), a
  LayerNorm, then post-LN transformer blocks (`transformer.Block`, BERT's layout as in the
  BASE model); a linear projection of c_t to `final_dim` is what the loss compares.
- Quantization module (Sec. 2.1, Eq. 1): the LayerNorm-ed z_t is mapped to G groups of V
  logits; each group picks one of its V codebook entries (of `codevector_dim / G` dims) by a
  Gumbel softmax (Jang et al. 2016) with the straight-through estimator: the forward pass
  uses the hard argmax of (l + n) / tau, the backward pass the gradient of the soft
  probabilities; the G entries are concatenated and projected to `final_dim` (q_t). In
  evaluation the argmax of the logits is taken with no noise.
"""
import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.models import policy
from ssl_jax.models.transformer import Block


def encoded_length(length: jax.Array, kernels: Sequence[int], strides: Sequence[int]
                   ) -> jax.Array:
  """Steps of the unpadded encoder that read recorded samples only: L -> (L - k) // s + 1 per
  layer (0 when a layer's kernel no longer fits)."""
  for kernel, stride in zip(kernels, strides):
    length = jnp.maximum((length - kernel) // stride + 1, 0)
  return length


def num_steps(samples: int, kernels: Sequence[int], strides: Sequence[int]) -> int:
  """`encoded_length` of a window of `samples` (a Python int: array shapes)."""
  for kernel, stride in zip(kernels, strides):
    samples = max((samples - kernel) // stride + 1, 0)
  return samples


class FeatureEncoder(nn.Module):
  """f: waveform [B, T, C] -> z [B, T', widths[-1]] (Sec. 2, Sec. 4.2: the BASE encoder has
  seven layers of 512, kernels (10, 3, 3, 3, 3, 2, 2), strides (5, 2, 2, 2, 2, 2, 2))."""
  widths: Sequence[int]
  kernels: Sequence[int]
  strides: Sequence[int]
  dtype: Any = "float32"

  @nn.compact
  def __call__(self, signal: jax.Array) -> jax.Array:
    x = signal.astype(self.dtype)
    for layer, (width, kernel, stride) in enumerate(zip(self.widths, self.kernels,
                                                        self.strides)):
      x = nn.Conv(width, (kernel,), strides=(stride,), padding="VALID", use_bias=False,
                  dtype=self.dtype)(x)
      if layer == 0:
        # One group per channel: each channel normalised over the sequence.
        x = nn.GroupNorm(num_groups=width, dtype=self.dtype)(x)
      x = nn.gelu(x, approximate=False)
    return x


def product_quantize(logits: jax.Array, codebooks: jax.Array, temperature: jax.Array | float,
                     gumbel_noise: jax.Array | None) -> tuple[jax.Array, jax.Array]:
  """The product quantizer's choice (Sec. 2.1, Eq. 1) from given logits and noise.

  logits [..., G, V]; codebooks [G, V, d]; gumbel_noise [..., G, V] (None: evaluation, the
  argmax of the logits). Returns (the concatenated entries [..., G * d], the one-hot choice
  [..., G, V]); with noise the choice is hard in the forward pass and carries the gradient
  of softmax((logits + noise) / temperature) (straight-through).
  """
  logits = logits.astype(jnp.float32)
  if gumbel_noise is None:
    choice = jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=jnp.float32)
  else:
    soft = jax.nn.softmax((logits + gumbel_noise) / temperature, axis=-1)
    hard = jax.nn.one_hot(jnp.argmax(soft, axis=-1), logits.shape[-1], dtype=jnp.float32)
    choice = soft + jax.lax.stop_gradient(hard - soft)
  entries = jnp.einsum("...gv,gvd->...gd", choice, codebooks.astype(jnp.float32))
  return entries.reshape(entries.shape[:-2] + (-1,)), choice


class Quantizer(nn.Module):
  """z [B, T, D] -> (q [B, T, final_dim], logits [B, T, G, V], one-hot choice [B, T, G, V])."""
  groups: int
  entries: int
  codevector_dim: int
  final_dim: int
  dtype: Any = "float32"

  @nn.compact
  def __call__(self, z: jax.Array, temperature: jax.Array | float,
               noise_rng: jax.Array | None) -> tuple[jax.Array, jax.Array, jax.Array]:
    # Unit-variance weights (as the reference implementation initialises them): on
    # LayerNorm-ed z the logits' scale is sqrt(width), well above the Gumbel noise's, so each
    # step's code is a function of z from the start; with the default 1/sqrt(width) scale the
    # noise picks the codes, the targets are random and the contrastive task cannot start.
    logits = nn.Dense(self.groups * self.entries, dtype=self.dtype,
                      kernel_init=nn.initializers.normal(1.0), name="logits")(z)
    logits = logits.astype(jnp.float32).reshape(z.shape[:-1] + (self.groups, self.entries))
    codebooks = self.param("codebooks", nn.initializers.uniform(1.0),
                           (self.groups, self.entries, self.codevector_dim // self.groups))
    noise = None if noise_rng is None else jax.random.gumbel(noise_rng, logits.shape)
    entries, choice = product_quantize(logits, codebooks, temperature, noise)
    q = nn.Dense(self.final_dim, dtype=self.dtype, name="project_q")(entries)
    return q.astype(jnp.float32), logits, choice


class Wav2Vec2Network(nn.Module):
  """f, g and the quantizer of wav2vec 2.0 (see the module docstring)."""
  widths: Sequence[int]
  kernels: Sequence[int]
  strides: Sequence[int]
  model_dim: int
  depth: int
  num_heads: int
  mlp_dim: int
  position_kernel: int
  position_groups: int
  groups: int
  entries: int
  codevector_dim: int
  final_dim: int
  dropout: float = 0.1
  dtype: Any = dataclasses.field(default_factory=policy.compute_dtype)  # (`models.policy`)

  def setup(self):
    self.encoder = FeatureEncoder(self.widths, self.kernels, self.strides, self.dtype)
    self.feature_norm = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype)
    self.project_features = nn.Dense(self.model_dim, dtype=self.dtype)
    self.mask_embedding = self.param("mask_embedding", nn.initializers.uniform(1.0),
                                     (self.model_dim,))
    self.position_conv = nn.Conv(
        self.model_dim, (self.position_kernel,),
        padding=[(self.position_kernel // 2, (self.position_kernel - 1) // 2)],
        feature_group_count=self.position_groups, dtype=self.dtype)
    self.context_norm = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype)
    self.context_dropout = nn.Dropout(self.dropout)
    self.blocks = [Block(num_heads=self.num_heads, mlp_dim=self.mlp_dim, dropout=self.dropout,
                         pre_norm=False, epsilon=1e-5, approximate_gelu=False,
                         dtype=self.dtype, name=f"block{i}") for i in range(self.depth)]
    self.final_projection = nn.Dense(self.final_dim, dtype=self.dtype)
    self.quantizer = Quantizer(self.groups, self.entries, self.codevector_dim, self.final_dim,
                               self.dtype)

  def features(self, signal: jax.Array) -> jax.Array:
    """z = f(x) [B, T', D] in float32."""
    return self.encoder(signal).astype(jnp.float32)

  def context(self, normed: jax.Array, masked: jax.Array | None, valid: jax.Array,
              deterministic: bool) -> jax.Array:
    """c = g(LayerNorm(z) with the `masked` steps replaced) [B, T', model_dim] float32;
    attention reads the `valid` steps only."""
    x = self.project_features(normed)
    if masked is not None:
      x = jnp.where(masked[..., None], self.mask_embedding.astype(x.dtype), x)
    x = jnp.where(valid[..., None], x, 0)
    x = x + nn.gelu(self.position_conv(x), approximate=False)
    x = self.context_dropout(self.context_norm(x), deterministic=deterministic)
    attention_mask = nn.make_attention_mask(valid, valid)
    for block in self.blocks:
      x = block(x, attention_mask, deterministic)
    return x.astype(jnp.float32)

  def __call__(self, signal: jax.Array, masked: jax.Array, valid: jax.Array,
               temperature: jax.Array | float, noise_rng: jax.Array | None,
               deterministic: bool) -> dict[str, jax.Array]:
    """The training pass: {"z": f(x), "context": c, "projected": final_proj(c) [B, T', F],
    "quantized": q [B, T', F], "logits", "choice" [B, T', G, V]}."""
    z = self.features(signal)
    normed = self.feature_norm(z)  # the quantizer's input too (unmasked)
    context = self.context(normed, masked, valid, deterministic)
    quantized, logits, choice = self.quantizer(normed, temperature, noise_rng)
    return {"z": z, "context": context,
            "projected": self.final_projection(context).astype(jnp.float32),
            "quantized": quantized, "logits": logits, "choice": choice}

  def represent(self, signal: jax.Array, valid_length: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(c of the unmasked signal [B, T', model_dim], valid [B, T']) in evaluation mode."""
    z = self.features(signal)
    valid = jnp.arange(z.shape[1])[None, :] < valid_length[:, None]
    return self.context(self.feature_norm(z), None, valid, deterministic=True), valid
