"""Host input pipeline: TFDS datasets -> tf.data -> numpy batches.

The host does only what must happen per example before batching: decoding, the
random resized crop and the horizontal flip (SimCLR, Chen et al. 2020, Appendix
A: crop-and-resize then flip). Photometric augmentation runs on the accelerator
in `ssl_jax.data.augment`, so only this module (with the TFDS builders it
registers) needs TensorFlow.

Training streams are a pure function of (config.seed, step). Epoch `e` of
process `p` reads the process's shard in an order seeded by (seed, p, e) and
keeps `steps_per_epoch * b` examples (the remainder is dropped); the crops and
flips of the example at position `i` of the epoch come from row `i` of
stateless random draws seeded by (seed, p, e). Resuming at step S therefore
starts at epoch S // steps_per_epoch and skips the (S % steps_per_epoch) * b
examples already seen, which reproduces the uninterrupted stream exactly. The
skip happens before any decoding or augmentation: large datasets are streamed
as encoded records and decoded after it; small ones (digits, CIFAR) are
decoded once into an in-memory cache.
"""

from collections.abc import Callable, Iterator
import dataclasses
import math
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from ssl_jax.data.builders import captioned_images  # pylint: disable=unused-import  (registers it)
from ssl_jax.data.builders import digits  # pylint: disable=unused-import  (registers "digits")
from ssl_jax.data.builders import moving_digits  # pylint: disable=unused-import  (registers it)
from ssl_jax.data.builders import photos  # pylint: disable=unused-import  (registers "photos")
from ssl_jax.data.builders import python_docs  # pylint: disable=unused-import  (registers it)
from ssl_jax.data.builders import sequences  # pylint: disable=unused-import  (registers it)
from ssl_jax.errors import UserError

# TF only runs host-side input ops here; keep it off the accelerators JAX owns.
if tf.config.list_physical_devices("GPU"):
  tf.config.set_visible_devices([], "GPU")

# Datasets whose builders live in `ssl_jax.data.builders` and prepare offline.
_EMBEDDED = frozenset({"captioned_images", "digits", "moving_digits", "photos", "python_docs",
                       "sequences"})
