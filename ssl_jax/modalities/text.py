"""Text: TFDS texts read as WordPiece token rows (`ssl_jax.data.text_pipeline`) with the run's
tokenizer, learned on the training split and kept in the workdir.

A batch holds "tokens", "attention_mask", "segment_ids" int32 [b, L] and "next_sentence" [b]
(sentence pairs), plus "label" when labelled and "mask" in evaluation. `represent` reads the
three row arrays; the raw baseline is a bag of words over the run's vocabulary.
"""
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ssl_jax import losses
from ssl_jax.data.inputs import Inputs
from ssl_jax.data.tokenizer import FIRST_WORD_ID, special_ids
from ssl_jax.errors import UserError
from ssl_jax.modalities import Batch, FeatureFn, Modality

TEXT_INPUTS = ("tokens", "attention_mask", "segment_ids")  # what a text `represent` reads


def bag_of_words(vocab_size: int, excluded: tuple[int, ...] = tuple(range(FIRST_WORD_ID))
                 ) -> FeatureFn:
  """Text inputs -> L2-normalised log(1 + count) of each non-special token id [b, vocab].

  The text baseline a representation must beat, as raw pixels are for images: sublinear
  term frequencies (Salton & Buckley 1988) over the run's own vocabulary, with the special
  tokens (`excluded`: [PAD] [UNK] [CLS] [SEP] [MASK], ids below `FIRST_WORD_ID`, in the
  vocabularies learned here) left out.
  """
  excluded_ids = jnp.asarray(excluded, jnp.int32)

  def features(inputs: dict[str, jax.Array]) -> jax.Array:
    tokens = inputs["tokens"]
    counted = (inputs["attention_mask"] > 0) & ~jnp.isin(tokens, excluded_ids)
    rows = jnp.broadcast_to(jnp.arange(tokens.shape[0])[:, None], tokens.shape)
    counts = jnp.zeros((tokens.shape[0], vocab_size), jnp.float32).at[rows, tokens].add(
        counted.astype(jnp.float32))
    return losses.l2_normalize(jnp.log1p(counts), axis=1)
  return features


def text_rows(inputs: Inputs, texts: list[str]) -> Batch:
  """[CLS] text [SEP] rows of `texts` in the run's vocabulary, at `config.data.max_length`:
  {"tokens", "attention_mask", "segment_ids"} int32 [n, L]."""
  from ssl_jax.data import text_pipeline  # pylint: disable=g-import-not-at-top  (TF)
  rows = text_pipeline.encode_texts(inputs.tokenizer, texts, None, inputs.config.data.max_length,
                                    special_ids(inputs.config))
  return {key: rows[key] for key in TEXT_INPUTS}


class Text(Modality):
  """Token rows of one text, or of a sentence pair."""

  kind = "text"
  pipeline = "ssl_jax.data.text_pipeline"
  folder_builder = "ssl_jax.data.builders.text_folder"
  uses_tokenizer = True

  def example_batch(self, config: Any, input_shape: tuple[int, ...], batch_size: int = 2
                    ) -> Batch:
    """int32 rows [b, L] (`input_shape` = (L,)) and the next-sentence label [b]."""
    tokens = jnp.zeros((batch_size,) + tuple(input_shape), jnp.int32)
    return {"tokens": tokens, "attention_mask": jnp.ones_like(tokens), "segment_ids": tokens,
            "next_sentence": jnp.zeros((batch_size,), jnp.int32)}

  def represent_inputs(self, batch: Batch) -> dict[str, jax.Array]:
    return {key: batch[key] for key in TEXT_INPUTS}

  def eval_inputs(self, batch: Batch) -> dict[str, jax.Array]:
    return {key: batch[key] for key in TEXT_INPUTS}

  def raw_features(self, config: Any) -> FeatureFn:
    return bag_of_words(config.tokenizer.vocab_size, special_ids(config).excluded)

  def resolve_config(self, config: Any) -> Any:
    """With `config.init_from = "hf:NAME_OR_PATH"`, the published model decides what the run
    would otherwise learn or set: its tokenizer (`config.tokenizer.published_folder`, copied
    into the workdir), vocabulary size and special ids, and the transformer's shape and
    settings (`config.transformer`, keeping the config's dropout and dtype); the method
    loads its weights at step 0 (`Method.published_params`)."""
    source = config.get("init_from") or ""
    if not source:
      return config
    from ssl_jax import pretrained  # pylint: disable=g-import-not-at-top
    published = pretrained.describe(pretrained.published_name(source))
    if config.data.max_length > published.max_length:
      raise UserError(f"config.data.max_length {config.data.max_length} exceeds the "
                      f"{published.max_length} positions of {source}")
    resolved = config.copy_and_resolve_references()
    resolved.unlock()
    resolved.tokenizer.vocab_size = published.vocab_size
    resolved.tokenizer.published_folder = published.folder
    resolved.tokenizer.published_type = published.model_type
    resolved.tokenizer.special_ids = dataclasses.asdict(published.special_ids)
    kept = {key: config.transformer[key] for key in ("dropout", "dtype")
            if key in config.transformer}
    resolved.transformer = ml_collections.ConfigDict({**published.network_settings, **kept})
    if config.is_locked:
      resolved.lock()
    return resolved

  def encode_texts(self, inputs: Inputs, texts: list[str]) -> Batch:
    return text_rows(inputs, texts)

  def nominal_input_shape(self, config: Any, channels: int) -> tuple[int, ...]:
    del channels
    return (config.data.max_length,)

  def synthetic_batch(self, config: Any, input_shape: tuple[int, ...], batch_size: int,
                      rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Full rows of random word ids with two segments, and next-sentence labels."""
    length = input_shape[0]
    tokens = rng.integers(FIRST_WORD_ID, config.tokenizer.vocab_size, (batch_size, length),
                          np.int32)
    segments = np.broadcast_to(np.arange(length) >= length // 2, (batch_size, length))
    return {"tokens": tokens, "attention_mask": np.ones_like(tokens),
            "segment_ids": segments.astype(np.int32),
            "next_sentence": rng.integers(0, 2, (batch_size,), np.int32),
            "label": rng.integers(0, 10, (batch_size,), np.int32)}


MODALITY = Text()
