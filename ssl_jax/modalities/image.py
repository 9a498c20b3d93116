"""Images: TFDS images read as uint8 views (`ssl_jax.data.image_pipeline`), augmented and
normalised on device (`ssl_jax.data.augment`).

A training batch holds "views" uint8 [b, V, H, W, C] (V = `config.data.num_views`), with
multi-crop "local_views" [b, L, h, h, C], and "label" [b] when labelled; an evaluation batch
holds "image" uint8 [b, H, W, C], "label" and "mask". `represent` reads the first view,
normalised with `config.augment`'s mean and std (or, with `config.data.statistics =
"dataset"`, the training split's own, which a folder of images stores when it is prepared);
the raw baseline is the pixels.
"""
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.config_lib import check_choice
from ssl_jax.data import augment
from ssl_jax.data.inputs import Inputs
from ssl_jax.modalities import Batch, FeatureFn, Modality

STATISTICS = ("augment", "dataset")  # where the mean and std that normalise images come from
# The smallest std a channel is divided by: a channel that never varies would divide by zero.
_MIN_STD = 1 / 255


def raw_pixels(images: jax.Array) -> jax.Array:
  """Flattened pixels in [0, 1]: the baseline a representation must beat."""
  return images.reshape(images.shape[0], -1).astype(jnp.float32) / 255.0


class Image(Modality):
  """Single images, the default modality."""

  kind = "image"
  pipeline = "ssl_jax.data.image_pipeline"
  folder_builder = "ssl_jax.data.builders.image_folder"
  can_finetune = True

  def resolve_config(self, config: Any) -> Any:
    """With `config.data.statistics = "dataset"`, the mean and std of `config.augment` (and of
    `config.local_augment`, multi-crop's) replaced by the training split's per-channel pixel
    statistics as the dataset stored them; "augment" keeps the recipe's."""
    statistics = config.data.get("statistics", "augment")
    check_choice("config.data.statistics", statistics, STATISTICS)
    if statistics == "augment":
      return config
    from ssl_jax.data import stream  # pylint: disable=g-import-not-at-top  (TensorFlow)
    mean, std = stream.pixel_statistics(config)
    resolved = config.copy_and_resolve_references()
    resolved.unlock()
    for section in ("augment", "local_augment"):
      if section in resolved:
        resolved[section].mean = tuple(round(m, 6) for m in mean)
        resolved[section].std = tuple(round(max(s, _MIN_STD), 6) for s in std)
    if config.is_locked:
      resolved.lock()
    return resolved

  def example_batch(self, config: Any, input_shape: tuple[int, ...], batch_size: int = 2
                    ) -> Batch:
    """Float views [b, V, H, W, C] (`input_shape` = (H, W, C)) and any multi-crop local
    views [b, L, h, h, C]."""
    batch = {"views": jnp.zeros((batch_size, config.data.num_views) + tuple(input_shape),
                                jnp.float32)}
    num_local = config.data.get("local_views", 0)
    if num_local:
      side = config.data.local_image_size
      batch["local_views"] = jnp.zeros((batch_size, num_local, side, side, input_shape[-1]),
                                       jnp.float32)
    return batch

  def device_preprocess(self, rng: jax.Array, batch: Batch, config: Any) -> Batch:
    """Augments and normalises the uint8 views per example with an explicit rng; local views
    with `config.local_augment` (or `config.augment`) from their own stream."""
    batch = dict(batch)
    batch["views"] = augment.augment_views(rng, batch["views"], config)
    if "local_views" in batch:
      section = "local_augment" if "local_augment" in config else "augment"
      batch["local_views"] = augment.augment_views(jax.random.fold_in(rng, 1),
                                                   batch["local_views"], config, section)
    return batch

  def represent_inputs(self, batch: Batch) -> jax.Array:
    return batch["views"][:, 0]

  def eval_inputs(self, batch: Batch) -> jax.Array:
    return batch["image"]

  def normalize(self, inputs: jax.Array, config: Any) -> jax.Array:
    return augment.normalize_images(inputs, config)

  def encode_images(self, inputs: Inputs, images: list[np.ndarray]) -> Batch:
    from ssl_jax.data import image_pipeline  # pylint: disable=g-import-not-at-top  (TF)
    shape = inputs.info().input_shape
    if inputs.config.data.eval_crop == "center":
      shape = (inputs.config.data.image_size, inputs.config.data.image_size, shape[-1])
    return {"image": image_pipeline.eval_images(inputs.config, images, shape)}

  def raw_features(self, config: Any) -> FeatureFn:
    del config
    return raw_pixels

  def nominal_input_shape(self, config: Any, channels: int) -> tuple[int, ...]:
    return (config.data.image_size, config.data.image_size, channels)

  def synthetic_batch(self, config: Any, input_shape: tuple[int, ...], batch_size: int,
                      rng: np.random.Generator) -> dict[str, np.ndarray]:
    batch = {"views": rng.integers(0, 256, (batch_size, config.data.num_views)
                                   + tuple(input_shape), np.uint8),
             "label": rng.integers(0, 10, (batch_size,), np.int32)}
    num_local = config.data.get("local_views", 0)
    if num_local:
      side = config.data.local_image_size
      batch["local_views"] = rng.integers(
          0, 256, (batch_size, num_local, side, side, input_shape[-1]), np.uint8)
    return batch


MODALITY = Image()
