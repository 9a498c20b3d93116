"""Host input pipeline for images: TFDS images -> uint8 views.

The host does only what must happen per example before batching: decoding, the random resized
crop and the horizontal flip (SimCLR, Chen et al. 2020, Appendix A: crop-and-resize then flip).
Photometric augmentation runs on the accelerator in `ssl_jax.data.augment`.

The stream is built on `ssl_jax.data.stream`'s seeded epochs, so it is a pure function of
(config.seed, step) and resumes exactly: the crops and flips of the example at position `i` of
an epoch come from row `i` of stateless draws seeded by (seed, process, epoch). Small datasets
(digits, CIFAR) are decoded once into an in-memory cache; large ones are streamed as encoded
records and decoded after the resume skip.
"""

from collections.abc import Callable, Iterator
import math
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from ssl_jax.data import stream
from ssl_jax.data.inputs import DatasetInfo
from ssl_jax.errors import UserError

_CROPS = ("none", "random_resized")
_EVAL_CROPS = ("none", "center")
# Training shards whose decoded uint8 images fit in this many bytes (CIFAR's
# 50k x 32x32x3 = 150 MiB does) are decoded once and cached in host memory.
_MAX_CACHED_BYTES = 256 * 2**20
_LOCAL_STREAM = 1  # fold_in index of the local crops' randomness within an epoch


def dataset_info(config: Any) -> DatasetInfo:
  """Returns sizes, classes and training-view shape (H, W, C) of the configured dataset."""
  builder = stream.load_builder(config)
  data = config.data
  label_key = stream.label_key(builder, data.get("label_key", "label"))
  return DatasetInfo(
      *stream.sizes_and_classes(builder, data),
      input_shape=view_shape(builder, data, data.crop, "crop"),
      class_names=stream.class_names(builder, label_key),
  )


class _ViewDraws:
  """An epoch's crop and flip randomness: per example, a crop seed and a flip per view, and
  with multi-crop the local crops' seed and flips from their own stream (fold_in of the epoch
  key), so that adding local crops leaves the global views' draws unchanged."""
  num_keys = 2

  def __init__(self, num_views: int, num_local: int):
    self.num_views, self.num_local = num_views, num_local

  def __call__(self, epoch_key: tf.Tensor, keys: list[tf.Tensor], size: int
               ) -> dict[str, tf.Tensor]:
    crop_key, flip_key = keys
    draws = {
        "crop": tf.random.stateless_uniform(
            [size, 2], seed=crop_key, minval=None, maxval=None, dtype=tf.int64),
        "flip": tf.random.stateless_uniform([size, self.num_views], seed=flip_key) < 0.5,
    }
    if self.num_local:
      local_crop_key, local_flip_key = tf.unstack(tf.random.experimental.stateless_split(
          tf.random.experimental.stateless_fold_in(epoch_key, _LOCAL_STREAM), 2))
      draws["local_crop"] = tf.random.stateless_uniform(
          [size, 2], seed=local_crop_key, minval=None, maxval=None, dtype=tf.int64)
      draws["local_flip"] = tf.random.stateless_uniform(
          [size, self.num_local], seed=local_flip_key) < 0.5
    return draws


