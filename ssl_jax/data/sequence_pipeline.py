"""Host input pipeline for sequences: TFDS signals (sensor channels, audio) -> [b, T, C] float.

The sequence counterpart of `ssl_jax.data.image_pipeline` (images) and `text_pipeline`, with the
same guarantees: a training stream is a pure function of (config.seed, step) and resumes
exactly; evaluation reads each split once, in order, padded to whole batches with a `mask`.

A batch holds (T = `config.data.max_length`, C = the dataset's channels):
  signal float32 [b, T, C]   the window, scaled and standardised; zeros after `length`
  length int32 [b]           the recorded frames in the window (T unless the series is shorter)
  label int32 [b]            when `config.data.label_key` is set

Each example's signal (`config.data.signal_key`: a [T', C] tensor, or a [T'] waveform read as
one channel) is multiplied by `config.data.signal_scale` (1/32768 turns int16 audio into
[-1, 1]) and cut to T frames: a window at a random offset in training (every part of a long
recording is read over the epochs), the beginning in evaluation; shorter series are padded
at the end. The recorded length is `config.data.length_key` when the dataset stores it (the
embedded `sequences` are stored zero-padded), otherwise the signal's own length.

Per-channel standardisation (`config.data.standardize`): every split is shifted and scaled
by the mean and standard deviation of each channel over the recorded frames of the first
`config.data.stats_examples` training examples (the whole training split of the embedded
datasets), so that channels of different units (LPC cepstra, accelerations, angular rates)
weigh alike and no test statistic leaks into training. Raw audio keeps its [-1, 1] scale.
"""
from collections.abc import Iterator
import math
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from ssl_jax.config_lib import check_choice, check_number
from ssl_jax.data import stream
from ssl_jax.data.inputs import DatasetInfo
from ssl_jax.errors import UserError

# Training shards with at most this many float32 values are read once and kept in memory.
_MAX_CACHED_VALUES = 64 * 2**20


def _num_channels(builder: tfds.core.DatasetBuilder, signal_key: str) -> int:
  shape = tuple(stream.dataset_feature(builder, signal_key).shape)
  if len(shape) == 1:
    return 1
  if len(shape) != 2 or shape[-1] is None:
    raise UserError(f"dataset '{builder.name}' feature '{signal_key}' has shape {shape}, not "
                    "[T] or [T, C]")
  return shape[-1]


def dataset_info(config: Any) -> DatasetInfo:
  """Sizes, classes and the window shape (T, C) of the configured sequence dataset."""
  builder = stream.load_builder(config)
  data = config.data
  if data.max_length < 1:
    raise UserError(f"config.data.max_length must be >= 1, got {data.max_length}")
  _check_raw_baseline(data)
  return DatasetInfo(*stream.sizes_and_classes(builder, data),
                     input_shape=(data.max_length, _num_channels(builder, data.signal_key)))


def _check_raw_baseline(data: Any) -> None:
  """One-line UserErrors for `data.raw_baseline` and, for "log_mel", its settings."""
  from ssl_jax.modalities.sequence import RAW_BASELINES  # pylint: disable=g-import-not-at-top
  baseline = data.get("raw_baseline", "signal")
  check_choice("config.data.raw_baseline", baseline, RAW_BASELINES)
  if baseline != "log_mel":
    return
  if not data.get("sample_rate") or "log_mel" not in data:
    raise UserError("config.data.raw_baseline='log_mel' needs config.data.sample_rate (Hz) and "
                    "config.data.log_mel (window_length, hop_length, num_mels)")
  check_number("config.data.sample_rate", data.sample_rate, above=0)
  for key in ("window_length", "hop_length", "num_mels"):
    check_number(f"config.data.log_mel.{key}", data.log_mel[key], minimum=1, integer=True)
  if data.log_mel.window_length > data.max_length:
    raise UserError(f"config.data.log_mel.window_length ({data.log_mel.window_length}) is "
                    f"longer than a window of config.data.max_length ({data.max_length})")


def _read_keys(builder: tfds.core.DatasetBuilder, data: Any) -> list[str]:
  keys = [data.signal_key] + [k for k in (data.get("length_key"), data.get("label_key")) if k]
  for key in keys:
    stream.dataset_feature(builder, key)  # a UserError naming a missing feature
  return keys


def _recording(ex: dict[str, tf.Tensor], data: Any) -> tuple[tf.Tensor, tf.Tensor]:
  """(scaled float signal [T', C], recorded length) of one example."""
  signal = tf.cast(ex[data.signal_key], tf.float32) * data.signal_scale
  if signal.shape.rank == 1:
    signal = signal[:, None]
  length = tf.shape(signal)[0]
  if data.get("length_key"):
    length = tf.minimum(tf.cast(ex[data.length_key], tf.int32), length)
  return signal, length


