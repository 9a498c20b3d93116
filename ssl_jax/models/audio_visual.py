"""The two towers and the fusion of audio-visual correspondence (Arandjelovic & Zisserman 2017,
"Look, Listen and Learn", Sec. 3 and Fig. 2; the distance fusion of their 2018 "Objects that
Sound", Sec. 3.1, AVE-Net).

- `VideoTower`: each frame through 3x3 convolutions (stride 2, GroupNorm, ReLU), pooled over space; a temporal convolution over the frames' vectors (what
  happens *when*: a bounce is a change of direction between frames), pooled over time ->
  features [B, widths[-1]], and a linear embedding [B, embed_dim]. L3's vision network sees
  one frame; a clip's motion is what ties it to its sound track here.
- `AudioTower`: the waveform's log-mel spectrogram, computed on device
  (`models.spectrogram`), through 3x3 convolutions as an image of (time, mel) (L3's audio
  network reads a log-spectrogram the same way), pooled -> features and embedding; or
  (`audio_input="waveform"`) wav2vec 2.0's strided 1-D convolutions over the raw waveform,
  pooled over time.
- `CorrespondenceHead`: "concat" (L3: the two embeddings concatenated, a hidden ReLU layer, one
  logit of "corresponds") or "distance" (AVE-Net: the Euclidean distance between the
  L2-normalised embeddings, mapped by a scalar affine layer to the logit, which puts the two
  towers in one space where cross-modal retrieval by cosine similarity is meaningful).
"""
import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.models import policy, spectrogram
from ssl_jax.models.wav2vec2 import FeatureEncoder


def _conv_stack(x: jax.Array, widths: Sequence[int], dtype: Any) -> jax.Array:
  """3x3 convolutions of stride 2, GroupNorm and ReLU: [N, H, W, C] -> the last feature map
  (32x32 frames -> 4x4 after three, as the frame predictor's encoder)."""
  for width in widths:
    x = nn.Conv(width, (3, 3), strides=2, use_bias=False, dtype=dtype)(x)
    x = nn.relu(nn.GroupNorm(num_groups=min(8, width), dtype=dtype)(x))
  return x


class VideoTower(nn.Module):
  """frames [B, T, H, W, C] in [0, 1] -> (features [B, widths[-1]], embedding [B, embed_dim])."""
  widths: Sequence[int]
  temporal_kernel: int
  embed_dim: int
  dtype: Any = dataclasses.field(default_factory=policy.compute_dtype)

  @nn.compact
  def __call__(self, frames: jax.Array) -> tuple[jax.Array, jax.Array]:
    batch, steps = frames.shape[:2]
    x = frames.reshape((batch * steps,) + frames.shape[2:]).astype(self.dtype)
    x = jnp.mean(_conv_stack(x, self.widths, self.dtype), axis=(1, 2))
    x = x.reshape(batch, steps, -1)
    x = nn.relu(nn.Conv(self.widths[-1], (self.temporal_kernel,), padding="SAME",
                        dtype=self.dtype, name="temporal")(x))
    features = jnp.mean(x, axis=1).astype(jnp.float32)
    return features, nn.Dense(self.embed_dim, dtype=self.dtype)(features).astype(jnp.float32)


class AudioTower(nn.Module):
  """waveform [B, A] -> (features [B, widths[-1]], embedding [B, embed_dim])."""
  widths: Sequence[int]
  embed_dim: int
  sample_rate: float
  window_length: int
  hop_length: int
  num_mels: int
  audio_input: str = "log_mel"  # or "waveform"
  kernels: Sequence[int] = ()  # the waveform encoder's (audio_input="waveform")
  strides: Sequence[int] = ()
  dtype: Any = dataclasses.field(default_factory=policy.compute_dtype)

  @nn.compact
  def __call__(self, waveform: jax.Array) -> tuple[jax.Array, jax.Array]:
    waveform = waveform.astype(jnp.float32)
    if self.audio_input == "waveform":
      x = FeatureEncoder(self.widths, self.kernels, self.strides, self.dtype)(waveform[..., None])
      features = jnp.mean(x, axis=1)
    else:
      bands = spectrogram.log_mel_spectrogram(waveform, self.sample_rate, self.window_length,
                                              self.hop_length, self.num_mels)
      x = _conv_stack(bands[..., None].astype(self.dtype), self.widths, self.dtype)
      features = jnp.mean(x, axis=(1, 2))
    features = features.astype(jnp.float32)
    return features, nn.Dense(self.embed_dim, dtype=self.dtype)(features).astype(jnp.float32)


class CorrespondenceHead(nn.Module):
  """(video embedding [N, d], audio embedding [N, d]) -> the logit [N] that they correspond."""
  fusion: str  # "concat" (L3) or "distance" (AVE-Net)
  hidden_dim: int
  dtype: Any = dataclasses.field(default_factory=policy.compute_dtype)

  @nn.compact
  def __call__(self, video: jax.Array, audio: jax.Array) -> jax.Array:
    if self.fusion == "distance":
      difference = losses.l2_normalize(video) - losses.l2_normalize(audio)
      distance = jnp.sqrt(jnp.sum(jnp.square(difference), axis=-1, keepdims=True) + 1e-12)
      return nn.Dense(1, dtype=jnp.float32, name="affine")(distance)[:, 0]
    x = jnp.concatenate([video, audio], axis=-1).astype(self.dtype)
    x = nn.relu(nn.Dense(self.hidden_dim, dtype=self.dtype)(x))
    return nn.Dense(1, dtype=self.dtype)(x)[:, 0].astype(jnp.float32)


class AudioVisualNetwork(nn.Module):
  """The two towers and the head; `video`, `audio` and `correspond` are its parts."""
  video_tower: VideoTower
  audio_tower: AudioTower
  head: CorrespondenceHead

  def video(self, frames: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self.video_tower(frames)

  def audio(self, waveform: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self.audio_tower(waveform)

  def correspond(self, video_embedding: jax.Array, audio_embedding: jax.Array) -> jax.Array:
    return self.head(video_embedding, audio_embedding)

  def __call__(self, frames: jax.Array, waveform: jax.Array) -> jax.Array:
    """Initialises every part: the logits of the clips with their own sound."""
    _, video = self.video(frames)
    _, audio = self.audio(waveform)
    return self.correspond(video, audio)