def train_batches(
    config: Any, *, start_step: int, process_index: int, process_count: int
) -> Iterator[dict[str, np.ndarray]]:
  """Returns an endless iterator over this process's batches from step `start_step` on.

  Each batch is {"views": uint8 [b, V, H, W, C], "label": int32 [b]} ("label"
  only when `config.data.label_key` is set), with b = batch_size //
  process_count and V = `config.data.num_views` independently cropped/flipped
  views of each example.

  Multi-crop (SwAV, Caron et al. 2020; DINO, Caron et al. 2021): with
  `config.data.local_views` = L > 0 the batch also holds "local_views" uint8
  [b, L, h, h, C]: L random resized crops of area `local_crop_scale` at side
  h = `local_image_size` (always cropped, also when the global views are not),
  flipped like the global views.
  """
  builder = stream.load_builder(config)
  data = config.data
  part = stream.training_shard(config, builder, start_step, process_index, process_count)
  batch = part.batch
  num_views = data.num_views
  if num_views < 1:
    raise UserError(f"config.data.num_views must be >= 1, got {num_views}")
  shape = view_shape(builder, data, data.crop, "crop")
  num_local = _num_local_views(data)
  image_key = data.get("image_key", "image")
  label_key = stream.label_key(builder, data.get("label_key", "label"))
  decode = image_decoder(builder, image_key)
  cached = fits_in_memory(builder, image_key, part.shard_size)
  # Small datasets (digits, CIFAR) are decoded once and kept in host memory; large ones stream
  # encoded records and decode after the skip.
  epoch_order = stream.epoch_order_fn(
      builder, part.shard, part.shard_size, _decoders(builder, image_key, label_key), cached,
      data.shuffle_buffer, lambda ex: {**ex, image_key: decode(ex[image_key])})

  def crop_views(
      ex: dict[str, tf.Tensor], rnd: dict[str, tf.Tensor]
  ) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
    """Per example: decodes (unless cached) and cuts the V random resized crops."""
    image = ex[image_key] if cached else decode(ex[image_key])
    out = dict(ex)
    if num_local:
      seeds = tf.random.experimental.stateless_split(rnd["local_crop"], num_local)
      out["local_views"] = tf.stack([
          random_resized_crop(image, seeds[v], data.local_image_size, data.local_crop_scale,
                               data.crop_ratio) for v in range(num_local)])
    if data.crop == "random_resized":
      seeds = tf.random.experimental.stateless_split(rnd["crop"], num_views)
      image = tf.stack([
          random_resized_crop(image, seeds[v], data.image_size, data.crop_scale,
                               data.crop_ratio) for v in range(num_views)])
    return {**out, image_key: image}, rnd

  def finish(ex: dict[str, tf.Tensor], rnd: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Per batch: repeats uncropped images into views and flips them."""
    views = ex[image_key]
    if data.crop == "none":
      views = tf.repeat(views[:, None], num_views, axis=1)
    if data.flip:
      views = tf.where(rnd["flip"][:, :, None, None, None], tf.reverse(views, [3]), views)
    out = {"views": tf.ensure_shape(views, (batch, num_views, *shape))}
    if num_local:
      local = ex["local_views"]
      if data.flip:
        local = tf.where(rnd["local_flip"][:, :, None, None, None], tf.reverse(local, [3]),
                         local)
      side = data.local_image_size
      out["local_views"] = tf.ensure_shape(local, (batch, num_local, side, side,
                                                   shape[-1]))
    if label_key is not None:
      out["label"] = tf.cast(ex[label_key], tf.int32)
    return out

  ds = stream.seeded_epochs(epoch_order, part, start_step, _ViewDraws(num_views, num_local))
  if data.crop == "random_resized" or num_local or not cached:
    ds = ds.map(crop_views, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch, drop_remainder=True).map(finish)
  return ds.prefetch(data.prefetch).as_numpy_iterator()


def eval_batches(
    config: Any, split: str, *, batch_size: int, process_index: int = 0,
    process_count: int = 1
) -> Iterator[dict[str, np.ndarray]]:
  """Returns an iterator over this process's share of `split`, once, in order.

  Each batch is {"image": uint8 [bs, H, W, C], "label": int32 [bs], "mask": bool
  [bs]}; padding examples are zeros with mask False. Every process yields the
  same number of batches (that of the largest shard) so that multi-host
  evaluation steps stay in lockstep.
  """
  builder = stream.load_builder(config)
  data = config.data
  shard, num_batches = stream.eval_shard(builder, split, batch_size, process_index, process_count)
  image_shape = view_shape(builder, data, data.eval_crop, "eval_crop")
  image_key = data.get("image_key", "image")
  label_key = stream.label_key(builder, data.get("label_key", "label"))
  decode = image_decoder(builder, image_key)

  def preprocess(ex: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    image = decode(ex[image_key])
    if data.eval_crop == "center":
      image = resize_and_center_crop(image, data.eval_resize, data.image_size)
    out = {"image": tf.ensure_shape(image, image_shape)}
    if label_key is not None:
      out["label"] = tf.cast(ex[label_key], tf.int32)
    return {**out, "mask": True}

  ds = stream.open_split(builder, shard, decoders=_decoders(builder, image_key, label_key))
  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  return stream.padded_batches(ds, num_batches, batch_size, data.prefetch)


def _num_local_views(data: Any) -> int:
  """`config.data.local_views` (0 when the key is absent), checked with its crop settings."""
  num_local = data.get("local_views", 0) or 0
  if num_local < 0:
    raise UserError(f"config.data.local_views must be >= 0, got {num_local}")
  if num_local:
    low, high = tuple(data.local_crop_scale)
    if not 0 < low <= high <= 1 or data.local_image_size < 1:
      raise UserError(
          f"config.data.local_crop_scale {(low, high)} must lie in (0, 1] and "
          f"local_image_size ({data.local_image_size}) must be >= 1")
  return num_local


def fits_in_memory(
    builder: tfds.core.DatasetBuilder, image_key: str, num_examples: int) -> bool:
  """Whether `num_examples` decoded fixed-size images fit the in-memory cache."""
  shape = stream.dataset_feature(builder, image_key).shape
  if None in shape:
    return False
  return num_examples * math.prod(shape) <= _MAX_CACHED_BYTES


def image_decoder(
    builder: tfds.core.DatasetBuilder, image_key: str
) -> Callable[[tf.Tensor], tf.Tensor]:
  """Returns encoded image -> uint8 [H, W, C], keeping the dataset's channels."""
  feature = stream.dataset_feature(builder, image_key)

  def decode(encoded: tf.Tensor) -> tf.Tensor:
    image = feature.decode_example(encoded)
    if image.dtype != tf.uint8:  # Rescales uint16 and [0, 1] float images.
      image = tf.image.convert_image_dtype(image, tf.uint8, saturate=True)
    return image

  return decode


def view_shape(
    builder: tfds.core.DatasetBuilder, data: Any, crop: str, crop_key: str
) -> tuple[int, int, int]:
  """(H, W, C) of images after `crop`; fixed-size crops are needed for batching."""
  allowed = _CROPS if crop_key == "crop" else _EVAL_CROPS
  if crop not in allowed:
    raise UserError(f"config.data.{crop_key} must be one of {allowed}, got {crop!r}")
  shape = tuple(stream.dataset_feature(builder, data.get("image_key", "image")).shape)
  if len(shape) != 3 or shape[-1] is None:
    raise UserError(f"dataset '{builder.name}' images have shape {shape}, not (H, W, C)")
  if crop == "none":
    if None in shape:
      raise UserError(
          f"dataset '{builder.name}' has images of varying size {shape}: set "
          f"config.data.{crop_key} to crop them to config.data.image_size")
    return shape
  if crop == "center" and (data.eval_resize is None or data.eval_resize < data.image_size):
    raise UserError(
        f"config.data.eval_resize ({data.eval_resize}) must be >= image_size "
        f"({data.image_size}) for eval_crop 'center'")
  return (data.image_size, data.image_size, shape[-1])


def _decoders(
    builder: tfds.core.DatasetBuilder, image_key: str, label_key: str | None
) -> tfds.decode.PartialDecoding:
  """Reads only the image (left encoded, so skipping is cheap) and the label."""
  keys = [image_key] + ([label_key] if label_key is not None else [])
  for key in keys:
    stream.dataset_feature(builder, key)  # A UserError naming the missing feature.
  return tfds.decode.PartialDecoding(
      {key: True for key in keys}, decoders={image_key: tfds.decode.SkipDecoding()})


def random_resized_crop(image: tf.Tensor, key: tf.Tensor, side: int, scale: Any,
                         ratio: Any) -> tf.Tensor:
  """Crops a random box of area fraction `scale` and aspect `ratio`, resized to side^2.

  As in SimCLR (Chen et al. 2020, Appendix A) / Inception: the box is sampled
  over the whole image; if no box fits in 10 tries the whole image is used.
  """
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
      seed=key, min_object_covered=0.0,
      aspect_ratio_range=tuple(ratio), area_range=tuple(scale),
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  crop = tf.slice(image, begin, size)
  return _resize_uint8(crop, (side, side))


def resize_and_center_crop(image: tf.Tensor, resize: int, size: int) -> tf.Tensor:
  """Resizes the short side to `resize` (keeping aspect), then crops the central size^2."""
  hw = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = resize / tf.reduce_min(hw)
  new_hw = tf.maximum(tf.cast(tf.round(hw * scale), tf.int32), resize)
  image = _resize_uint8(image, new_hw)
  top, left = tf.unstack((new_hw - size) // 2)
  return image[top:top + size, left:left + size]


def _resize_uint8(image: tf.Tensor, hw: Any) -> tf.Tensor:
  """Bilinear resize (antialiased when shrinking) back to uint8."""
  resized = tf.image.resize(image, hw, method="bilinear", antialias=True)
  return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)



def eval_images(config: Any, images: list[np.ndarray], shape: tuple[int, int, int]
                ) -> np.ndarray:
  """Images from outside the dataset (uint8 [h, w, 3] of any size) as `eval_batches` gives
  the dataset's [n, *shape]: with `eval_crop` "center" resized and centre-cropped the same
  way, otherwise resized to the stored `shape`; grey when the run's images have 1 channel."""
  data = config.data
  out = np.zeros((len(images),) + tuple(shape), np.uint8)
  for i, image in enumerate(images):
    image = tf.convert_to_tensor(image, tf.uint8)
    if shape[-1] == 1:
      image = tf.cast(tf.round(tf.image.rgb_to_grayscale(tf.cast(image, tf.float32))), tf.uint8)
    if data.eval_crop == "center":
      image = resize_and_center_crop(image, data.eval_resize, data.image_size)
    else:
      image = _resize_uint8(image, shape[:2])
    out[i] = image.numpy()
  return out
