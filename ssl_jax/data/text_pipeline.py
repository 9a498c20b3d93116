"""Host input pipeline for text: TFDS text datasets -> WordPiece token rows.

The text counterpart of `ssl_jax.data.image_pipeline` (images), with the same guarantees: a
training stream is a pure function of (config.seed, step) and resumes exactly; evaluation
reads each split once, in order, padded to whole batches with a `mask`. tf.data reads,
orders and batches the raw strings (an in-memory cache for small datasets, streamed files
otherwise); the run's tokenizer (`ssl_jax.data.tokenizer`, trained once on the training split
and saved in the workdir as `tokenizer.json`) turns each batch into rows on the host.

A training batch holds (`config.data.max_length` = L):
  tokens int32 [b, L]          [CLS] text [SEP] [PAD]..., or [CLS] A [SEP] B [SEP] [PAD]...
  attention_mask int32 [b, L]  1 on real tokens, 0 on padding
  segment_ids int32 [b, L]     0 on [CLS], A and its [SEP]; 1 on B and its [SEP]; 0 on padding
  next_sentence int32 [b]      1 when B is the true continuation of A (sentence pairs only)
  label int32 [b]              when `config.data.label_key` is set (labelled datasets)

Sentence pairs (`config.data.sentence_pairs`, BERT's next-sentence prediction, Devlin et al.
2019, sec. 3.1 Task #2): each text is cut at a random sentence boundary (at a random word
when it is one sentence) into A and its continuation B; with probability 1/2, B is replaced
by the continuation of another text of the batch (label 0). A keeps its end and B its
beginning when the pair is longer than L, so the two always meet at the cut. BERT cut pairs
from a document's consecutive sentences; here a dataset's text (a `python_docs` paragraph, an
`lm1b` sentence, a `wikipedia` article, an `imdb_reviews` review) is the document.

A single text longer than L - 2 tokens is cut to a window at a random offset during training
(every part of a long article gets read over the epochs) and to its beginning in evaluation.
"""
from collections.abc import Callable, Iterator
import os
import re
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tokenizers import Tokenizer

from ssl_jax.data import stream
from ssl_jax.data import tokenizer as tokenizer_lib
from ssl_jax.data.inputs import DatasetInfo
from ssl_jax.errors import UserError

TOKENIZER_FILE = "tokenizer.json"
# Training splits with at most this many texts are read once and kept in host memory.
_MAX_CACHED_TEXTS = 2_000_000
# A sentence ends at . ! or ? followed by white space and a capital, digit, quote or bracket.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


def _text_key(config: Any) -> str:
  return config.data.get("text_key", "text")


def dataset_info(config: Any) -> DatasetInfo:
  """Sizes, classes and the row shape of the configured text dataset."""
  builder = stream.load_builder(config)
  data = config.data
  if data.max_length < 4:
    raise UserError(f"config.data.max_length must be >= 4 ([CLS] A [SEP] B [SEP]), got "
                    f"{data.max_length}")
  stream.dataset_feature(builder, _text_key(config))  # a UserError naming a missing feature
  return DatasetInfo(*stream.sizes_and_classes(builder, data), input_shape=(data.max_length,))


def _texts(ds: tf.data.Dataset, text_key: str, limit: int) -> list[str]:
  return [ex[text_key].decode("utf-8") for ex in ds.take(limit).as_numpy_iterator()]


def run_tokenizer(config: Any, workdir: str, create: bool) -> Tokenizer:
  """The run's tokenizer: `workdir/tokenizer.json`, learned first when `create` and absent
  from the first `config.tokenizer.train_texts` texts of the training split in file order."""
  def training_texts() -> list[str]:
    text_key = _text_key(config)
    ds = stream.open_split(stream.load_builder(config), config.data.train_split,
                             decoders=tfds.decode.PartialDecoding({text_key: True}))
    return _texts(ds, text_key, config.tokenizer.train_texts)
  return tokenizer_in_workdir(config, workdir, create, training_texts)


