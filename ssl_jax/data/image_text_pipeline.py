"""Host input pipeline for image–caption pairs (CLIP): TFDS images with captions -> uint8 views
and WordPiece token rows.

Datasets hold an image, a list of captions (`config.data.caption_key`, a sequence of dicts
whose `caption_text_key` is the text: the layout of TFDS `coco_captions`, five or more per
image, and of the embedded `captioned_images`, three) and optionally a label. The guarantees
are those of `ssl_jax.data.stream`: a training stream is a pure function of (config.seed,
step) and resumes exactly; evaluation reads each split once, in order, padded to whole
batches with a `mask`.

A training batch holds (L = `config.data.max_length`):
  views uint8 [b, 1, H, W, C]     the image (a random resized crop when `data.crop` says so;
                                  `config.augment` then runs on device, as for every image run)
  tokens, attention_mask int32 [b, L]   `[CLS] caption [SEP]` of one of the image's captions,
                                  drawn per step (the caption at floor(u * count))
  label int32 [b]                 when `config.data.label_key` is set (the online probe)

An evaluation batch holds (M = `config.data.eval_captions`):
  image uint8 [bs, H, W, C], label int32 [bs] (when labelled), mask bool [bs]
  caption_tokens, caption_attention_mask int32 [bs, M, L]   the first M captions of each image
  caption_mask bool [bs, M]       False where an image has fewer than M captions, and on the
                                  padding rows

Images are never flipped: a caption may say "left" or "right" (CLIP's only augmentation is a
random crop, Radford et al. 2021, Sec. 2.5). The run's tokenizer is learned on the training
split's captions and kept in the workdir (`text_pipeline.tokenizer_in_workdir`).
"""
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tokenizers import Tokenizer

from ssl_jax.data import image_pipeline, stream, text_pipeline
from ssl_jax.data.inputs import DatasetInfo
from ssl_jax.errors import UserError


def _keys(config: Any) -> tuple[str, str, str, str | None]:
  data = config.data
  return (data.get("image_key", "image"), data.get("caption_key", "captions"),
          data.get("caption_text_key", "text"), data.get("label_key"))


def _checked_builder(config: Any) -> tfds.core.DatasetBuilder:
  """The dataset's builder, its features and the pipeline's settings checked (UserErrors)."""
  builder, data = stream.load_builder(config), config.data
  image_key, caption_key, text_key, label_key = _keys(config)
  for key in (image_key, caption_key) + ((label_key,) if label_key else ()):
    stream.dataset_feature(builder, key)
  captions = builder.info.features[caption_key]
  if text_key not in getattr(captions, "feature", {}):
    raise UserError(f"dataset '{builder.name}' feature '{caption_key}' is not a sequence of "
                    f"dicts with a '{text_key}' text (config.data.caption_text_key)")
  if data.get("flip", False):
    raise UserError("config.data.flip must be False for image–caption pairs: a caption may "
                    "name the left or right of the image")
  if data.max_length < 3 or data.eval_captions < 1:
    raise UserError(f"config.data.max_length ({data.max_length}) must be >= 3 ([CLS] word "
                    f"[SEP]) and eval_captions ({data.eval_captions}) >= 1")
  return builder


def dataset_info(config: Any) -> DatasetInfo:
  """Sizes, classes and their names, and the training image's shape."""
  builder = _checked_builder(config)
  label_key = _keys(config)[3]
  return DatasetInfo(
      *stream.sizes_and_classes(builder, config.data),
      input_shape=image_pipeline.view_shape(builder, config.data, config.data.crop, "crop"),
      class_names=stream.class_names(builder, label_key))


def run_tokenizer(config: Any, workdir: str, create: bool) -> Tokenizer:
  """The run's tokenizer (`workdir/tokenizer.json`), learned when `create` and absent from
  the captions of the first `config.tokenizer.train_texts` training images, in file order."""
  _, caption_key, text_key, _ = _keys(config)

  def training_texts() -> list[str]:
    ds = stream.open_split(stream.load_builder(config), config.data.train_split,
                             decoders=tfds.decode.PartialDecoding({caption_key: True}))
    return [text.decode("utf-8")
            for example in ds.take(config.tokenizer.train_texts).as_numpy_iterator()
            for text in example[caption_key][text_key]]
  return text_pipeline.tokenizer_in_workdir(config, workdir, create, training_texts)


def _decoders(config: Any, decode_images: bool) -> tfds.decode.PartialDecoding:
  image_key, caption_key, _, label_key = _keys(config)
  keys = [image_key, caption_key] + ([label_key] if label_key else [])
  return tfds.decode.PartialDecoding(
      {key: True for key in keys},
      decoders={} if decode_images else {image_key: tfds.decode.SkipDecoding()})


def _decoded(raw: np.ndarray) -> list[str]:
  return [text.decode("utf-8") for text in raw.reshape(-1)]


