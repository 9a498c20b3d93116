"""Image–caption pairs (CLIP): images read as uint8 views and captions as token rows
(`ssl_jax.data.image_text_pipeline`), with the run's tokenizer learned on the captions.

A training batch holds what an image batch holds ("views", "label") and the caption rows
"tokens", "attention_mask" int32 [b, L]; an evaluation batch holds an image batch's "image",
"label", "mask" and the first M captions of each image as "caption_tokens",
"caption_attention_mask" [b, M, L] with "caption_mask" [b, M]. Images are what `represent`
and the probes read, as for plain images; the captions are the paired text of retrieval.
"""
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.data.inputs import Inputs
from ssl_jax.data.tokenizer import FIRST_WORD_ID
from ssl_jax.modalities import Batch
from ssl_jax.modalities.image import Image
from ssl_jax.modalities.text import text_rows


class ImageText(Image):
  """Images, each with captions."""

  paired_kind = "text"
  pipeline = "ssl_jax.data.image_text_pipeline"
  folder_builder = ""  # a folder of images has no captions
  uses_tokenizer = True

  def example_batch(self, config: Any, input_shape: tuple[int, ...], batch_size: int = 2
                    ) -> Batch:
    """The image batch's views, and each image's caption row [b, config.data.max_length]."""
    batch = super().example_batch(config, input_shape, batch_size)
    batch["tokens"] = jnp.zeros((batch_size, config.data.max_length), jnp.int32)
    batch["attention_mask"] = jnp.ones_like(batch["tokens"])
    return batch

  def paired_inputs(self, batch: Batch) -> tuple[jax.Array, dict[str, jax.Array], jax.Array]:
    tokens = batch["caption_tokens"]
    captions = {"tokens": tokens.reshape(-1, tokens.shape[-1]),
                "attention_mask": batch["caption_attention_mask"].reshape(-1,
                                                                          tokens.shape[-1])}
    return batch["image"], captions, batch["caption_mask"]

  def encode_texts(self, inputs: Inputs, texts: list[str]) -> Batch:
    rows = text_rows(inputs, texts)
    return {"tokens": rows["tokens"], "attention_mask": rows["attention_mask"]}

  def synthetic_batch(self, config: Any, input_shape: tuple[int, ...], batch_size: int,
                      rng: np.random.Generator) -> dict[str, np.ndarray]:
    batch = super().synthetic_batch(config, input_shape, batch_size, rng)
    length = config.data.max_length
    batch["tokens"] = rng.integers(FIRST_WORD_ID, config.tokenizer.vocab_size,
                                   (batch_size, length), np.int32)
    batch["attention_mask"] = np.ones_like(batch["tokens"])
    return batch


MODALITY = ImageText()
