"""Sequences: sensor channels or audio read as standardised windows
(`ssl_jax.data.sequence_pipeline`).

A batch holds "signal" float32 [b, T, C] (zeros after each recording's end) and "length"
int32 [b], plus "label" when labelled and "mask" in evaluation. `represent` reads both; the
raw baseline (`config.data.raw_baseline`) is the flattened window ("signal"), or for audio
its log-mel spectrogram ("log_mel", the classic hand-made speech features: Davis &
Mermelstein 1980), at `config.data.sample_rate` with `config.data.log_mel`'s window, hop and
mel bands.
"""
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.modalities import Batch, FeatureFn, Modality
from ssl_jax.models import spectrogram

SEQUENCE_INPUTS = ("signal", "length")  # what a sequence `represent` reads
RAW_BASELINES = ("signal", "log_mel")


def raw_signal(inputs: dict[str, jax.Array]) -> jax.Array:
  """The flattened standardised signal [b, T * C] (zeros after each recording's end): the
  baseline a sequence representation must beat."""
  signal = inputs["signal"]
  return signal.reshape(signal.shape[0], -1).astype(jnp.float32)


class Sequence(Modality):
  """Windows of multichannel signals: sensor recordings, speech features, waveforms."""

  kind = "signal"
  pipeline = "ssl_jax.data.sequence_pipeline"

  def example_batch(self, config: Any, input_shape: tuple[int, ...], batch_size: int = 2
                    ) -> Batch:
    """float `signal` [b, T, C] (`input_shape` = (T, C)) and int32 `length` [b]."""
    return {"signal": jnp.zeros((batch_size,) + tuple(input_shape), jnp.float32),
            "length": jnp.full((batch_size,), input_shape[0], jnp.int32)}

  def represent_inputs(self, batch: Batch) -> dict[str, jax.Array]:
    return {key: batch[key] for key in SEQUENCE_INPUTS}

  def eval_inputs(self, batch: Batch) -> dict[str, jax.Array]:
    return {key: batch[key] for key in SEQUENCE_INPUTS}

  def raw_features(self, config: Any) -> FeatureFn:
    if config.data.get("raw_baseline", "signal") == "signal":
      return raw_signal
    settings, rate = config.data.log_mel, config.data.sample_rate

    def log_mel(inputs):
      waveform = jnp.mean(inputs["signal"].astype(jnp.float32), axis=-1)  # channels -> mono
      bands = spectrogram.log_mel_spectrogram(
          waveform, rate, settings.window_length, settings.hop_length, settings.num_mels)
      return bands.reshape(bands.shape[0], -1)
    return log_mel

  def nominal_input_shape(self, config: Any, channels: int) -> tuple[int, ...]:
    return (config.data.max_length, channels)

  def synthetic_batch(self, config: Any, input_shape: tuple[int, ...], batch_size: int,
                      rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"signal": rng.standard_normal((batch_size,) + tuple(input_shape)).astype(
                np.float32),
            "length": np.full((batch_size,), input_shape[0], np.int32),
            "label": rng.integers(0, 10, (batch_size,), np.int32)}


MODALITY = Sequence()
