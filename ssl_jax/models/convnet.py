"""A small convolutional encoder for tiny images (8x8 digits, 28x28 MNIST-like inputs).

A ResNet's stem and four stages are built for 32px and larger; on 8x8 inputs a plain
VGG-style stack (3x3 conv, BatchNorm, ReLU; stride 2 between stages) trains in seconds on a
CPU and reaches a useful representation. Output: pooled features [batch, widths[-1]], or with
`dense=True` the last feature map [batch, h, w, widths[-1]] (dense probes).
"""
import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from ssl_jax.models import policy


class Encoder(nn.Module):
  """`len(widths)` stages of `convs_per_stage` 3x3 convolutions, downsampling between stages."""
  widths: Sequence[int] = (64, 128, 256)
  convs_per_stage: int = 2
  dtype: Any = dataclasses.field(default_factory=policy.compute_dtype)

  @nn.compact
  def __call__(self, x, train: bool = False, dense: bool = False):
    dtype = jnp.dtype(self.dtype)
    x = x.astype(dtype)
    for stage, width in enumerate(self.widths):
      for index in range(self.convs_per_stage):
        strides = 2 if stage > 0 and index == 0 else 1
        x = nn.Conv(width, (3, 3), strides, use_bias=False, dtype=dtype)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=dtype)(x)
        x = nn.relu(x)
    return (x if dense else jnp.mean(x, axis=(1, 2))).astype(jnp.float32)
