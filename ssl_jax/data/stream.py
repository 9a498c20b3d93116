"""The stream toolkit every host input pipeline shares: TFDS builders and splits, per-process
shards, seeded epochs, padded evaluation batches.

Training streams are a pure function of (config.seed, step). Epoch `e` of process `p` reads the
process's shard in an order seeded by (seed, p, e) and keeps `steps_per_epoch * b` examples (the
remainder is dropped); the per-example randomness of the example at position `i` of the epoch
(crops, flips, window offsets, caption choices) is row `i` of stateless draws seeded by
(seed, p, e). Resuming at step S therefore starts at epoch S // steps_per_epoch and skips the
(S % steps_per_epoch) * b examples already seen, which reproduces the uninterrupted stream
exactly. The skip happens before any decoding: large datasets are streamed as encoded records
and decoded after it; small ones are read once into an in-memory cache.

Evaluation reads a split once, in order, each process its `tfds.even_splits` share, padded to
the same number of whole batches on every process (a `mask` marks the real rows).

Each modality's pipeline (`image_pipeline`, `text_pipeline`, `sequence_pipeline`,
`video_pipeline`, `image_text_pipeline`) builds on these; only the pipelines need TensorFlow.
"""
from collections.abc import Callable, Iterator
import importlib
import math
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from ssl_jax import modalities
from ssl_jax.data.builders import captioned_images  # pylint: disable=unused-import  (registers it)
from ssl_jax.data.builders import digits  # pylint: disable=unused-import  (registers "digits")
from ssl_jax.data.builders import moving_digits  # pylint: disable=unused-import  (registers it)
from ssl_jax.data.builders import photos  # pylint: disable=unused-import  (registers "photos")
from ssl_jax.data.builders import python_docs  # pylint: disable=unused-import  (registers it)
from ssl_jax.data.builders import sequences  # pylint: disable=unused-import  (registers it)
from ssl_jax.data.builders import sounding_digits  # pylint: disable=unused-import  (registers it)
from ssl_jax.data.builders import user_files
from ssl_jax.data.builders import vowels  # pylint: disable=unused-import  (registers it)
from ssl_jax.errors import UserError

# TF only runs host-side input ops here; keep it off the accelerators JAX owns.
if tf.config.list_physical_devices("GPU"):
  tf.config.set_visible_devices([], "GPU")

# Training splits whose records take at most this many bytes have their labels counted before
# training (`label_counts`); larger ones are checked when the probes run.
_MAX_LABEL_SCAN_BYTES = 1 << 30
# Datasets whose builders live in `ssl_jax.data.builders` and prepare offline.
EMBEDDED = frozenset({"captioned_images", "digits", "moving_digits", "photos", "python_docs",
                      "sequences", "sounding_digits", "vowels"})


