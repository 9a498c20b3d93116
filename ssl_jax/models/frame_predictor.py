"""The next-frame predictor's networks: a per-frame convolutional encoder, a GRU over the frame
codes and a transposed-convolution decoder from the GRU state to the next frame.

This is the "future predictor" of Srivastava, Mansimov & Salakhutdinov 2015 ("Unsupervised
Learning of Video Representations using LSTMs", Sec. 2.3) in its conditional form, with a
convolutional front and back end in place of their fully connected ones on flattened frames,
and a GRU (Cho et al. 2014) in place of the LSTM. The code of frame t is
e_t = Dense(flatten(conv(x_t))), the state is h_t = GRU(h_{t-1}, e_t), and the prediction of
x_{t+1} is decode(h_t). The encoder keeps the spatial map (flattened, not pooled): where the
digit is matters as much as what it is for predicting where it goes.

Nothing here normalises over the batch (no BatchNorm): in training mode BatchNorm's statistics
over all frames of a clip would let the prediction of x_{t+1} depend on later frames; each
frame's encoding and each state's decoding read only that frame or state, and the GRU is
causal, so decode(h_t) is a function of x_{<=t} exactly (the tests check it).
"""
import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.models import policy

from ssl_jax.models.decoder import first_feature_map_side


class FrameEncoder(nn.Module):
  """x [N, H, W, C] -> code [N, code_dim]: 3x3 stride-2 convolutions with ReLU, flattened."""
  widths: Sequence[int]
  code_dim: int
  dtype: Any = "float32"

  def setup(self):
    self.convs = [nn.Conv(width, (3, 3), strides=(2, 2), dtype=self.dtype, name=f"Conv_{index}")
                  for index, width in enumerate(self.widths)]
    self.to_code = nn.Dense(self.code_dim, dtype=self.dtype, name="Dense_0")

  def feature_map(self, frames: jax.Array) -> jax.Array:
    """The last convolution's map [N, H / 2^k, W / 2^k, widths[-1]]."""
    x = frames.astype(self.dtype)
    for conv in self.convs:
      x = nn.relu(conv(x))
    return x

  def __call__(self, frames: jax.Array) -> jax.Array:
    return self.code(self.feature_map(frames))

  def code(self, feature_map: jax.Array) -> jax.Array:
    """The code [N, code_dim] of `feature_map`'s maps."""
    return nn.relu(self.to_code(feature_map.reshape((feature_map.shape[0], -1))))


class FrameDecoder(nn.Module):
  """state [N, D] -> frame [N, H, W, C]: a dense layer to a [H / 2^(k-1)]^2 x widths[0] map,
  then for each later width a 4x4 stride-2 transposed convolution with ReLU (the DCGAN
  generator's upsampling, Radford et al. 2016, as in `decoder.Decoder` but without
  BatchNorm), then a 3x3 convolution to the channels, no activation (logits or means)."""
  widths: Sequence[int]
  dtype: Any = "float32"

  @nn.compact
  def __call__(self, state: jax.Array, frame_shape: tuple[int, int, int]) -> jax.Array:
    height, width, channels = frame_shape
    first = (first_feature_map_side(height, self.widths),
             first_feature_map_side(width, self.widths))
    x = nn.relu(nn.Dense(first[0] * first[1] * self.widths[0], dtype=self.dtype)(state))
    x = x.reshape((x.shape[0], *first, self.widths[0]))
    for stage_width in self.widths[1:]:
      x = nn.relu(nn.ConvTranspose(stage_width, (4, 4), (2, 2), padding="SAME",
                                   dtype=self.dtype)(x))
    return nn.Conv(channels, (3, 3), dtype=self.dtype)(x).astype(jnp.float32)


class FramePredictor(nn.Module):
  """frames [B, T, H, W, C] -> (states h [B, T, state_width], predictions [B, T - 1, H, W, C])
  where predictions[:, t] = decode(h_t) predicts frames[:, t + 1]."""
  encoder_widths: Sequence[int]
  code_dim: int
  state_width: int
  decoder_widths: Sequence[int]
  dtype: Any = dataclasses.field(default_factory=policy.compute_dtype)  # (`models.policy`)

  def setup(self):
    self.encoder = FrameEncoder(self.encoder_widths, self.code_dim, self.dtype)
    self.recurrence = nn.RNN(nn.GRUCell(self.state_width, dtype=self.dtype))
    self.decoder = FrameDecoder(self.decoder_widths, self.dtype)

  def _feature_maps(self, frames: jax.Array) -> jax.Array:
    """The encoder's last feature map of every frame [B * T, h, w, encoder_widths[-1]]."""
    batch, steps = frames.shape[:2]
    return self.encoder.feature_map(frames.reshape((batch * steps,) + frames.shape[2:]))

  def _states(self, maps: jax.Array, batch: int) -> jax.Array:
    return self.recurrence(self.encoder.code(maps).reshape((batch, -1, self.code_dim)))

  @staticmethod
  def _pooled(maps: jax.Array, batch: int) -> jax.Array:
    return jnp.mean(maps.reshape((batch, -1, maps.shape[-1])), axis=1)

  def states(self, frames: jax.Array) -> jax.Array:
    """h_t for every t: [B, T, state_width] (float32)."""
    return self._states(self._feature_maps(frames), frames.shape[0]).astype(jnp.float32)

  def pooled_features(self, frames: jax.Array) -> jax.Array:
    """The encoder's last feature map averaged over space and time: [B, encoder_widths[-1]],
    what the frames show wherever it moves (translation invariant, unlike the code)."""
    return self._pooled(self._feature_maps(frames), frames.shape[0]).astype(jnp.float32)

  def __call__(self, frames: jax.Array, with_pooled: bool = False) -> tuple[jax.Array, ...]:
    """(states, predictions), and `pooled_features` from the same encoder pass when
    `with_pooled` (the online probe's features, without encoding the clip twice)."""
    batch, steps = frames.shape[:2]
    maps = self._feature_maps(frames)
    states = self._states(maps, batch)
    inputs = states[:, :-1].reshape((batch * (steps - 1), -1))
    predictions = self.decoder(inputs, frames.shape[2:]).reshape(
        (batch, steps - 1) + frames.shape[2:])
    states = states.astype(jnp.float32)
    if with_pooled:
      return states, predictions, self._pooled(maps, batch).astype(jnp.float32)
    return states, predictions
