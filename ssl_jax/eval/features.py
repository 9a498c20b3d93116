"""Frozen features for downstream probes: the checkpoint, the untrained encoder, raw inputs.

Extraction runs a jitted feature function over the mesh (eval batch sharded on `data`) and
gathers the features of every process, dropping the padding rows of the last batch. Images
are normalised exactly as training normalised its views before they reach `represent`; text
inputs (token ids and masks) reach it as they are.
"""
from typing import Any, Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from ssl_jax import parallel
from ssl_jax.data import augment
from ssl_jax.data.tokenizer import FIRST_WORD_ID
from ssl_jax.train import represent_inputs

FeatureFn = Callable[[jax.Array], jax.Array]


def model_inputs(batch: dict[str, Any]):
  """What a feature function reads from an evaluation batch: the uint8 images, or the text
  or sequence inputs as a dict (`train.represent_inputs`)."""
  if "image" in batch:
    return batch["image"]
  return represent_inputs(batch)


def representation_fn(represent: Callable[..., jax.Array], params: Any, extra: Any,
                      config) -> FeatureFn:
  """uint8 images -> `represent(params, extra, normalised images)`; text inputs are passed
  as they are."""
  return lambda inputs: represent(params, extra, normalised_inputs(inputs, config))


def normalised_inputs(inputs, config):
  """`model_inputs` as the method's functions take them: images normalised as training
  normalised its views, video frames scaled to [0, 1] as training scaled them, text and
  sequence inputs (already standardised by their pipeline) unchanged."""
  if isinstance(inputs, dict):
    if "frames" in inputs:
      return {**inputs, "frames": augment.unit_frames(inputs["frames"])}
    return inputs
  return augment.normalize_images(inputs, config)


def raw_pixels_fn(images: jax.Array) -> jax.Array:
  """Flattened pixels in [0, 1]: the baseline a representation must beat."""
  return images.reshape(images.shape[0], -1).astype(jnp.float32) / 255.0


def bag_of_words_fn(vocab_size: int) -> FeatureFn:
  """Text inputs -> L2-normalised log(1 + count) of each non-special token id [b, vocab].

  The text baseline a representation must beat, as raw pixels are for images: sublinear
  term frequencies (Salton & Buckley 1988) over the run's own WordPiece vocabulary, with
  [PAD] [UNK] [CLS] [SEP] [MASK] (ids below `FIRST_WORD_ID`) left out.
  """
  def features(inputs: dict[str, jax.Array]) -> jax.Array:
    tokens = inputs["tokens"]
    counted = (inputs["attention_mask"] > 0) & (tokens >= FIRST_WORD_ID)
    rows = jnp.broadcast_to(jnp.arange(tokens.shape[0])[:, None], tokens.shape)
    counts = jnp.zeros((tokens.shape[0], vocab_size), jnp.float32).at[rows, tokens].add(
        counted.astype(jnp.float32))
    weights = jnp.log1p(counts)
    return weights / jnp.maximum(jnp.linalg.norm(weights, axis=1, keepdims=True), 1e-12)
  return features


def raw_signal_fn(inputs: dict[str, jax.Array]) -> jax.Array:
  """The flattened standardised signal [b, T * C] (zeros after each recording's end): the
  baseline a sequence representation must beat."""
  signal = inputs["signal"]
  return signal.reshape(signal.shape[0], -1).astype(jnp.float32)


def raw_frames_fn(inputs: dict[str, jax.Array]) -> jax.Array:
  """The flattened frames in [0, 1] [b, T * H * W * C]: the video baseline."""
  return raw_pixels_fn(inputs["frames"])


def raw_features_fn(config) -> FeatureFn:
  """The `raw` baseline of the run's modality: pixels, a bag of words for text, the signal
  for sequences, the frames for videos."""
  modality = config.data.get("modality", "image")
  if modality == "text":
    return bag_of_words_fn(config.tokenizer.vocab_size)
  return {"video": raw_frames_fn, "sequence": raw_signal_fn}.get(modality, raw_pixels_fn)