def tokenizer_in_workdir(config: Any, workdir: str, create: bool,
                         training_texts: Callable[[], list[str]]) -> Tokenizer:
  """`workdir/tokenizer.json`, or, when `create` and absent, one learned with
  `config.tokenizer`'s settings on `training_texts()` (a deterministic list, so every process
  of a run, and a rerun, learns the same vocabulary); process 0 writes it, atomically.
  Evaluation and inference (`create=False`) only load it."""
  import jax  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, TOKENIZER_FILE)
  published = config.tokenizer.get("published_folder")  # a run from a published model
  if os.path.exists(path):
    try:
      return tokenizer_lib.load(path, fixed_special_ids=not published)
    except ValueError as e:
      raise UserError(str(e)) from None
  if not create:
    raise UserError(f"no tokenizer in '{workdir}' ({TOKENIZER_FILE}); was this run trained?")
  settings = config.tokenizer
  try:
    if published:  # the model's own, kept with the run
      tokenizer = tokenizer_lib.load(os.path.join(published, TOKENIZER_FILE),
                                     fixed_special_ids=False)
    else:
      tokenizer = tokenizer_lib.train_tokenizer(training_texts(), settings.vocab_size,
                                                settings.lowercase, settings.min_frequency)
  except ValueError as e:
    raise UserError(f"training the tokenizer on '{config.dataset}': {e}") from None
  if jax.process_index() == 0:
    tokenizer_lib.save(tokenizer, path + ".tmp")
    os.replace(path + ".tmp", path)
  return tokenizer


def _split_at_sentence(text: str, draw: float) -> tuple[str, str]:
  """(A, B): `text` cut at the sentence boundary chosen by `draw` in [0, 1) (at a word when
  there is one sentence; B is empty for a one-word text)."""
  pieces = _SENTENCE_END.split(text)
  if len(pieces) < 2:
    pieces = text.split()
  if len(pieces) < 2:
    return text, ""
  cut = 1 + int(draw * (len(pieces) - 1))
  return " ".join(pieces[:cut]), " ".join(pieces[cut:])


