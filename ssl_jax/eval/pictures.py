"""PNG grids of what a method draws (`Method.pictures`): reconstructions, samples, colours.

A method returns named grids [rows, columns, H, W, C] in its normalised image space; this
module maps them back to pixels with the config's normalisation (`config.augment` mean and
std), tiles each grid with one-pixel gutters, enlarges small images by pixel repetition so an
8x8 digit stays readable, and writes `<name>.png`. Only process 0 writes; the grids are
computed on one local device from the first test images of that process's shard.
"""
import os
from typing import Any, Callable

import jax
import numpy as np
from PIL import Image

_MIN_CELL_PIXELS = 64  # images smaller than this are enlarged by an integer factor
_GUTTER = 1


def to_pixels(grid: np.ndarray, mean: Any, std: Any) -> np.ndarray:
  """Normalised [..., C] -> uint8 in [0, 255]: x * std + mean, clipped to [0, 1]."""
  pixels = np.asarray(grid, np.float32) * np.asarray(std, np.float32) + np.asarray(
      mean, np.float32)
  return np.round(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)


def tile(grid: np.ndarray) -> np.ndarray:
  """uint8 [rows, cols, H, W, C] -> one image [rows*(s*H+g)-g, cols*(s*W+g)-g, C] on white,
  each cell enlarged s times (s = ceil(64 / H) for small images)."""
  if grid.ndim != 5:
    raise ValueError(f"a picture grid must be [rows, columns, H, W, C], got {grid.shape}")
  rows, cols, height, width, channels = grid.shape
  scale = max(1, -(-_MIN_CELL_PIXELS // max(height, width)))
  cells = grid.repeat(scale, axis=2).repeat(scale, axis=3)
  cell_h, cell_w = height * scale, width * scale
  canvas = np.full((rows * (cell_h + _GUTTER) - _GUTTER, cols * (cell_w + _GUTTER) - _GUTTER,
                    channels), 255, np.uint8)
  for r in range(rows):
    for c in range(cols):
      top, left = r * (cell_h + _GUTTER), c * (cell_w + _GUTTER)
      canvas[top:top + cell_h, left:left + cell_w] = cells[r, c]
  return canvas


def save_png(image: np.ndarray, path: str) -> None:
  """Writes uint8 [H, W, 1 or 3] as a PNG (atomically: a temporary file, then a rename)."""
  pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
  tmp = path + ".tmp"
  pil.save(tmp, format="PNG")
  os.replace(tmp, path)


def draw(pictures_fn: Callable[..., dict[str, jax.Array]], params: Any, extra: Any,
         inputs: Any, normalize: Callable[[Any], Any], config, seed: int
         ) -> dict[str, np.ndarray]:
  """{name: uint8 tiled image} of `pictures_fn(params, extra, normalize(inputs), rng)`;
  `inputs` are uint8 images, or the inputs dict of other modalities (video frames), as the
  evaluation batches hold them (`Modality.eval_inputs`), and `normalize` the modality's."""
  device = jax.local_devices()[0]
  params, extra = jax.device_put(jax.device_get((params, extra)), device)
  normalised = normalize(jax.device_put(inputs, device))
  grids = jax.jit(pictures_fn)(params, extra, normalised, jax.random.PRNGKey(seed))
  return {name: tile(to_pixels(jax.device_get(grid), config.augment.mean, config.augment.std))
          for name, grid in grids.items()}


def write(pictures: dict[str, np.ndarray], out_dir: str) -> list[str]:
  """Saves each picture as `out_dir/<name>.png`; returns the file names, sorted."""
  os.makedirs(out_dir, exist_ok=True)
  names = []
  for name, image in sorted(pictures.items()):
    save_png(image, os.path.join(out_dir, f"{name}.png"))
    names.append(f"{name}.png")
  return names
