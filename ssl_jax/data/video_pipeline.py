"""Host input pipeline for videos: TFDS clips -> uint8 frames [b, T, H, W, C].

The video counterpart of `ssl_jax.data.image_pipeline` (images) and `sequence_pipeline`, with the
same guarantees: a training stream is a pure function of (config.seed, step) and resumes
exactly; evaluation reads each split once, in order, padded to whole batches with a `mask`.

A batch holds (T = `config.data.num_frames`, S = `config.data.image_size`):
  frames uint8 [b, T, S, S, C]   the clip; the device scales it to [0, 1] (`augment.unit_frames`)
  label int32 [b]                when `config.data.label_key` is set (None: unlabelled video)
  mask bool [b]                  evaluation only: False on the rows that fill the last batch

Each example's video (`config.data.video_key`: uint8 [T', H, W, C], T' fixed or variable) is
cut to T frames taken every `config.data.frame_stride` frames, from a random start in
training (every part of a long clip is read over the epochs) and from the first frame in
evaluation; a clip shorter than the window is padded by repeating its last frame. Frames of
another size than S x S are resized (short side to S, bilinear, antialiased) and centre-cropped.
"""
from collections.abc import Iterator
import math
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from ssl_jax.data import stream
from ssl_jax.data.inputs import DatasetInfo
from ssl_jax.errors import UserError

# Training shards whose clips take at most this many bytes are decoded once and cached.
_MAX_CACHED_BYTES = 256 * 2**20


def _video_shape(builder: tfds.core.DatasetBuilder, video_key: str) -> tuple:
  shape = tuple(stream.dataset_feature(builder, video_key).shape)
  if len(shape) != 4 or shape[-1] is None:
    raise UserError(f"dataset '{builder.name}' feature '{video_key}' has shape {shape}, not "
                    "[T, H, W, C]")
  return shape


def _check(data: Any) -> None:
  if data.num_frames < 1 or data.frame_stride < 1 or data.image_size < 1:
    raise UserError(f"config.data.num_frames ({data.num_frames}), frame_stride "
                    f"({data.frame_stride}) and image_size ({data.image_size}) must be >= 1")


def dataset_info(config: Any) -> DatasetInfo:
  """Sizes, classes and the clip shape (T, S, S, C) of the configured video dataset."""
  builder = stream.load_builder(config)
  data = config.data
  _check(data)
  channels = _video_shape(builder, data.video_key)[-1]
  return DatasetInfo(*stream.sizes_and_classes(builder, data),
                     input_shape=(data.num_frames, data.image_size, data.image_size, channels))


def _decoders(builder: tfds.core.DatasetBuilder, data: Any) -> tfds.decode.PartialDecoding:
  keys = [data.video_key] + ([data.label_key] if data.get("label_key") else [])
  for key in keys:
    stream.dataset_feature(builder, key)  # a UserError naming a missing feature
  return tfds.decode.PartialDecoding({key: True for key in keys})


def _resize_frames(frames: tf.Tensor, side: int) -> tf.Tensor:
  """[T, H, W, C] uint8 -> [T, side, side, C]: short side to `side`, central square."""
  hw = tf.cast(tf.shape(frames)[1:3], tf.float32)
  new_hw = tf.maximum(tf.cast(tf.round(hw * side / tf.reduce_min(hw)), tf.int32), side)
  resized = tf.image.resize(frames, new_hw, method="bilinear", antialias=True)
  top, left = tf.unstack((new_hw - side) // 2)
  resized = resized[:, top:top + side, left:left + side]
  return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def clip(video: tf.Tensor, offset: tf.Tensor, data: Any) -> tf.Tensor:
  """T frames every `frame_stride` from `offset` (a fraction of the room a long video leaves),
  the last frame repeated past a short video's end, resized to image_size when needed."""
  span = (data.num_frames - 1) * data.frame_stride + 1
  length = tf.shape(video)[0]
  start = tf.cast(offset * tf.cast(tf.maximum(length - span, 0) + 1, tf.float32), tf.int32)
  index = tf.minimum(start + tf.range(data.num_frames) * data.frame_stride, length - 1)
  frames = tf.gather(video, index)
  if tuple(video.shape[1:3]) != (data.image_size, data.image_size):
    frames = _resize_frames(frames, data.image_size)
  return tf.ensure_shape(frames, (data.num_frames, data.image_size, data.image_size,
                                  video.shape[-1]))


def _example(ex: dict[str, tf.Tensor], offset: tf.Tensor, data: Any) -> dict[str, tf.Tensor]:
  out = {"frames": clip(ex[data.video_key], offset, data)}
  if data.get("label_key"):
    out["label"] = tf.cast(ex[data.label_key], tf.int32)
  return out


def train_batches(config: Any, *, start_step: int, process_index: int, process_count: int
                  ) -> Iterator[dict[str, np.ndarray]]:
  """An endless iterator over this process's batches from step `start_step` on.

  Epoch e of process p reads the process's shard in an order seeded by (seed, p, e) and keeps
  `steps_per_epoch * b` clips; the start of the clip at position i comes from row i of
  stateless draws seeded by (seed, p, e), so resuming at step S (skipping (S mod
  steps_per_epoch) * b clips) reproduces the uninterrupted stream.
  """
  builder = stream.load_builder(config)
  data = config.data
  part = stream.training_shard(config, builder, start_step, process_index, process_count)
  decoders = _decoders(builder, data)
  shape = _video_shape(builder, data.video_key)

  epoch_order = stream.epoch_order_fn(
      builder, part.shard, part.shard_size, decoders,
      None not in shape and part.shard_size * math.prod(shape) <= _MAX_CACHED_BYTES,
      data.shuffle_buffer)
  ds = stream.seeded_epochs(epoch_order, part, start_step)
  ds = ds.map(lambda ex, offset: _example(ex, offset, data),
              num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(part.batch, drop_remainder=True)
  return ds.prefetch(data.prefetch).as_numpy_iterator()


def eval_batches(config: Any, split: str, *, batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """This process's share of `split`, once, in order: each video's first clip with "label"
  (when configured) and "mask" (False on the zero rows that fill the last batch). Every
  process yields as many batches as the largest shard."""
  builder = stream.load_builder(config)
  data = config.data
  _check(data)
  shard, num_batches = stream.eval_shard(builder, split, batch_size, process_index,
                                         process_count)
  ds = stream.open_split(builder, shard, decoders=_decoders(builder, data))
  ds = ds.map(lambda ex: {**_example(ex, tf.constant(0.0), data), "mask": True},
              num_parallel_calls=tf.data.AUTOTUNE)
  return stream.padded_batches(ds, num_batches, batch_size, data.prefetch)
