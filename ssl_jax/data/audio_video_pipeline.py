"""Host input pipeline for clips with sound: TFDS videos and their audio -> uint8 frames
[b, T, S, S, C] and float32 waveforms [b, A] (audio-visual correspondence, Arandjelovic &
Zisserman 2017).

The video pipeline (`ssl_jax.data.video_pipeline`) with each clip's sound beside it, and its
guarantees: a training stream is a pure function of (config.seed, step) and resumes exactly;
evaluation reads each split once, in order, padded to whole batches with a `mask`.

A batch holds (T = `config.data.num_frames`, S = `config.data.image_size`, A =
`config.data.audio_length`):
  frames uint8 [b, T, S, S, C]   the clip, cut as the video pipeline cuts it (`video_pipeline.clip`)
  audio float32 [b, A]           the sound of the same stretch of time, mono
  label int32 [b]                when `config.data.label_key` is set
  mask bool [b]                  evaluation only: False on the rows that fill the last batch

Each example's video (`config.data.video_key`: uint8 [T', H, W, C], T' fixed or variable)
gives T frames every `frame_stride` from a start frame s (random in training, 0 in evaluation).
Its audio (`config.data.audio_key`: [A'] mono or [A', channels], e.g. int16 stereo, A' fixed
or variable) covers the same time as the T' frames, whatever the two rates: the window starts
at sample round(s * A' / T') (the sample at the instant frame s is shown) and takes A samples,
zeros past the end of the recording. Channels are averaged to mono and the samples multiplied
by `config.data.audio_scale` (1/32768 turns int16 into [-1, 1]). Size A to the clip's span:
(T - 1) * frame_stride + 1 frames of A' / T' samples each.
"""
from collections.abc import Iterator
import math
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from ssl_jax.data import stream
from ssl_jax.data import video_pipeline
from ssl_jax.data.inputs import DatasetInfo
from ssl_jax.errors import UserError

# Training shards whose clips and sound take at most this many bytes are decoded once and cached.
_MAX_CACHED_BYTES = video_pipeline._MAX_CACHED_BYTES  # pylint: disable=protected-access


def _audio_feature(builder: tfds.core.DatasetBuilder, audio_key: str
                   ) -> tfds.features.FeatureConnector:
  feature = stream.dataset_feature(builder, audio_key)
  shape = tuple(feature.shape)
  if len(shape) not in (1, 2) or (len(shape) == 2 and shape[-1] is None):
    raise UserError(f"dataset '{builder.name}' feature '{audio_key}' has shape {shape}, not "
                    "[A] or [A, channels]")
  return feature


def _check(builder: tfds.core.DatasetBuilder, data: Any) -> tuple:
  """The video feature's shape [T', H, W, C], after one-line UserErrors for features and
  settings that cannot give a clip and its sound."""
  video_pipeline._check(data)  # pylint: disable=protected-access
  shape = video_pipeline._video_shape(builder, data.video_key)  # pylint: disable=protected-access
  if data.audio_length < 1:
    raise UserError(f"config.data.audio_length must be >= 1, got {data.audio_length}")
  rate = getattr(_audio_feature(builder, data.audio_key), "sample_rate", None)
  rate = rate or stream.stored_metadata(builder).get("sample_rate")
  if rate and data.get("sample_rate") and int(rate) != int(data.sample_rate):
    raise UserError(f"config.data.sample_rate is {data.sample_rate} Hz but dataset "
                    f"'{builder.name}' stores '{data.audio_key}' at {rate} Hz")
  return shape


def dataset_info(config: Any) -> DatasetInfo:
  """Sizes, classes and the clip shape (T, S, S, C) of the configured dataset."""
  builder = stream.load_builder(config)
  data = config.data
  channels = _check(builder, data)[-1]
  return DatasetInfo(*stream.sizes_and_classes(builder, data),
                     input_shape=(data.num_frames, data.image_size, data.image_size, channels))


def _decoders(builder: tfds.core.DatasetBuilder, data: Any) -> tfds.decode.PartialDecoding:
  keys = [data.video_key, data.audio_key] + ([data.label_key] if data.get("label_key") else [])
  for key in keys:
    stream.dataset_feature(builder, key)  # a UserError naming a missing feature
  return tfds.decode.PartialDecoding({key: True for key in keys})


