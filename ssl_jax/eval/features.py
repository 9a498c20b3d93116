"""Frozen features for downstream probes: a feature function run over a split's batches.

Extraction runs a jitted feature function (an evaluation batch -> [b, d] features; the
evaluators build it from a method's `represent` and the modality's `eval_inputs` and
`normalize`, or from the modality's raw baseline) over the mesh, eval batch sharded on `data`,
and gathers the features of every process, dropping the padding rows of the last batch.
"""
from typing import Any, Callable, Iterable, Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from ssl_jax import parallel

FeatureFn = Callable[[dict[str, jax.Array]], jax.Array]


def progress(items: Iterable, description: str, unit: str = "batch") -> Iterable:
  """A progress bar on an interactive terminal (process 0 only); plain iteration in logs."""
  return tqdm(items, desc=description, unit=unit, leave=False,
              disable=None if jax.process_index() == 0 else True)


def extract(feature_fn: FeatureFn, batches: Iterator[dict[str, np.ndarray]],
            mesh: jax.sharding.Mesh, description: str = "features"
            ) -> tuple[np.ndarray, np.ndarray]:
  """Features [n, dim] float32 and labels [n] of every real (mask=True) example, in order;
  `feature_fn` takes the whole (global) evaluation batch."""
  compiled = jax.jit(feature_fn)
  features, labels = [], []
  for batch in progress(batches, description):
    batch = parallel.global_batch(batch, mesh)
    gathered = multihost_utils.process_allgather(
        {"features": compiled(batch), "label": batch["label"],
         "mask": batch["mask"]},
        tiled=True)
    keep = np.asarray(gathered["mask"], bool)
    features.append(np.asarray(gathered["features"], np.float32)[keep])
    labels.append(np.asarray(gathered["label"])[keep])
  return np.concatenate(features), np.concatenate(labels)


def pair_embeddings(first_fn: Callable[[Any], jax.Array], second_fn: Callable[[Any], jax.Array],
                    pairs_of: Callable[[dict], tuple[Any, Any, jax.Array]],
                    batches: Iterator[dict[str, np.ndarray]], mesh: jax.sharding.Mesh
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Embeddings of a split of paired examples (an image and its captions): `pairs_of(batch)`
  gives (first inputs [b, ...], second inputs [b * M, ...], which of each example's M second
  inputs are real [b, M]); returns first [N, d], second [K, d] and each second embedding's
  example index [K], padding dropped, in order."""
  def embed(batch):
    first, second, second_mask = pairs_of(batch)
    second_embeddings = second_fn(second)
    return {"first": first_fn(first),
            "second": second_embeddings.reshape(second_mask.shape + second_embeddings.shape[-1:]),
            "mask": batch["mask"], "second_mask": second_mask}
  compiled = jax.jit(embed)
  firsts, seconds, owners, seen = [], [], [], 0
  for batch in progress(batches, "paired embeddings"):
    gathered = multihost_utils.process_allgather(
        compiled(parallel.global_batch(batch, mesh)), tiled=True)
    keep = np.asarray(gathered["mask"], bool)
    firsts.append(np.asarray(gathered["first"], np.float32)[keep])
    second_mask = np.asarray(gathered["second_mask"], bool)[keep]
    rows, _ = np.nonzero(second_mask)
    seconds.append(np.asarray(gathered["second"], np.float32)[keep][second_mask])
    owners.append(rows + seen)
    seen += int(np.sum(keep))
  return np.concatenate(firsts), np.concatenate(seconds), np.concatenate(owners)


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
