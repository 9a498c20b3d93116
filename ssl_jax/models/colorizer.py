"""A fully convolutional encoder-decoder that predicts a per-pixel output map from an image.

Colorization (Zhang, Isola, Efros 2016, Fig. 2; the released Caffe `train_val.prototxt`)
maps the lightness channel to per-pixel colour logits with a VGG-style stack: blocks of 3x3
convolutions with ReLU and BatchNorm, downsampling by stride 2, dilated blocks in the middle
that widen the receptive field without losing resolution, then one block that upsamples 2x
before a 1x1 convolution to the Q colour classes (224 px in, 56 px out). `Colorizer` is that
shape with every size a field, so one module gives both the paper's network and the small
ones used on 32 px patches; the encoder's last feature map, averaged over space, is the
representation.

Two departures, neither changing a shape: BatchNorm follows every convolution (the paper:
the last of each block), and a decoder stage upsamples by nearest-neighbour repetition
followed by a 3x3 convolution ("resize-convolution", Odena et al. 2016) where the paper uses
a 4x4 transposed convolution -- XLA's CPU gradient of a transposed convolution is ~150x
slower than a convolution's (34 s against 0.2 s for one 8x8x128 -> 16x16x64 layer at batch
256), which would make the offline default untrainable.
"""
import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.errors import UserError
from ssl_jax.models import policy


class Colorizer(nn.Module):
  """Encoder stages, then decoder stages that each upsample 2x, then a 1x1 output conv.

  Encoder stage s has `convs_per_stage[s]` 3x3 convolutions of `widths[s]` channels (Conv ->
  BatchNorm -> ReLU), the first with stride `strides[s]`, all with dilation `dilations[s]`.
  Decoder stage d doubles the resolution (nearest neighbour) and applies `decoder_convs`
  (>= 1) 3x3 convolutions of `decoder_widths[d]` channels. The output has `num_outputs`
  channels at the input resolution x 2^len(decoder_widths) / prod(strides).

  Returns (outputs [B, h, w, num_outputs] float32, features [B, widths[-1]] float32).
  """
  widths: Sequence[int] = (32, 64, 128)
  convs_per_stage: int | Sequence[int] = 2
  strides: Sequence[int] = (2, 2, 2)
  dilations: int | Sequence[int] = 1
  decoder_widths: Sequence[int] = (64,)
  decoder_convs: int = 1
  num_outputs: int = 2
  dtype: Any = dataclasses.field(default_factory=policy.compute_dtype)

  def _conv_bn_relu(self, x: jax.Array, width: int, train: bool, strides: int = 1,
                    dilation: int = 1) -> jax.Array:
    dtype = jnp.dtype(self.dtype)
    x = nn.Conv(width, (3, 3), strides, kernel_dilation=dilation, use_bias=False,
                dtype=dtype)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=dtype)(x)
    return nn.relu(x)

  def encoder_stages(self) -> list[tuple[int, int, int, int]]:
    """(width, convolutions, stride, dilation) of each encoder stage; a UserError when a
    per-stage setting does not have one entry per stage (or a decoder stage no conv)."""
    settings = {"convs_per_stage": self.convs_per_stage, "strides": self.strides,
                "dilations": self.dilations}
    per_stage = {}
    for name, value in settings.items():
      value = (value,) * len(self.widths) if isinstance(value, int) else tuple(value)
      if len(value) != len(self.widths):
        raise UserError(f"config.colorizer.{name} needs one entry per stage of widths "
                        f"{tuple(self.widths)}, got {value}")
      per_stage[name] = value
    if self.decoder_widths and self.decoder_convs < 1:
      raise UserError(f"config.colorizer.decoder_convs must be >= 1, got {self.decoder_convs}")
    return list(zip(self.widths, *per_stage.values()))

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    dtype = jnp.dtype(self.dtype)
    x = x.astype(dtype)
    for width, count, stride, dilation in self.encoder_stages():
      for index in range(count):
        x = self._conv_bn_relu(x, width, train, stride if index == 0 else 1, dilation)
    features = jnp.mean(x, axis=(1, 2)).astype(jnp.float32)
    for width in self.decoder_widths:
      x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
      for _ in range(self.decoder_convs):
        x = self._conv_bn_relu(x, width, train)
    outputs = nn.Conv(self.num_outputs, (1, 1), dtype=dtype)(x)
    return outputs.astype(jnp.float32), features
