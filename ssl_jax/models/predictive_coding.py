"""CPC's networks (van den Oord, Li & Vinyals 2018, Sec. 2.1 and Fig. 1): a strided causal
1-D convolutional encoder g_enc, an autoregressive GRU g_ar and K linear predictors W_k.

The encoder is causal: a layer of kernel K and stride S is padded by K - S frames on the left
only, so encoded step j reads input frames < (j + 1) * prod(strides) and nothing later (the
paper's encoder need not be causal, but a causal one makes c_t a function of x_{<=t} exactly,
which the tests check, and makes padding after a recording's end invisible to its steps).
A signal of T frames gives T // prod(strides) steps.
"""
import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.models import policy


class CausalConvEncoder(nn.Module):
  """g_enc: strided causal 1-D convolutions with ReLU (the paper's audio encoder has five, of
  widths 512, kernels (10, 8, 4, 4, 4) and strides (5, 4, 2, 2, 2): 160x downsampling)."""
  widths: Sequence[int]
  kernels: Sequence[int]
  strides: Sequence[int]
  dtype: Any = "float32"

  @nn.compact
  def __call__(self, signal: jax.Array) -> jax.Array:
    """signal [B, T, C] -> z [B, T // prod(strides), widths[-1]]."""
    x = signal.astype(self.dtype)
    for width, kernel, stride in zip(self.widths, self.kernels, self.strides):
      x = nn.relu(nn.Conv(width, (kernel,), strides=(stride,), padding=[(kernel - stride, 0)],
                          dtype=self.dtype)(x))
    return x


class CPCNetwork(nn.Module):
  """z_t = g_enc(x), c_t = g_ar(z_{<=t}) and the predictions W_k c_t of z_{t+k}, k = 1..K."""
  widths: Sequence[int]
  kernels: Sequence[int]
  strides: Sequence[int]
  context_width: int
  prediction_steps: int
  dtype: Any = dataclasses.field(default_factory=policy.compute_dtype)  # (`models.policy`)

  @nn.compact
  def __call__(self, signal: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """signal [B, T, C] -> (z [B, T', D], c [B, T', H], predictions [K, B, T', D]), float32."""
    z = CausalConvEncoder(self.widths, self.kernels, self.strides, self.dtype)(signal)
    context = nn.RNN(nn.GRUCell(self.context_width, dtype=self.dtype))(z)
    width = z.shape[-1]
    predictions = nn.Dense(self.prediction_steps * width, use_bias=False, dtype=self.dtype,
                           name="predictors")(context).astype(jnp.float32)
    z, context = z.astype(jnp.float32), context.astype(jnp.float32)
    predictions = predictions.reshape(context.shape[:2] + (self.prediction_steps, width))
    return z, context, jnp.moveaxis(predictions, 2, 0)


def encoded_length(length: jax.Array, strides: Sequence[int]) -> jax.Array:
  """Encoded steps that read recorded frames only: length // prod(strides)."""
  total = 1
  for stride in strides:
    total *= stride
  return length // total
