"""Image corruptions for the reconstruction objectives: jittable, per example, explicit rng.

A denoising autoencoder (Vincent et al. 2008, "Extracting and Composing Robust Features with
Denoising Autoencoders", Sec. 2.3; the noise types of Vincent et al. 2010, JMLR, Sec. 4.3)
reconstructs a clean image from a corrupted one; a Context Encoder (Pathak et al. 2016,
Sec. 3.3) fills in a hidden region. Both corrupt on the device, inside the loss, with the
step's rng, so every epoch sees fresh corruptions.

`pixel_noise` works on the [0, 1] pixel scale, where "forced to 0" and "salt and pepper"
(0 or 1) mean what the papers mean; `hidden_region_mask` returns where to hide.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.config_lib import check_choice, check_number
from ssl_jax.errors import UserError

NOISE_KINDS = ("none", "gaussian", "masking", "salt_and_pepper")
REGIONS = ("center", "random_blocks")


def check_noise(kind: str, level: float, section: str = "config.autoencoder") -> None:
  """A UserError for an unknown noise kind or a level outside its range; `section` names the
  config section whose `noise` and `noise_level` they are."""
  check_choice(f"{section}.noise", kind, NOISE_KINDS)
  if kind in ("masking", "salt_and_pepper"):
    check_number(f"{section}.noise_level (the fraction of corrupted pixels for '{kind}')",
                 level, minimum=0, maximum=1)
  elif kind == "gaussian":
    check_number(f"{section}.noise_level (the Gaussian noise std)", level, minimum=0)


def check_region(region: str, size: float, grid: int, section: str = "config.inpainting"
                 ) -> None:
  """A UserError for an unknown region, a hidden fraction outside (0, 1), a bad grid, or random
  blocks that would hide no block or every block; `section` names the config section whose
  `region`, `size` and `grid` they are."""
  check_choice(f"{section}.region", region, REGIONS)
  check_number(f"{section}.size (the hidden fraction of the image)", size, above=0, below=1)
  if region == "random_blocks":
    check_number(f"{section}.grid (blocks per image side)", grid, minimum=1, integer=True)
    hidden = round(size * grid * grid)
    if not 1 <= hidden < grid * grid:
      raise UserError(f"{section}.size {size} hides {hidden} of the {grid * grid} blocks of "
                      f"{section}.grid {grid}; it must hide at least one and not all")


def random_subset_mask(rng: jax.Array, batch: int, count: int, chosen: int) -> jax.Array:
  """bool [batch, count] with exactly `chosen` True entries per row, uniformly at random.

  The rank of a uniform score is a uniform random permutation; taking the ranks below
  `chosen` picks a uniform subset of that size.
  """
  scores = jax.random.uniform(rng, (batch, count))
  ranks = jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1)
  return ranks < chosen


def pixel_noise(rng: jax.Array, pixels: jax.Array, kind: str, level: float) -> jax.Array:
  """Corrupts images [B, H, W, C] on the [0, 1] scale with the noise `kind` at `level`.

  gaussian: x + level * N(0, I) on every element (Vincent et al. 2010, isotropic Gaussian).
  masking: exactly round(level * H * W) pixels per image, chosen at random, are set to 0 in
    every channel (Vincent et al. 2008, Sec. 2.3: "a fixed number nu d of components ...
    forced to 0"; here the components are pixels).
  salt_and_pepper: the same number of random pixels set to 0 or 1 by a fair coin (Vincent et
    al. 2010).
  none: the images unchanged.
  """
  if kind == "none":
    return pixels
  if kind == "gaussian":
    return pixels + level * jax.random.normal(rng, pixels.shape, pixels.dtype)
  batch, height, width, _ = pixels.shape
  subset_rng, coin_rng = jax.random.split(rng)
  hit = random_subset_mask(subset_rng, batch, height * width, round(level * height * width))
  hit = hit.reshape(batch, height, width, 1)
  if kind == "masking":
    return jnp.where(hit, 0.0, pixels)
  if kind == "salt_and_pepper":
    salt = jax.random.bernoulli(coin_rng, 0.5, (batch, height, width, 1))
    return jnp.where(hit, salt.astype(pixels.dtype), pixels)
  raise UserError(f"unknown noise '{kind}': use {', '.join(NOISE_KINDS)}")


def center_region_mask(height: int, width: int, size: float) -> np.ndarray:
  """bool [1, H, W, 1]: the centred block whose sides are sqrt(size) of the image's (rounded
  to pixels), so it covers `size` of the area: Pathak et al.'s central 64x64 of 128x128 is
  size 0.25."""
  side_fraction = math.sqrt(size)
  block_h, block_w = round(side_fraction * height), round(side_fraction * width)
  top, left = (height - block_h) // 2, (width - block_w) // 2
  mask = np.zeros((1, height, width, 1), bool)
  mask[:, top:top + block_h, left:left + block_w] = True
  return mask


def random_blocks_mask(rng: jax.Array, batch: int, height: int, width: int, size: float,
                       grid: int) -> jax.Array:
  """bool [B, H, W, 1]: the image is split into grid x grid blocks and round(size * grid^2)
  of them, chosen at random per image, are hidden (exactly `size` of the image when the grid
  divides it; Pathak et al.'s random blocks, Sec. 3.3, without their overlaps)."""
  cells = random_subset_mask(rng, batch, grid * grid, round(size * grid * grid))
  cells = cells.reshape(batch, grid, grid)
  rows = np.arange(height) * grid // height
  columns = np.arange(width) * grid // width
  return cells[:, rows][:, :, columns][..., None]


def hidden_region_mask(rng: jax.Array, batch: int, height: int, width: int, region: str,
                       size: float, grid: int) -> jax.Array:
  """bool [B, H, W, 1], True where the Context Encoder hides the image (`check_region`)."""
  if region == "center":
    return jnp.broadcast_to(center_region_mask(height, width, size), (batch, height, width, 1))
  if region == "random_blocks":
    return random_blocks_mask(rng, batch, height, width, size, grid)
  raise UserError(f"unknown inpainting region '{region}': use {', '.join(REGIONS)}")