def load_builder(config: Any) -> tfds.core.DatasetBuilder:
  """Returns the TFDS builder of `config.dataset`, ready to read.

  Embedded datasets (digits, photos, python_docs/<config>) are prepared into
  `config.data.data_dir` on first use, offline, and so is `folder:PATH`, a folder of the
  user's own files, read by the builder its modality names (`Modality.folder_builder`). Real
  datasets are never downloaded implicitly: an unprepared one raises a UserError saying how
  to prepare it.
  """
  name = config.dataset
  root = user_files.folder_path(name)
  if root is not None:
    builder = _folder_builder(config, root)
    num_examples(builder, config.data.train_split)
    return builder
  try:
    builder = tfds.builder(name, data_dir=config.data.data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise UserError(
        f"unknown dataset '{name}': not a TFDS dataset (see tfds.list_builders()), an "
        f"embedded one ({', '.join(sorted(EMBEDDED))}) nor {user_files.PREFIX}PATH") from e
  if name.split("/")[0] in EMBEDDED and not builder.is_prepared():
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


def _folder_builder(config: Any, root: str) -> tfds.core.DatasetBuilder:
  """The prepared dataset of the files in `root`, read by the module that the run's modality
  names for its own kind of file (`folder_builder(root, config)`)."""
  modality = modalities.find(config)
  if not modality.folder_builder:
    raise UserError(f"dataset '{config.dataset}': {config.data.get('modality', 'image')} "
                    "inputs cannot be read from a folder of files (images and texts can)")
  return importlib.import_module(modality.folder_builder).folder_builder(root, config)


def stored_metadata(builder: tfds.core.DatasetBuilder) -> dict[str, Any]:
  """What the dataset's builder stored beside its records (`info.metadata`; {} if none)."""
  metadata = builder.info.metadata
  return {} if metadata is None else dict(metadata.items())  # items() loads a lazy one


def label_key(builder: tfds.core.DatasetBuilder, key: str | None) -> str | None:
  """The label feature `key` (`config.data.label_key`), or None when the dataset has no labels
  by nature: a folder of the user's files without classes (`metadata["labelled"]` False).
  Any other dataset without the feature is a UserError where it is read."""
  if (key is not None and key not in builder.info.features
      and stored_metadata(builder).get("labelled") is False):
    return None
  return key


def pixel_statistics(config: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """(mean, std) per channel, on the [0, 1] scale, of the training split's pixels, as the
  dataset stored them when it was prepared (a folder of images does)."""
  metadata = stored_metadata(load_builder(config))
  if "mean" not in metadata or "std" not in metadata:
    raise UserError(f"dataset '{config.dataset}' stores no pixel statistics (a folder of "
                    "images does): set config.data.statistics='augment' and give "
                    "config.augment.mean and .std")
  return tuple(map(float, metadata["mean"])), tuple(map(float, metadata["std"]))


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


def dataset_feature(builder: tfds.core.DatasetBuilder,
                    key: str) -> tfds.features.FeatureConnector:
  features = builder.info.features
  if key not in features:
    raise UserError(
        f"dataset '{builder.name}' has no feature '{key}' (it has {sorted(features)})")
  return features[key]


def sizes_and_classes(builder: tfds.core.DatasetBuilder, data: Any
                      ) -> tuple[int, int, int | None]:
  """(train examples, test examples (0 without a test split), classes of the label feature
  or None): what every pipeline's `dataset_info` reports besides its input shape."""
  label = label_key(builder, data.get("label_key"))
  num_classes = None
  if label is not None:
    num_classes = getattr(dataset_feature(builder, label), "num_classes", None)
  num_test = 0 if data.test_split is None else num_examples(builder, data.test_split)
  return num_examples(builder, data.train_split), num_test, num_classes


def class_names(builder: tfds.core.DatasetBuilder, key: str | None
                ) -> tuple[str, ...] | None:
  """The names of the label feature's classes (a ClassLabel's `names`; "0", "1", ... when it
  was built from a count), None without a label feature: what zero-shot prompts are made of."""
  key = label_key(builder, key)
  if key is None:
    return None
  names = getattr(dataset_feature(builder, key), "names", None)
  return tuple(names) if names else None


def label_counts(config: Any) -> np.ndarray | None:
  """Examples of each class in `config.data.train_split` [num_classes], parsing only the label
  feature; None when the dataset has no class label, or when the split's records are larger
  than `_MAX_LABEL_SCAN_BYTES` (reading ImageNet's 140 GB for its labels would take longer
  than a check should)."""
  if config.data.get("label_key") is None:
    return None
  builder = load_builder(config)
  key = label_key(builder, config.data.label_key)
  if key is None:
    return None
  num_classes = getattr(dataset_feature(builder, key), "num_classes", None)
  if num_classes is None:
    return None
  try:
    size = int(builder.info.splits[config.data.train_split].num_bytes)
  except (KeyError, ValueError, TypeError):
    size = 0  # unknown (a mock, an unusual slice): small datasets are the common case
  if size > _MAX_LABEL_SCAN_BYTES:
    return None
  ds = open_split(builder, config.data.train_split,
                  decoders=tfds.decode.PartialDecoding({key: True}))
  counts = np.zeros((num_classes,), np.int64)
  for labels in ds.map(lambda ex: ex[key]).batch(65536).as_numpy_iterator():
    counts += np.bincount(labels, minlength=num_classes)
  return counts


def process_shards(split: str, process_index: int, process_count: int) -> list[Any]:
  """All processes' even shares of `split`; process p reads `[p]`."""
  if not 0 <= process_index < process_count:
    raise UserError(
        f"process_index {process_index} is not in [0, process_count={process_count})")
  return tfds.even_splits(split, n=process_count)


def local_batch_size(batch_size: int, process_count: int) -> int:
  if batch_size < 1 or batch_size % process_count:
    raise UserError(
        f"batch_size {batch_size} must be a positive multiple of the process count "
        f"{process_count}")
  return batch_size // process_count


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
                   decoders: Any, cached: bool, shuffle_buffer: int,
                   before_cache: Callable[[dict[str, tf.Tensor]], dict[str, tf.Tensor]] | None
                   = None) -> Callable[[tf.Tensor, tf.Tensor], tf.data.Dataset]:
  """(file_seed, shuffle_seed) -> one epoch of `shard` in a seeded order: a small shard is
  read once into memory (`cached`; `before_cache` runs on each example first, e.g. the image
  pipeline decodes its images once) and shuffled whole; a large one is read in a seeded file
  order through a `shuffle_buffer`-example shuffle."""
  if cached:
    examples = open_split(builder, shard, decoders=decoders)
    if before_cache is not None:
      examples = examples.map(before_cache, num_parallel_calls=tf.data.AUTOTUNE)
    examples = examples.cache()

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


class UniformDraws(NamedTuple):
  """An epoch's per-example randomness: row i of a uniform [0, 1) draw, a scalar or `count`
  of them, from one stateless key (the text, sequence, video and caption pipelines)."""
  count: int | None = None
  num_keys: int = 1

  def __call__(self, epoch_key: tf.Tensor, keys: list[tf.Tensor], size: int) -> tf.Tensor:
    del epoch_key
    return tf.random.stateless_uniform([size] if self.count is None else [size, self.count],
                                       seed=keys[0])


def seeded_epochs(epoch_order: Callable[[tf.Tensor, tf.Tensor], tf.data.Dataset],
                  part: TrainingShard, start_step: int,
                  randomness: Callable[[tf.Tensor, list[tf.Tensor], int], Any] = UniformDraws()
                  ) -> tf.data.Dataset:
  """(example, randomness) pairs from step `start_step` on, endlessly.

  Epoch e keeps `part.steps_per_epoch * part.batch` examples of `epoch_order`, whose file and
  shuffle seeds come from the first two of `2 + randomness.num_keys` keys split from
  fold_in(part.base_key, e); `randomness(epoch_key, other keys, size)` gives the epoch's rows
  (a tensor or a dict of them), row i paired with example i. Resuming at step S skips
  (S mod steps_per_epoch) * batch pairs, which reproduces the uninterrupted stream.
  """
  size = part.steps_per_epoch * part.batch

  @tf.autograph.experimental.do_not_convert  # plain graph code around TFDS's reader
  def epoch_examples(epoch: tf.Tensor) -> tf.data.Dataset:
    epoch_key = tf.random.experimental.stateless_fold_in(part.base_key, epoch)
    keys = tf.unstack(tf.random.experimental.stateless_split(epoch_key,
                                                             2 + randomness.num_keys))
    rows = randomness(epoch_key, keys[2:], size)
    ds = epoch_order(op_seed(keys[0]), op_seed(keys[1])).take(size)
    return tf.data.Dataset.zip(ds, tf.data.Dataset.from_tensor_slices(rows))

  start_epoch, step_in_epoch = divmod(start_step, part.steps_per_epoch)
  ds = tf.data.Dataset.counter(start_epoch).flat_map(epoch_examples)
  return ds.skip(step_in_epoch * part.batch)


def eval_shard(builder: tfds.core.DatasetBuilder, split: str, batch_size: int,
               process_index: int, process_count: int) -> tuple[Any, int]:
  """(this process's shard of `split`, the number of batches every process yields): that of
  the largest shard, so multi-host evaluation steps stay in lockstep."""
  if batch_size < 1:
    raise UserError(f"eval batch_size must be >= 1, got {batch_size}")
  shards = process_shards(split, process_index, process_count)
  num_batches = math.ceil(max(num_examples(builder, s) for s in shards) / batch_size)
  return shards[process_index], num_batches


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