def train_batches(config: Any, tokenizer: Tokenizer, *, start_step: int, process_index: int,
                  process_count: int) -> Iterator[dict[str, np.ndarray]]:
  """An endless iterator over this process's image–caption batches from step `start_step` on.

  Epoch e of process p reads the process's shard in an order seeded by (seed, p, e); the
  caption choice and the crop of the example at position i come from row i of stateless draws
  seeded the same way, so resuming at step S reproduces the uninterrupted stream.
  """
  builder, data = _checked_builder(config), config.data
  image_key, caption_key, text_key, label_key = _keys(config)
  part = stream.training_shard(config, builder, start_step, process_index, process_count)
  shape = image_pipeline.view_shape(builder, data, data.crop, "crop")
  cached = image_pipeline.fits_in_memory(builder, image_key, part.shard_size)
  decode = image_pipeline.image_decoder(builder, image_key)
  epoch_order = stream.epoch_order_fn(builder, part.shard, part.shard_size,
                                        _decoders(config, cached), cached, data.shuffle_buffer)
  ds = stream.seeded_epochs(epoch_order, part, start_step, stream.UniformDraws(3))

  def pair(example: dict[str, Any], draws: tf.Tensor) -> dict[str, tf.Tensor]:
    """One image (decoded unless cached, cropped) and the caption draws[0] picks."""
    image = example[image_key] if cached else decode(example[image_key])
    if data.crop == "random_resized":
      crop_seed = tf.cast(draws[1:] * 2.0**31, tf.int64)
      image = image_pipeline.random_resized_crop(image, crop_seed, data.image_size, data.crop_scale,
                                           data.crop_ratio)
    captions = example[caption_key][text_key]
    count = tf.shape(captions)[0]
    choice = tf.minimum(tf.cast(draws[0] * tf.cast(count, tf.float32), tf.int32),
                        tf.maximum(count - 1, 0))
    out = {"image": tf.ensure_shape(image, shape),
           "caption": tf.concat([captions, [""]], axis=0)[choice]}  # "" if it has none
    if label_key:
      out["label"] = tf.cast(example[label_key], tf.int32)
    return out

  ds = ds.map(pair, num_parallel_calls=tf.data.AUTOTUNE).batch(part.batch, drop_remainder=True)
  for examples in ds.prefetch(data.prefetch).as_numpy_iterator():
    rows = text_pipeline.encode_texts(tokenizer, _decoded(examples["caption"]), None,
                                      data.max_length)
    out = {"views": examples["image"][:, None], "tokens": rows["tokens"],
           "attention_mask": rows["attention_mask"]}
    if label_key:
      out["label"] = examples["label"]
    yield out


def eval_batches(config: Any, tokenizer: Tokenizer, split: str, *, batch_size: int,
                 process_index: int = 0, process_count: int = 1
                 ) -> Iterator[dict[str, np.ndarray]]:
  """This process's share of `split`, once, in order: images (centre-cropped when
  `data.eval_crop` says so), labels when the dataset has them, and the first
  `data.eval_captions` captions of each image as token rows. Every process yields as many
  batches as the largest shard."""
  builder, data = _checked_builder(config), config.data
  image_key, caption_key, text_key, label_key = _keys(config)
  shard, num_batches = stream.eval_shard(builder, split, batch_size, process_index,
                                           process_count)
  shape = image_pipeline.view_shape(builder, data, data.eval_crop, "eval_crop")
  decode = image_pipeline.image_decoder(builder, image_key)
  per_image = data.eval_captions

  def preprocess(example: dict[str, Any]) -> dict[str, tf.Tensor]:
    image = decode(example[image_key])
    if data.eval_crop == "center":
      image = image_pipeline.resize_and_center_crop(image, data.eval_resize, data.image_size)
    captions = example[caption_key][text_key][:per_image]
    count = tf.shape(captions)[0]
    out = {"image": tf.ensure_shape(image, shape),
           "captions": tf.ensure_shape(
               tf.concat([captions, tf.fill([per_image - count], "")], axis=0), [per_image]),
           "caption_mask": tf.range(per_image) < count, "mask": True}
    if label_key:
      out["label"] = tf.cast(example[label_key], tf.int32)
    return out

  ds = stream.open_split(builder, shard, decoders=_decoders(config, decode_images=False))
  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  for examples in stream.padded_batches(ds, num_batches, batch_size, data.prefetch):
    rows = text_pipeline.encode_texts(tokenizer, _decoded(examples.pop("captions")), None,
                                      data.max_length)
    length = data.max_length
    examples["caption_tokens"] = rows["tokens"].reshape(batch_size, per_image, length)
    examples["caption_attention_mask"] = rows["attention_mask"].reshape(
        batch_size, per_image, length)
    yield examples
