"""ResNet-18/34/50/101 encoders (He et al. 2016, "Deep Residual Learning"), flax.linen.

The output is the globally average-pooled last feature map (512 for depths 18/34, 2048 for
50/101): the representation SimCLR and the other joint-embedding papers probe. The optional
CIFAR stem (a 3x3 stride-1 convolution and no max-pool) is the variant every CIFAR SSL recipe
uses (solo-learn, SimCLR appendix B.9), because the ImageNet stem shrinks 32x32 inputs to 8x8
before the first block. BatchNorm runs in training mode inside a jit over a sharded batch, so
its statistics span the global batch (XLA inserts the cross-device reductions).
"""
import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from ssl_jax.models import policy

_STAGES = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
           50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3))}


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""
  filters: int
  strides: int
  conv: Any
  norm: Any

  @nn.compact
  def __call__(self, x):
    residual = x
    y = nn.relu(self.norm()(self.conv(self.filters, (3, 3), self.strides)(x)))
    y = self.norm(scale_init=nn.initializers.zeros)(self.conv(self.filters, (3, 3))(y))
    if residual.shape != y.shape:
      residual = self.norm()(self.conv(self.filters, (1, 1), self.strides, name="proj")(x))
    return nn.relu(residual + y)


class BottleneckBlock(nn.Module):
  """1x1 reduce, 3x3 (carrying the stride, as in torchvision's ResNet v1.5), 1x1 expand x4."""
  filters: int
  strides: int
  conv: Any
  norm: Any

  @nn.compact
  def __call__(self, x):
    residual = x
    y = nn.relu(self.norm()(self.conv(self.filters, (1, 1))(x)))
    y = nn.relu(self.norm()(self.conv(self.filters, (3, 3), self.strides)(y)))
    y = self.norm(scale_init=nn.initializers.zeros)(self.conv(self.filters * 4, (1, 1))(y))
    if residual.shape != y.shape:
      residual = self.norm()(self.conv(self.filters * 4, (1, 1), self.strides, name="proj")(x))
    return nn.relu(residual + y)


class Encoder(nn.Module):
  """ResNet trunk returning pooled features [batch, width] (with `dense=True` the last
  feature map [batch, h, w, width], for dense probes)."""
  depth: int = 50
  cifar_stem: bool = False
  width: int = 64
  dtype: Any = dataclasses.field(default_factory=policy.compute_dtype)
  # Recompute each residual block in the backward pass (`nn.remat`, Chen et al. 2016): the
  # same numbers, activation memory of one block plus the blocks' inputs.
  remat: bool = dataclasses.field(default_factory=policy.remat_blocks)

  @nn.compact
  def __call__(self, x, train: bool = False, dense: bool = False):
    if self.depth not in _STAGES:
      raise ValueError(f"ResNet depth must be one of {sorted(_STAGES)}, got {self.depth}")
    block_kind, stage_sizes = _STAGES[self.depth]
    block = BasicBlock if block_kind == "basic" else BottleneckBlock
    name = block.__name__  # the same parameter names with or without remat
    block = nn.remat(block) if self.remat else block
    dtype = jnp.dtype(self.dtype)
    conv = functools.partial(nn.Conv, use_bias=False, dtype=dtype,
                             kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"))
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, dtype=dtype)
    x = x.astype(dtype)
    if self.cifar_stem:
      x = conv(self.width, (3, 3), name="stem_conv")(x)
      x = nn.relu(norm(name="stem_bn")(x))
    else:
      x = conv(self.width, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name="stem_conv")(x)
      x = nn.relu(norm(name="stem_bn")(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    count = 0
    for stage, num_blocks in enumerate(stage_sizes):
      for index in range(num_blocks):
        strides = 2 if stage > 0 and index == 0 else 1
        x = block(self.width * 2**stage, strides, conv, norm, name=f"{name}_{count}")(x)
        count += 1
    return (x if dense else jnp.mean(x, axis=(1, 2))).astype(jnp.float32)
