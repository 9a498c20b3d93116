"""Sequences: sensor channels or audio read as standardised windows
(`ssl_jax.data.sequence_pipeline`).

A batch holds "signal" float32 [b, T, C] (zeros after each recording's end) and "length"
int32 [b], plus "label" when labelled and "mask" in evaluation. `represent` reads both; the
raw baseline is the flattened window.
"""
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.modalities import Batch, FeatureFn, Modality

SEQUENCE_INPUTS = ("signal", "length")  # what a sequence `represent` reads


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
    del config
    return raw_signal

  def nominal_input_shape(self, config: Any, channels: int) -> tuple[int, ...]:
    return (config.data.max_length, channels)

  def synthetic_batch(self, config: Any, input_shape: tuple[int, ...], batch_size: int,
                      rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"signal": rng.standard_normal((batch_size,) + tuple(input_shape)).astype(
                np.float32),
            "length": np.full((batch_size,), input_shape[0], np.int32),
            "label": rng.integers(0, 10, (batch_size,), np.int32)}


MODALITY = Sequence()