_CROPS = ("none", "random_resized")
_EVAL_CROPS = ("none", "center")
# Training shards whose decoded uint8 images fit in this many bytes (CIFAR's
# 50k x 32x32x3 = 150 MiB does) are decoded once and cached in host memory.
_MAX_CACHED_BYTES = 256 * 2**20
_LOCAL_STREAM = 1  # fold_in index of the local crops' randomness within an epoch


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the trainer needs to size a run and a model for a dataset.

  Attributes:
    num_train_examples: examples in `config.data.train_split` (all processes).
    num_test_examples: examples in `config.data.test_split` (0 when it is None).
    num_classes: classes of the label feature, None when there is no label.
    image_shape: (H, W, C) of a training view as `train_batches` yields it.
  """
  num_train_examples: int
  num_test_examples: int
  num_classes: int | None
  image_shape: tuple[int, int, int]
  class_names: tuple[str, ...] | None = None

  @property
  def input_shape(self) -> tuple[int, ...]:
    """The shape of one example's model input (the trainer's name for it across modalities)."""
    return self.image_shape


def load_builder(config: Any) -> tfds.core.DatasetBuilder:
  """Returns the TFDS builder of `config.dataset`, ready to read.

  Embedded datasets (digits, photos, python_docs/<config>) are prepared into
  `config.data.data_dir` on first use, offline. Real datasets are never downloaded
  implicitly: an unprepared one raises a UserError saying how to prepare it.
  """
  name = config.dataset
  try:
    builder = tfds.builder(name, data_dir=config.data.data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise UserError(
        f"unknown dataset '{name}': not a TFDS dataset (see tfds.list_builders()) "
        f"nor an embedded one ({', '.join(sorted(_EMBEDDED))})") from e
  if name.split("/")[0] in _EMBEDDED and not builder.is_prepared():
    try:
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    except FileExistsError:
      # Another process sharing this data_dir (multi-process on one host, or a shared disk)
      # finished preparing first; TFDS writes to a temporary folder, so its copy is complete.
      builder = tfds.builder(name, data_dir=config.data.data_dir)
      if not builder.is_prepared():
        raise
  num_examples(builder, config.data.train_split)  # Fails early if unreadable.
  return builder


def dataset_info(config: Any) -> DatasetInfo:
  """Returns sizes, classes and training-view shape of the configured dataset."""
  builder = load_builder(config)
  data = config.data
  label_key = data.get("label_key", "label")
  num_classes = None
  if label_key is not None:
    num_classes = getattr(dataset_feature(builder, label_key), "num_classes", None)
  return DatasetInfo(
      num_train_examples=num_examples(builder, data.train_split),
      num_test_examples=(
          0 if data.test_split is None else num_examples(builder, data.test_split)),
      num_classes=num_classes,
      image_shape=view_shape(builder, data, data.crop, "crop"),
      class_names=class_names(builder, label_key),
  )


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
  if start_step < 0:
    raise UserError(f"start_step must be >= 0, got {start_step}")
  builder = load_builder(config)
  data = config.data
  batch = local_batch_size(config.batch_size, process_count)
  shards = process_shards(data.train_split, process_index, process_count)
  shard_sizes = [num_examples(builder, s) for s in shards]
  # The smallest shard sets the epoch length so that all processes step in lockstep.
  steps_per_epoch = min(shard_sizes) // batch
  if steps_per_epoch == 0:
    raise UserError(
        f"batch_size {config.batch_size} exceeds the {data.train_split!r} split of "
        f"'{config.dataset}' ({process_count} process(es))")
  num_views = data.num_views
  if num_views < 1:
    raise UserError(f"config.data.num_views must be >= 1, got {num_views}")
  shape = view_shape(builder, data, data.crop, "crop")
  num_local = _num_local_views(data)
  image_key, label_key = data.get("image_key", "image"), data.get("label_key", "label")
  decoders = _decoders(builder, image_key, label_key)
  decode = image_decoder(builder, image_key)
  shard, shard_size = shards[process_index], shard_sizes[process_index]
  cached = fits_in_memory(builder, image_key, shard_size)
  base_key = tf.constant([config.seed, process_index], tf.int64)

  if cached:
    # Small datasets (digits, CIFAR) are decoded once and kept in host memory;
    # each epoch is then a full seeded permutation of the shard.
    examples = open_split(builder, shard, decoders=decoders).map(
        lambda ex: {**ex, image_key: decode(ex[image_key])},
        num_parallel_calls=tf.data.AUTOTUNE).cache()

    def epoch_order(file_seed: tf.Tensor, shuffle_seed: tf.Tensor) -> tf.data.Dataset:
      del file_seed  # The cache is read in file order; the shuffle sees all of it.
      return examples.shuffle(shard_size, seed=shuffle_seed,
                              reshuffle_each_iteration=False)
  else:
    # Large datasets stream encoded records; decoding waits until after the skip.
    def epoch_order(file_seed: tf.Tensor, shuffle_seed: tf.Tensor) -> tf.data.Dataset:
      read_config = tfds.ReadConfig(
          shuffle_seed=file_seed, shuffle_reshuffle_each_iteration=False,
          try_autocache=False)
      ds = open_split(builder, shard, shuffle_files=True, decoders=decoders,
                 read_config=read_config)
      return ds.shuffle(data.shuffle_buffer, seed=shuffle_seed,
                        reshuffle_each_iteration=False)

  # Plain graph code; keeps autograph from trying to convert TFDS's reader.
  @tf.autograph.experimental.do_not_convert
  def epoch_examples(epoch: tf.Tensor) -> tf.data.Dataset:
    """(example, randomness) pairs of one epoch; row i of the randomness is example i's."""
    epoch_key = tf.random.experimental.stateless_fold_in(base_key, epoch)
    file_key, shuffle_key, crop_key, flip_key = tf.unstack(
        tf.random.experimental.stateless_split(epoch_key, 4))
    size = steps_per_epoch * batch
    randomness = {
        "crop": tf.random.stateless_uniform(
            [size, 2], seed=crop_key, minval=None, maxval=None, dtype=tf.int64),
        "flip": tf.random.stateless_uniform([size, num_views], seed=flip_key) < 0.5,
    }
    if num_local:  # Own streams: adding local crops leaves the global views' draws unchanged.
      local_crop_key, local_flip_key = tf.unstack(tf.random.experimental.stateless_split(
          tf.random.experimental.stateless_fold_in(epoch_key, _LOCAL_STREAM), 2))
      randomness["local_crop"] = tf.random.stateless_uniform(
          [size, 2], seed=local_crop_key, minval=None, maxval=None, dtype=tf.int64)
      randomness["local_flip"] = tf.random.stateless_uniform(
          [size, num_local], seed=local_flip_key) < 0.5
    ds = epoch_order(op_seed(file_key), op_seed(shuffle_key)).take(size)
    return tf.data.Dataset.zip(ds, tf.data.Dataset.from_tensor_slices(randomness))

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

  start_epoch, step_in_epoch = divmod(start_step, steps_per_epoch)
  ds = tf.data.Dataset.counter(start_epoch).flat_map(epoch_examples)
  ds = ds.skip(step_in_epoch * batch)
  if data.crop == "random_resized" or num_local or not cached:
    ds = ds.map(crop_views, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch, drop_remainder=True).map(finish)
  return ds.prefetch(data.prefetch).as_numpy_iterator()