def start_frame(num_video_frames: tf.Tensor, offset: tf.Tensor, data: Any) -> tf.Tensor:
  """The first frame of the clip that `video_pipeline.clip` cuts at `offset` (the same
  fraction of the room a long video leaves)."""
  span = (data.num_frames - 1) * data.frame_stride + 1
  room = tf.maximum(num_video_frames - span, 0) + 1
  return tf.cast(offset * tf.cast(room, tf.float32), tf.int32)


def sound(audio: tf.Tensor, first_frame: tf.Tensor, num_video_frames: tf.Tensor, data: Any
          ) -> tf.Tensor:
  """float32 [audio_length]: the mono, scaled samples from the instant of frame `first_frame`
  of a video of `num_video_frames` frames, zeros past the recording's end."""
  audio = tf.cast(audio, tf.float32)
  if audio.shape.rank == 2:
    audio = tf.reduce_mean(audio, axis=-1)
  audio = audio * data.audio_scale
  num_samples = tf.shape(audio, out_type=tf.int64)[0]
  start = tf.cast(tf.round(tf.cast(first_frame, tf.float64) * tf.cast(num_samples, tf.float64)
                           / tf.cast(num_video_frames, tf.float64)), tf.int64)
  window = audio[start:start + data.audio_length]
  window = tf.pad(window, [[0, data.audio_length - tf.shape(window)[0]]])
  return tf.ensure_shape(window, (data.audio_length,))


def _example(ex: dict[str, tf.Tensor], offset: tf.Tensor, data: Any) -> dict[str, tf.Tensor]:
  video = ex[data.video_key]
  length = tf.shape(video)[0]
  out = {"frames": video_pipeline.clip(video, offset, data),
         "audio": sound(ex[data.audio_key], start_frame(length, offset, data), length, data)}
  if data.get("label_key"):
    out["label"] = tf.cast(ex[data.label_key], tf.int32)
  return out


def _fits_in_memory(builder: tfds.core.DatasetBuilder, data: Any, shard_size: int) -> bool:
  """Whether a training shard of `shard_size` clips and their sound is small enough to cache
  decoded (fixed shapes only)."""
  size = 0
  for key in (data.video_key, data.audio_key):
    feature = stream.dataset_feature(builder, key)
    if None in tuple(feature.shape):
      return False
    size += math.prod(feature.shape) * tf.as_dtype(feature.dtype).size
  return shard_size * size <= _MAX_CACHED_BYTES


def train_batches(config: Any, *, start_step: int, process_index: int, process_count: int
                  ) -> Iterator[dict[str, np.ndarray]]:
  """An endless iterator over this process's batches from step `start_step` on.

  Epoch e of process p reads the process's shard in an order seeded by (seed, p, e) and keeps
  `steps_per_epoch * b` examples; the start frame of the example at position i (and so where
  its sound starts) comes from row i of stateless draws seeded by (seed, p, e), so resuming at
  step S (skipping (S mod steps_per_epoch) * b examples) reproduces the uninterrupted stream.
  """
  builder = stream.load_builder(config)
  data = config.data
  _check(builder, data)
  part = stream.training_shard(config, builder, start_step, process_index, process_count)
  epoch_order = stream.epoch_order_fn(
      builder, part.shard, part.shard_size, _decoders(builder, data),
      _fits_in_memory(builder, data, part.shard_size), data.shuffle_buffer)
  ds = stream.seeded_epochs(epoch_order, part, start_step)
  ds = ds.map(lambda ex, offset: _example(ex, offset, data),
              num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(part.batch, drop_remainder=True)
  return ds.prefetch(data.prefetch).as_numpy_iterator()


def eval_batches(config: Any, split: str, *, batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """This process's share of `split`, once, in order: each video's first clip and its sound,
  with "label" (when configured) and "mask" (False on the zero rows that fill the last
  batch). Every process yields as many batches as the largest shard."""
  builder = stream.load_builder(config)
  data = config.data
  _check(builder, data)
  shard, num_batches = stream.eval_shard(builder, split, batch_size, process_index,
                                         process_count)
  ds = stream.open_split(builder, shard, decoders=_decoders(builder, data))
  ds = ds.map(lambda ex: {**_example(ex, tf.constant(0.0), data), "mask": True},
              num_parallel_calls=tf.data.AUTOTUNE)
  return stream.padded_batches(ds, num_batches, batch_size, data.prefetch)
