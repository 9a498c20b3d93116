"""Clips with their sound (audio-visual correspondence, Arandjelovic & Zisserman 2017): TFDS
videos read as uint8 frames and their audio as mono waveforms
(`ssl_jax.data.audio_video_pipeline`); the frames are scaled to [0, 1] on device, as videos
are, and the waveform is kept as stored (float, [-1, 1] after `config.data.audio_scale`).

A batch holds "frames" uint8 [b, T, H, W, C] and "audio" float32 [b, A], plus "label" when
labelled and "mask" in evaluation. The frames are what `represent` and the probes read (as for
video); the sound is the paired input (`paired_kind` "audio", one per clip) of cross-modal
retrieval and of the feature sources "ssl:audio", "random_init:audio" and "raw:audio". The raw
baselines are the flattened frames and the flattened log-mel spectrogram of the sound
(`log_mel`, with the `config.data.log_mel` settings an audio tower reads too).
"""
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.modalities import Batch, FeatureFn
from ssl_jax.modalities.video import Video
from ssl_jax.models.spectrogram import log_mel_spectrogram


def log_mel(audio: jax.Array, config: Any) -> jax.Array:
  """The log-mel spectrogram [..., frames, num_mels] of waveforms [..., A] at
  `config.data.sample_rate`, framed as `config.data.log_mel` says (window_length,
  hop_length, num_mels): what the raw audio baseline flattens and an audio tower reads."""
  settings = config.data.log_mel
  return log_mel_spectrogram(audio, config.data.sample_rate, settings.window_length,
                             settings.hop_length, settings.num_mels)


class AudioVideo(Video):
  """Clips of frames, each with its sound track."""

  kind = "video"
  paired_kind = "audio"
  pipeline = "ssl_jax.data.audio_video_pipeline"

  def example_batch(self, config: Any, input_shape: tuple[int, ...], batch_size: int = 2
                    ) -> Batch:
    """float `frames` [b, T, H, W, C] in [0, 1] (`input_shape` = (T, H, W, C)) and float
    `audio` [b, config.data.audio_length]."""
    return {"frames": jnp.zeros((batch_size,) + tuple(input_shape), jnp.float32),
            "audio": jnp.zeros((batch_size, config.data.audio_length), jnp.float32)}

  def eval_inputs(self, batch: Batch) -> dict[str, jax.Array]:
    """The frames, the sound (held-out correspondence pairs them) and the padding mask."""
    return {"frames": batch["frames"], "audio": batch["audio"], "mask": batch["mask"]}

  def paired_inputs(self, batch: Batch) -> tuple[dict[str, jax.Array], dict[str, jax.Array],
                                                 jax.Array]:
    """(the clips' `eval_inputs`, {"audio": [b, A]}, all True [b, 1]): one sound per clip."""
    audio = batch["audio"]
    return self.eval_inputs(batch), {"audio": audio}, jnp.ones((audio.shape[0], 1), bool)

  def raw_paired_features(self, config: Any) -> FeatureFn:
    """{"audio": [b, A]} -> the flattened log-mel spectrogram [b, frames * num_mels]."""
    def raw_log_mel(paired: dict[str, jax.Array]) -> jax.Array:
      spectrogram = log_mel(paired["audio"], config)
      return spectrogram.reshape(spectrogram.shape[0], -1)
    return raw_log_mel

  def synthetic_batch(self, config: Any, input_shape: tuple[int, ...], batch_size: int,
                      rng: np.random.Generator) -> dict[str, np.ndarray]:
    batch = super().synthetic_batch(config, input_shape, batch_size, rng)
    batch["audio"] = rng.uniform(-1.0, 1.0, (batch_size, config.data.audio_length)).astype(
        np.float32)
    return batch


MODALITY = AudioVideo()