def _fit_pair(first: list[int], second: list[int], budget: int) -> tuple[list[int], list[int]]:
  """Keeps A's end and B's beginning within `budget` tokens: each keeps at least half the
  budget, or all of itself when shorter, and the shorter one's spare room goes to the other."""
  keep_second = min(len(second), max(budget - len(first), budget // 2))
  keep_first = min(len(first), budget - keep_second)
  return first[len(first) - keep_first:], second[:keep_second]


def encode_pairs(tokenizer: Tokenizer, texts: list[str], cut_draws: np.ndarray,
                 swap: np.ndarray, max_length: int,
                 specials: tokenizer_lib.SpecialIds = tokenizer_lib.SpecialIds()
                 ) -> dict[str, np.ndarray]:
  """Sentence-pair rows for next-sentence prediction (see the module docstring).

  Text i is cut at `cut_draws[i]`; where `swap[i]`, its B is the continuation of text
  (i + 1) mod b instead, and next_sentence is 0.
  """
  halves = [_split_at_sentence(text, draw) for text, draw in zip(texts, cut_draws)]
  ids = tokenizer_lib.token_ids(tokenizer, [a for a, _ in halves] + [b for _, b in halves])
  firsts, seconds = ids[:len(texts)], ids[len(texts):]
  tokens = np.full((len(texts), max_length), specials.pad, np.int32)
  segments = np.zeros_like(tokens)
  mask = np.zeros_like(tokens)
  for i, first in enumerate(firsts):
    second = seconds[(i + 1) % len(texts)] if swap[i] else seconds[i]
    first, second = _fit_pair(first, second, max_length - 3)
    row = [specials.cls, *first, specials.sep, *second, specials.sep]
    tokens[i, :len(row)] = row
    mask[i, :len(row)] = 1
    segments[i, len(first) + 2:len(row)] = 1
  return {"tokens": tokens, "attention_mask": mask, "segment_ids": segments,
          "next_sentence": (~swap).astype(np.int32)}


def encode_texts(tokenizer: Tokenizer, texts: list[str], offsets: np.ndarray | None,
                 max_length: int, specials: tokenizer_lib.SpecialIds = tokenizer_lib.SpecialIds()
                 ) -> dict[str, np.ndarray]:
  """Single-text rows [CLS] window [SEP]: the window starts at `offsets[i]` (a fraction of
  the room a long text leaves) or at the beginning when `offsets` is None. `specials` are
  the vocabulary's [CLS], [SEP] and [PAD] (`tokenizer.special_ids(config)`)."""
  budget = max_length - 2
  tokens = np.full((len(texts), max_length), specials.pad, np.int32)
  mask = np.zeros_like(tokens)
  for i, ids in enumerate(tokenizer_lib.token_ids(tokenizer, texts)):
    start = 0 if offsets is None else int(offsets[i] * (max(len(ids) - budget, 0) + 1))
    row = [specials.cls, *ids[start:start + budget], specials.sep]
    tokens[i, :len(row)] = row
    mask[i, :len(row)] = 1
  return {"tokens": tokens, "attention_mask": mask, "segment_ids": np.zeros_like(tokens),
          "next_sentence": np.zeros((len(texts),), np.int32)}


def _decoded(raw: np.ndarray) -> list[str]:
  return [t.decode("utf-8") for t in raw]


def train_batches(config: Any, tokenizer: Tokenizer, *, start_step: int, process_index: int,
                  process_count: int) -> Iterator[dict[str, np.ndarray]]:
  """An endless iterator over this process's token batches from step `start_step` on.

  Epoch e of process p reads the process's shard in an order seeded by (seed, p, e) and keeps
  `steps_per_epoch * b` texts; the pair cut, the pair swap and the window offset of the text
  at position i come from row i of stateless draws seeded by (seed, p, e), so resuming at
  step S (skipping (S mod steps_per_epoch) * b texts) reproduces the uninterrupted stream.
  """
  builder, data = stream.load_builder(config), config.data
  specials = tokenizer_lib.special_ids(config)
  part = stream.training_shard(config, builder, start_step, process_index, process_count)
  text_key, label_key = _text_key(config), stream.label_key(builder, data.get("label_key"))
  keys = [text_key] + ([label_key] if label_key else [])
  for key in keys:
    stream.dataset_feature(builder, key)
  decoders = tfds.decode.PartialDecoding({key: True for key in keys})
  epoch_order = stream.epoch_order_fn(builder, part.shard, part.shard_size, decoders,
                                        part.shard_size <= _MAX_CACHED_TEXTS,
                                        data.shuffle_buffer)
  batch = part.batch
  ds = stream.seeded_epochs(epoch_order, part, start_step, stream.UniformDraws(3))
  ds = ds.batch(batch, drop_remainder=True)
  for examples, draws in ds.prefetch(data.prefetch).as_numpy_iterator():
    texts = _decoded(examples[text_key])
    if data.sentence_pairs:
      out = encode_pairs(tokenizer, texts, draws[:, 0], draws[:, 1] < 0.5, data.max_length,
                         specials)
    else:
      out = encode_texts(tokenizer, texts, draws[:, 2], data.max_length, specials)
    if label_key:
      out["label"] = examples[label_key].astype(np.int32)
    yield out


def eval_batches(config: Any, tokenizer: Tokenizer, split: str, *, batch_size: int,
                 process_index: int = 0, process_count: int = 1
                 ) -> Iterator[dict[str, np.ndarray]]:
  """This process's share of `split`, once, in order: single-text rows from each text's
  beginning, with "label" (when the dataset has one) and "mask" (False on the padding rows
  that fill the last batch). Every process yields as many batches as the largest shard."""
  builder = stream.load_builder(config)
  data, specials = config.data, tokenizer_lib.special_ids(config)
  shard, num_batches = stream.eval_shard(builder, split, batch_size, process_index,
                                           process_count)
  text_key, label_key = _text_key(config), stream.label_key(builder, data.get("label_key"))
  keys = [text_key] + ([label_key] if label_key else [])
  for key in keys:
    stream.dataset_feature(builder, key)
  ds = stream.open_split(builder, shard,
                           decoders=tfds.decode.PartialDecoding({key: True for key in keys}))
  ds = ds.batch(batch_size).prefetch(data.prefetch)
  yielded = 0
  for examples in ds.as_numpy_iterator():
    texts = _decoded(examples[text_key])
    count = len(texts)
    out = encode_texts(tokenizer, texts + [""] * (batch_size - count), None, data.max_length,
                       specials)
    for key in ("tokens", "attention_mask"):  # padding rows are all [PAD], with no real token
      out[key][count:] = 0
    if label_key:
      out["label"] = np.zeros((batch_size,), np.int32)
      out["label"][:count] = examples[label_key]
    out["mask"] = np.arange(batch_size) < count
    yielded += 1
    yield out
  for _ in range(num_batches - yielded):  # lockstep padding for the smaller shards
    out = {key: np.zeros_like(value) for key, value in
           encode_texts(tokenizer, [""] * batch_size, None, data.max_length,
                        specials).items()}
    if label_key:
      out["label"] = np.zeros((batch_size,), np.int32)
    out["mask"] = np.zeros((batch_size,), bool)
    yield out
