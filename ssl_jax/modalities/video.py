"""Videos: TFDS clips read as uint8 frames (`ssl_jax.data.video_pipeline`), scaled to [0, 1]
on device (frame predictors model pixels, so videos are not standardised).

A batch holds "frames" uint8 [b, T, H, W, C], plus "label" when labelled and "mask" in
evaluation. `represent` reads the frames (and in evaluation the "mask", so that held-out
metrics can skip padding rows); the raw baseline is the flattened clip.
"""
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.data import augment
from ssl_jax.modalities import Batch, FeatureFn, Modality
from ssl_jax.modalities.image import raw_pixels


def raw_frames(inputs: dict[str, jax.Array]) -> jax.Array:
  """The flattened frames in [0, 1] [b, T * H * W * C]: the video baseline."""
  return raw_pixels(inputs["frames"])


class Video(Modality):
  """Clips of frames."""

  kind = "frames"
  pipeline = "ssl_jax.data.video_pipeline"

  def example_batch(self, config: Any, input_shape: tuple[int, ...], batch_size: int = 2
                    ) -> Batch:
    """float `frames` [b, T, H, W, C] in [0, 1] (`input_shape` = (T, H, W, C))."""
    return {"frames": jnp.zeros((batch_size,) + tuple(input_shape), jnp.float32)}

  def device_preprocess(self, rng: jax.Array, batch: Batch, config: Any) -> Batch:
    del rng, config
    return {**batch, "frames": augment.unit_frames(batch["frames"])}

  def represent_inputs(self, batch: Batch) -> dict[str, jax.Array]:
    return {"frames": batch["frames"]}

  def eval_inputs(self, batch: Batch) -> dict[str, jax.Array]:
    return {"frames": batch["frames"], "mask": batch["mask"]}

  def normalize(self, inputs: dict[str, jax.Array], config: Any) -> dict[str, jax.Array]:
    del config
    return {**inputs, "frames": augment.unit_frames(inputs["frames"])}

  def raw_features(self, config: Any) -> FeatureFn:
    del config
    return raw_frames

  def nominal_input_shape(self, config: Any, channels: int) -> tuple[int, ...]:
    data = config.data
    return (data.num_frames, data.image_size, data.image_size, channels)

  def synthetic_batch(self, config: Any, input_shape: tuple[int, ...], batch_size: int,
                      rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"frames": rng.integers(0, 256, (batch_size,) + tuple(input_shape), np.uint8),
            "label": rng.integers(0, 10, (batch_size,), np.int32)}


MODALITY = Video()