def _window(signal: tf.Tensor, length: tf.Tensor, offset: tf.Tensor, max_length: int,
            mean: np.ndarray, std: np.ndarray) -> tuple[tf.Tensor, tf.Tensor]:
  """T frames from `offset` (a fraction of the room a long recording leaves), standardised,
  zero after the recorded frames; returns (window [T, C], frames recorded in it)."""
  start = tf.cast(offset * tf.cast(tf.maximum(length - max_length, 0) + 1, tf.float32),
                  tf.int32)
  kept = tf.minimum(length - start, max_length)
  window = (signal[start:start + kept] - mean) / std
  window = tf.pad(window, [[0, max_length - kept], [0, 0]])
  return tf.ensure_shape(window, (max_length, len(mean))), kept


def channel_statistics(config: Any) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel (mean, std) over the recorded frames of the first `stats_examples` training
  examples, or (0, 1) when `config.data.standardize` is off (see the module docstring)."""
  builder = stream.load_builder(config)
  data = config.data
  channels = _num_channels(builder, data.signal_key)
  if not data.standardize:
    return np.zeros((channels,), np.float32), np.ones((channels,), np.float32)
  keys = _read_keys(builder, data)
  ds = stream.open_split(builder, data.train_split,
                           decoders=tfds.decode.PartialDecoding({k: True for k in keys}))
  count, total, squares = 0, np.zeros((channels,)), np.zeros((channels,))
  for signal, length in ds.take(data.stats_examples).map(lambda ex: _recording(ex, data)
                                                          ).as_numpy_iterator():
    frames = signal[:length].astype(np.float64)
    count += len(frames)
    total += frames.sum(axis=0)
    squares += (frames ** 2).sum(axis=0)
  mean = total / max(count, 1)
  std = np.sqrt(np.maximum(squares / max(count, 1) - mean ** 2, 0.0))
  return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def _batch_dict(ex: dict[str, tf.Tensor], window: tf.Tensor, kept: tf.Tensor, data: Any
                ) -> dict[str, tf.Tensor]:
  out = {"signal": window, "length": kept}
  if data.get("label_key"):
    out["label"] = tf.cast(ex[data.label_key], tf.int32)
  return out


def train_batches(config: Any, *, start_step: int, process_index: int, process_count: int
                  ) -> Iterator[dict[str, np.ndarray]]:
  """An endless iterator over this process's batches from step `start_step` on.

  Epoch e of process p reads the process's shard in an order seeded by (seed, p, e) and keeps
  `steps_per_epoch * b` examples; the window offset of the example at position i comes from
  row i of stateless draws seeded by (seed, p, e), so resuming at step S (skipping
  (S mod steps_per_epoch) * b examples) reproduces the uninterrupted stream.
  """
  builder = stream.load_builder(config)
  data = config.data
  part = stream.training_shard(config, builder, start_step, process_index, process_count)
  mean, std = channel_statistics(config)
  decoders = tfds.decode.PartialDecoding({k: True for k in _read_keys(builder, data)})
  signal_shape = stream.dataset_feature(builder, data.signal_key).shape

  epoch_order = stream.epoch_order_fn(
      builder, part.shard, part.shard_size, decoders,
      None not in signal_shape
      and part.shard_size * math.prod(signal_shape) <= _MAX_CACHED_VALUES,
      data.shuffle_buffer)

  def preprocess(ex: dict[str, tf.Tensor], offset: tf.Tensor) -> dict[str, tf.Tensor]:
    signal, length = _recording(ex, data)
    return _batch_dict(ex, *_window(signal, length, offset, data.max_length, mean, std), data)

  ds = stream.seeded_epochs(epoch_order, part, start_step)
  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(part.batch, drop_remainder=True)
  return ds.prefetch(data.prefetch).as_numpy_iterator()


def eval_batches(config: Any, split: str, *, batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """This process's share of `split`, once, in order: each recording's first T frames with
  "length", "label" (when configured) and "mask" (False on the zero rows that fill the last
  batch). Every process yields as many batches as the largest shard."""
  builder = stream.load_builder(config)
  data = config.data
  shard, num_batches = stream.eval_shard(builder, split, batch_size, process_index,
                                         process_count)
  mean, std = channel_statistics(config)
  decoders = tfds.decode.PartialDecoding({k: True for k in _read_keys(builder, data)})

  def preprocess(ex: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    signal, length = _recording(ex, data)
    window, kept = _window(signal, length, tf.constant(0.0), data.max_length, mean, std)
    return {**_batch_dict(ex, window, kept, data), "mask": True}

  ds = stream.open_split(builder, shard, decoders=decoders)
  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  return stream.padded_batches(ds, num_batches, batch_size, data.prefetch)