def progress(items: Iterable, description: str, unit: str = "batch") -> Iterable:
  """A progress bar on an interactive terminal (process 0 only); plain iteration in logs."""
  return tqdm(items, desc=description, unit=unit, leave=False,
              disable=None if jax.process_index() == 0 else True)


def extract(feature_fn: FeatureFn, batches: Iterator[dict[str, np.ndarray]],
            mesh: jax.sharding.Mesh, description: str = "features"
            ) -> tuple[np.ndarray, np.ndarray]:
  """Features [n, dim] float32 and labels [n] of every real (mask=True) example, in order."""
  compiled = jax.jit(feature_fn)
  features, labels = [], []
  for batch in progress(batches, description):
    batch = parallel.global_batch(batch, mesh)
    gathered = multihost_utils.process_allgather(
        {"features": compiled(model_inputs(batch)), "label": batch["label"],
         "mask": batch["mask"]},
        tiled=True)
    keep = np.asarray(gathered["mask"], bool)
    features.append(np.asarray(gathered["features"], np.float32)[keep])
    labels.append(np.asarray(gathered["label"])[keep])
  return np.concatenate(features), np.concatenate(labels)


def pair_embeddings(image_fn: FeatureFn, text_fn: FeatureFn,
                    batches: Iterator[dict[str, np.ndarray]], mesh: jax.sharding.Mesh
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Embeddings of an image–caption split (`image_text_pipeline.eval_batches`): images
  [N, d], captions [M, d] and each caption's image index [M], padding dropped, in order."""
  def embed(batch):
    tokens = batch["caption_tokens"]
    captions = text_fn({"tokens": tokens.reshape(-1, tokens.shape[-1]),
                        "attention_mask": batch["caption_attention_mask"].reshape(
                            -1, tokens.shape[-1])})
    return {"images": image_fn(batch["image"]),
            "captions": captions.reshape(tokens.shape[:2] + captions.shape[-1:]),
            "mask": batch["mask"], "caption_mask": batch["caption_mask"]}
  compiled = jax.jit(embed)
  images, captions, owners, seen = [], [], [], 0
  for batch in progress(batches, "image and caption embeddings"):
    gathered = multihost_utils.process_allgather(
        compiled(parallel.global_batch(batch, mesh)), tiled=True)
    keep = np.asarray(gathered["mask"], bool)
    images.append(np.asarray(gathered["images"], np.float32)[keep])
    caption_mask = np.asarray(gathered["caption_mask"], bool)[keep]
    rows, _ = np.nonzero(caption_mask)
    captions.append(np.asarray(gathered["captions"], np.float32)[keep][caption_mask])
    owners.append(rows + seen)
    seen += int(np.sum(keep))
  return np.concatenate(images), np.concatenate(captions), np.concatenate(owners)


def gather_rows(batches: Iterator[dict[str, np.ndarray]], mesh: jax.sharding.Mesh,
                indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The uint8 images and labels at `indices` (positions in `extract`'s order), in that order.

  The split is streamed and only the chosen rows are kept, so a 1% subset of ImageNet holds
  1% of its images in host memory, never the whole split.
  """
  indices = np.asarray(indices)
  if len(np.unique(indices)) != len(indices):
    raise ValueError("gather_rows needs distinct indices")
  images, labels, seen = [], [], 0
  for batch in progress(batches, "labelled images"):
    gathered = multihost_utils.process_allgather(parallel.global_batch(batch, mesh), tiled=True)
    keep = np.asarray(gathered["mask"], bool)
    batch_images, batch_labels = np.asarray(gathered["image"])[keep], np.asarray(
        gathered["label"])[keep]
    positions = np.arange(seen, seen + len(batch_labels))
    chosen = np.isin(positions, indices)
    images.append(batch_images[chosen])
    labels.append(batch_labels[chosen])
    seen += len(batch_labels)
  if np.any(indices >= seen):
    raise ValueError(f"row {indices.max()} requested from a split of {seen} examples")
  # Rows arrive in split order; put them in the order of `indices`.
  order = np.argsort(np.argsort(indices))
  return np.concatenate(images)[order], np.concatenate(labels)[order]
