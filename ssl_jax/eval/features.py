"""Frozen features for downstream probes: the checkpoint, the untrained encoder, raw pixels.

Extraction runs a jitted feature function over the mesh (eval batch sharded on `data`) and
gathers the features of every process, dropping the padding rows of the last batch. Images
are normalised exactly as training normalised its views before they reach `represent`.
"""
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from ssl_jax import parallel
from ssl_jax.data import augment

FeatureFn = Callable[[jax.Array], jax.Array]


def representation_fn(represent: Callable[..., jax.Array], params: Any, extra: Any,
                      config) -> FeatureFn:
  """uint8 images -> `represent(params, extra, normalised images)`."""
  return lambda images: represent(params, extra, augment.normalize_images(images, config))


def raw_pixels_fn(images: jax.Array) -> jax.Array:
  """Flattened pixels in [0, 1]: the baseline a representation must beat."""
  return images.reshape(images.shape[0], -1).astype(jnp.float32) / 255.0


def extract(feature_fn: FeatureFn, batches: Iterator[dict[str, np.ndarray]],
            mesh: jax.sharding.Mesh) -> tuple[np.ndarray, np.ndarray]:
  """Features [n, dim] float32 and labels [n] of every real (mask=True) example, in order."""
  compiled = jax.jit(feature_fn)
  features, labels = [], []
  for batch in batches:
    batch = parallel.global_batch(batch, mesh)
    gathered = multihost_utils.process_allgather(
        {"features": compiled(batch["image"]), "label": batch["label"], "mask": batch["mask"]},
        tiled=True)
    keep = np.asarray(gathered["mask"], bool)
    features.append(np.asarray(gathered["features"], np.float32)[keep])
    labels.append(np.asarray(gathered["label"])[keep])
  return np.concatenate(features), np.concatenate(labels)