def sizes_and_classes(builder: tfds.core.DatasetBuilder, data: Any
                      ) -> tuple[int, int, int | None]:
  """(train examples, test examples (0 without a test split), classes of the label feature
  or None): what every pipeline's `dataset_info` reports besides its input shape."""
  label_key = data.get("label_key")
  num_classes = None
  if label_key is not None:
    num_classes = getattr(dataset_feature(builder, label_key), "num_classes", None)
  num_test = 0 if data.test_split is None else num_examples(builder, data.test_split)
  return num_examples(builder, data.train_split), num_test, num_classes


def class_names(builder: tfds.core.DatasetBuilder, label_key: str | None
                ) -> tuple[str, ...] | None:
  """The names of the label feature's classes (a ClassLabel's `names`; "0", "1", ... when it
  was built from a count), None without a label feature: what zero-shot prompts are made of."""
  if label_key is None:
    return None
  names = getattr(dataset_feature(builder, label_key), "names", None)
  return tuple(names) if names else None


def eval_shard(builder: tfds.core.DatasetBuilder, split: str, batch_size: int,
               process_index: int, process_count: int) -> tuple[Any, int]:
  """(this process's shard of `split`, the number of batches every process yields): that of
  the largest shard, so multi-host evaluation steps stay in lockstep."""
  if batch_size < 1:
    raise UserError(f"eval batch_size must be >= 1, got {batch_size}")
  shards = process_shards(split, process_index, process_count)
  num_batches = math.ceil(max(num_examples(builder, s) for s in shards) / batch_size)
  return shards[process_index], num_batches


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
  builder = load_builder(config)
  data = config.data
  shard, num_batches = eval_shard(builder, split, batch_size, process_index, process_count)
  image_shape = view_shape(builder, data, data.eval_crop, "eval_crop")
  image_key, label_key = data.get("image_key", "image"), data.get("label_key", "label")
  decode = image_decoder(builder, image_key)

  def preprocess(ex: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    image = decode(ex[image_key])
    if data.eval_crop == "center":
      image = resize_and_center_crop(image, data.eval_resize, data.image_size)
    out = {"image": tf.ensure_shape(image, image_shape)}
    if label_key is not None:
      out["label"] = tf.cast(ex[label_key], tf.int32)
    return {**out, "mask": True}

  ds = open_split(builder, shard, decoders=_decoders(builder, image_key, label_key))
  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  return padded_batches(ds, num_batches, batch_size, data.prefetch)


def open_split(builder: tfds.core.DatasetBuilder, split: Any, **kwargs) -> tf.data.Dataset:
  """`builder.as_dataset(split)`, with unprepared data and bad splits as UserErrors."""
  try:
    return builder.as_dataset(split=split, **kwargs)
  except AssertionError as e:  # How TFDS reports a dataset that was never prepared.
    hint = (" (imagenet2012 needs its manual download first, see its TFDS page)"
            if builder.name == "imagenet2012" else "")
    raise UserError(
        f"dataset '{builder.name}' is not prepared in {builder.data_dir_root}: run "
        f"`tfds build {builder.name} --data_dir={builder.data_dir_root}`{hint}") from e
  except ValueError as e:  # Unknown split names, and slices that select nothing.
    reason = str(e).splitlines()[0]
    raise UserError(
        f"split {str(split)!r} of dataset '{builder.name}' is empty or invalid: "
        f"{reason}") from e


def num_examples(builder: tfds.core.DatasetBuilder, split: Any) -> int:
  """Counts the examples of `split` (a name, slice or even split) without reading it."""
  count = int(open_split(builder, split).cardinality())
  if count <= 0:
    raise UserError(
        f"split {str(split)!r} of dataset '{builder.name}' is empty or of unknown size")
  return count


def process_shards(split: str, process_index: int, process_count: int) -> list[Any]:
  """All processes' even shares of `split`; process p reads `[p]`."""
  if not 0 <= process_index < process_count:
    raise UserError(
        f"process_index {process_index} is not in [0, process_count={process_count})")
  return tfds.even_splits(split, n=process_count)


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


def local_batch_size(batch_size: int, process_count: int) -> int:
  if batch_size < 1 or batch_size % process_count:
    raise UserError(
        f"batch_size {batch_size} must be a positive multiple of the process count "
        f"{process_count}")
  return batch_size // process_count


def dataset_feature(builder: tfds.core.DatasetBuilder,
                    key: str) -> tfds.features.FeatureConnector:
  features = builder.info.features
  if key not in features:
    raise UserError(
        f"dataset '{builder.name}' has no feature '{key}' (it has {sorted(features)})")
  return features[key]


def fits_in_memory(
    builder: tfds.core.DatasetBuilder, image_key: str, num_examples: int) -> bool:
  """Whether `num_examples` decoded fixed-size images fit the in-memory cache."""
  shape = dataset_feature(builder, image_key).shape
  if None in shape:
    return False
  return num_examples * math.prod(shape) <= _MAX_CACHED_BYTES


def image_decoder(
    builder: tfds.core.DatasetBuilder, image_key: str
) -> Callable[[tf.Tensor], tf.Tensor]:
  """Returns encoded image -> uint8 [H, W, C], keeping the dataset's channels."""
  feature = dataset_feature(builder, image_key)

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
  shape = tuple(dataset_feature(builder, data.get("image_key", "image")).shape)
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
    dataset_feature(builder, key)  # A UserError naming the missing feature.
  return tfds.decode.PartialDecoding(
      {key: True for key in keys}, decoders={image_key: tfds.decode.SkipDecoding()})


class TrainingShard(NamedTuple):
  """This process's part of a training stream: its batch size, its shard of the training
  split and that shard's size, the steps of an epoch, and the key its epochs are seeded by."""
  batch: int
  shard: Any
  shard_size: int
  steps_per_epoch: int
  base_key: tf.Tensor


def training_shard(config: Any, builder: tfds.core.DatasetBuilder, start_step: int,
                   process_index: int, process_count: int) -> TrainingShard:
  """The checked `TrainingShard` of process `process_index` (the sequence and video
  pipelines): every process runs min(shard sizes) // local batch steps an epoch."""
  if start_step < 0:
    raise UserError(f"start_step must be >= 0, got {start_step}")
  batch = local_batch_size(config.batch_size, process_count)
  shards = process_shards(config.data.train_split, process_index, process_count)
  shard_sizes = [num_examples(builder, s) for s in shards]
  steps_per_epoch = min(shard_sizes) // batch
  if steps_per_epoch == 0:
    raise UserError(f"batch_size {config.batch_size} exceeds the {config.data.train_split!r} "
                    f"split of '{config.dataset}' ({process_count} process(es))")
  return TrainingShard(batch, shards[process_index], shard_sizes[process_index],
                       steps_per_epoch, tf.constant([config.seed, process_index], tf.int64))


def epoch_order_fn(builder: tfds.core.DatasetBuilder, shard: Any, shard_size: int,
                   decoders: Any, cached: bool, shuffle_buffer: int
                   ) -> Callable[[tf.Tensor, tf.Tensor], tf.data.Dataset]:
  """(file_seed, shuffle_seed) -> one epoch of `shard` in a seeded order: a small shard is
  read once into memory (`cached`) and shuffled whole; a large one is read in a seeded file
  order through a `shuffle_buffer`-example shuffle. The sequence and video pipelines' epochs."""
  if cached:
    examples = open_split(builder, shard, decoders=decoders).cache()

    def cached_order(file_seed: tf.Tensor, shuffle_seed: tf.Tensor) -> tf.data.Dataset:
      del file_seed  # the cache is read in file order; the shuffle sees all of it
      return examples.shuffle(shard_size, seed=shuffle_seed, reshuffle_each_iteration=False)
    return cached_order

  def streamed_order(file_seed: tf.Tensor, shuffle_seed: tf.Tensor) -> tf.data.Dataset:
    read_config = tfds.ReadConfig(shuffle_seed=file_seed, shuffle_reshuffle_each_iteration=False,
                                  try_autocache=False)
    ds = open_split(builder, shard, shuffle_files=True, decoders=decoders,
                    read_config=read_config)
    return ds.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
  return streamed_order


def seeded_epochs(epoch_order: Callable[[tf.Tensor, tf.Tensor], tf.data.Dataset],
                  base_key: tf.Tensor, steps_per_epoch: int, batch: int, start_step: int,
                  draws: int | None = None) -> tf.data.Dataset:
  """(example, draw) pairs from step `start_step` on, endlessly: epoch e keeps
  `steps_per_epoch * batch` examples of `epoch_order` seeded by fold_in(base_key, e), each
  paired with row i of a uniform [0, 1) draw seeded the same way (a scalar, or `draws` of
  them), so that resuming at step S (skipping (S mod steps_per_epoch) * batch pairs)
  reproduces the uninterrupted stream."""
  @tf.autograph.experimental.do_not_convert
  def epoch_examples(epoch: tf.Tensor) -> tf.data.Dataset:
    epoch_key = tf.random.experimental.stateless_fold_in(base_key, epoch)
    file_key, shuffle_key, draw_key = tf.unstack(
        tf.random.experimental.stateless_split(epoch_key, 3))
    size = steps_per_epoch * batch
    rows = tf.random.stateless_uniform([size] if draws is None else [size, draws],
                                       seed=draw_key)
    ds = epoch_order(op_seed(file_key), op_seed(shuffle_key)).take(size)
    return tf.data.Dataset.zip(ds, tf.data.Dataset.from_tensor_slices(rows))

  start_epoch, step_in_epoch = divmod(start_step, steps_per_epoch)
  ds = tf.data.Dataset.counter(start_epoch).flat_map(epoch_examples)
  return ds.skip(step_in_epoch * batch)


def padded_batches(ds: tf.data.Dataset, num_batches: int, batch_size: int, prefetch: int
                   ) -> Iterator[dict[str, np.ndarray]]:
  """`num_batches` batches of `ds`, the rows after its end all zeros (their "mask" False)."""
  padding = tf.nest.map_structure(lambda spec: tf.zeros(spec.shape, spec.dtype),
                                  ds.element_spec)
  ds = ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat())
  ds = ds.take(num_batches * batch_size).batch(batch_size)
  return ds.prefetch(prefetch).as_numpy_iterator()


def op_seed(key: tf.Tensor) -> tf.Tensor:
  """An int64 op seed (for `shuffle`) drawn from a stateless [2] key."""
  return tf.random.stateless_uniform(
      [], seed=key, minval=None, maxval=None, dtype=tf.int64)


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
