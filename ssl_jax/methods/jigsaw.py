"""Jigsaw puzzles (Noroozi & Favaro 2016, "Unsupervised Learning of Visual Representations by
Solving Jigsaw Puzzles").

A puzzle (Sec. 3): the view is resized on device to a square region of `grid_size * cell_size`
px and divided into a grid of cells (3x3 in the paper); from every cell a tile of `tile_size` px
is cut at a random offset, so neighbouring tiles are separated by a random gap and continuous
edges cannot give the arrangement away (the paper: a 225 px region, 75 px cells, 64 px tiles;
VISSL's ResNet-50 recipe: 255 px, 85 px cells). The tiles are shuffled by one permutation drawn
uniformly from a fixed set of `num_permutations`, and the network is trained with softmax
cross-entropy to say which one it was. With `normalize_tiles` each tile is standardised on its
own (per channel, zero mean and unit std) so that low-level statistics do not reveal where a
tile came from (Sec. 3.3).

The network is a context-free network (Sec. 3.1): the encoder f runs on every tile separately
(shared weights, no context across tiles) and `ContextFreeHead` combines the tiles' features
in puzzle order to classify the permutation. Position i of a shuffled puzzle shows tile
`permutation[i]` of the row-major grid, so applying the inverse permutation restores it.

The permutation set (Sec. 3.2, Algorithm 1) is chosen greedily from all (grid_size^2)!
orderings: start from one drawn with `permutation_seed`, then repeatedly add the candidate
farthest in Hamming distance from the set chosen so far. `permutation_selection="average"` is
the paper's criterion (largest sum of distances to the chosen set, D-bar = 1^T D; also VISSL's
"max_avg" files); "minimum" adds the candidate whose smallest distance to the set is largest,
which keeps every pair of permutations at least that far apart. Ties go to the first candidate
in lexicographic order, so the set is a pure function of its settings (cached in memory).

The representation is f on the whole image, resized to the same region, so that content has the
scale the tiles showed it (the encoder's global pooling takes the larger input). The tile pass
uses batch statistics; the BatchNorm running averages that `represent` uses come from a pass of
the whole images in the same step (its features also feed the online probe), so they describe
what `represent` sees.

Config (`config.jigsaw`): grid_size, cell_size, tile_size, num_permutations, permutation_seed,
permutation_selection, normalize_tiles; `config.head` (tile_dim, hidden_dim, num_layers) gives
the `ContextFreeHead`.
"""
import functools
import itertools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax import losses
from ssl_jax.methods import (Method, StepOutput, check_choice, check_num_views, check_number,
                             check_options)
from ssl_jax.models import apply_in_eval_mode, apply_in_train_mode, build_encoder, init_variables
from ssl_jax.models.context_free import ContextFreeHead

SELECTIONS = ("average", "minimum")
_GRID_SIZES = (2, 3)  # 16! orderings of a 4x4 grid are too many to enumerate
_TILE_NORM_EPS = 1e-5


@functools.cache
def _orderings(num_tiles: int) -> np.ndarray:
  """All num_tiles! orderings in lexicographic order, position-major [num_tiles, num_tiles!]
  int8, so the distance to one permutation is num_tiles contiguous comparisons."""
  orderings = np.array(list(itertools.permutations(range(num_tiles))), np.int8).T.copy()
  orderings.flags.writeable = False
  return orderings


@functools.lru_cache(maxsize=8)
def permutation_set(num_tiles: int, num_permutations: int, seed: int,
                    selection: str = "average") -> np.ndarray:
  """The greedy maximal-Hamming-distance permutation set, int32 [num_permutations, num_tiles].

  Noroozi & Favaro 2016, Algorithm 1: the first permutation is drawn uniformly (with `seed`)
  from all num_tiles! orderings; each further one is the remaining candidate with the largest
  sum (`selection="average"`) or the largest minimum (`"minimum"`) of Hamming distances to the
  permutations chosen so far. Read-only, so the cached array cannot be changed by a caller.
  """
  check_choice("config.jigsaw.permutation_selection", selection, SELECTIONS)
  total = math.factorial(num_tiles)
  check_number("config.jigsaw.num_permutations", num_permutations, minimum=2, maximum=total,
               integer=True)  # of the num_tiles! orderings
  columns = _orderings(num_tiles)
  chosen = [int(np.random.default_rng(seed).integers(total))]
  if selection == "average":
    score, taken = np.zeros(total, np.int32), np.iinfo(np.int32).min // 2
  else:
    score, taken = np.full(total, num_tiles, np.int32), -1
  for _ in range(num_permutations - 1):
    newest = columns[:, chosen[-1]]
    distance = np.full(total, num_tiles, np.int32)
    for position in range(num_tiles):
      distance -= columns[position] == newest[position]
    if selection == "average":
      score += distance
    else:
      np.minimum(score, distance, out=score)
    score[chosen[-1]] = taken  # a chosen permutation is never chosen again
    chosen.append(int(np.argmax(score)))
  permutations = columns.T[chosen].astype(np.int32)
  permutations.flags.writeable = False
  return permutations


def cut_tiles(region: jax.Array, grid_size: int, tile_size: int,
              offsets: jax.Array) -> jax.Array:
  """[B, G*c, G*c, C] -> tiles [B, G*G, t, t, C], the grid's cells in row-major order.

  Tile j of image b is the t x t window at `offsets[b, j]` = (row, column) inside cell j.
  """
  batch, side, _, channels = region.shape
  cell = side // grid_size
  cells = region.reshape(batch, grid_size, cell, grid_size, cell, channels)
  cells = cells.transpose(0, 1, 3, 2, 4, 5).reshape(batch, grid_size**2, cell, cell, channels)

  def window(image, offset):
    return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0),
                                 (tile_size, tile_size, channels))

  return jax.vmap(jax.vmap(window))(cells, offsets)


def shuffle_tiles(tiles: jax.Array, permutations: jax.Array) -> jax.Array:
  """Position i of puzzle b shows tile `permutations[b, i]`: [B, T, ...] -> [B, T, ...]."""
  index = permutations.reshape(permutations.shape + (1,) * (tiles.ndim - 2))
  return jnp.take_along_axis(tiles, index, axis=1)


def normalize_tiles(tiles: jax.Array) -> jax.Array:
  """Each tile standardised per channel over its own pixels: [B, T, t, t, C] (Sec. 3.3)."""
  mean = jnp.mean(tiles, axis=(2, 3), keepdims=True)
  variance = jnp.var(tiles, axis=(2, 3), keepdims=True)
  return (tiles - mean) * jax.lax.rsqrt(variance + _TILE_NORM_EPS)


class Puzzles(NamedTuple):
  """A batch of shuffled puzzles: `tiles` [B, T, t, t, C], `labels` [B] (indices into the
  permutation set), `offsets` [B, T, 2] (each tile's window inside its cell)."""
  tiles: jax.Array
  labels: jax.Array
  offsets: jax.Array


def make_puzzles(rng: jax.Array, region: jax.Array, permutations: jax.Array, grid_size: int,
                 tile_size: int) -> Puzzles:
  """Cuts every region into jittered tiles and shuffles them by a random member of
  `permutations` [N, T]; both draws are per image, from `rng`."""
  batch, side = region.shape[:2]
  label_rng, offset_rng = jax.random.split(rng)
  labels = jax.random.randint(label_rng, (batch,), 0, permutations.shape[0])
  jitter = side // grid_size - tile_size
  offsets = jax.random.randint(offset_rng, (batch, grid_size**2, 2), 0, jitter + 1)
  tiles = shuffle_tiles(cut_tiles(region, grid_size, tile_size, offsets), permutations[labels])
  return Puzzles(tiles, labels, offsets)


def _check_settings(config: Any) -> None:
  """The settings `permutation_set` does not check itself (it checks the number of
  permutations and the selection rule when `build` calls it, before any network is built)."""
  settings = config.jigsaw
  # The permutation set is chosen from all orderings of the tiles: 16! are too many.
  check_choice("config.jigsaw.grid_size", settings.grid_size, _GRID_SIZES)
  check_number("config.jigsaw.cell_size", settings.cell_size, minimum=1, integer=True)
  check_number("config.jigsaw.tile_size (at most config.jigsaw.cell_size)", settings.tile_size,
               minimum=1, maximum=settings.cell_size, integer=True)
  check_number("config.jigsaw.permutation_seed", settings.permutation_seed, minimum=0,
               integer=True)
  check_choice("config.jigsaw.normalize_tiles", settings.normalize_tiles, (True, False))
  head = config.head
  check_options("config.head", head, ContextFreeHead, fixed=("num_classes",))
  for name in ("tile_dim", "hidden_dim", "num_layers"):
    if name in head:
      check_number(f"config.head.{name}", head[name], minimum=1, integer=True)


def build(config, length) -> Method:
  check_num_views(config, 1, "Jigsaw")
  del length  # No schedule besides the optimizer's.
  _check_settings(config)
  settings = config.jigsaw
  grid_size, tile_size = settings.grid_size, settings.tile_size
  region_side = grid_size * settings.cell_size
  permutations = jnp.asarray(permutation_set(
      grid_size**2, settings.num_permutations, settings.permutation_seed,
      settings.permutation_selection))
  encoder = build_encoder(config.encoder)
  head = ContextFreeHead(num_classes=settings.num_permutations, **config.head)

  def to_region(images: jax.Array) -> jax.Array:
    """Normalised images [B, H, W, C] resized (bilinear) to the puzzle region."""
    if images.shape[1:3] == (region_side, region_side):
      return images
    shape = (images.shape[0], region_side, region_side, images.shape[-1])
    return jax.image.resize(images, shape, method="linear")

  def init(rng: jax.Array, batch: dict[str, jax.Array]) -> tuple[Any, Any]:
    encoder_rng, head_rng = jax.random.split(rng)
    region = to_region(batch["views"][:, 0])
    encoder_params, encoder_stats = init_variables(encoder, encoder_rng, region)
    features = apply_in_eval_mode(encoder, encoder_params, encoder_stats, region)
    tile_features = jnp.repeat(features[:, None], grid_size**2, axis=1)
    head_params, head_stats = init_variables(head, head_rng, tile_features)
    return ({"encoder": encoder_params, "head": head_params},
            {"batch_stats": {"encoder": encoder_stats, "head": head_stats}})

  def loss(params, extra, batch, rng, step):
    del step
    puzzle_rng, dropout_rng = jax.random.split(rng)
    stats = extra["batch_stats"]
    region = to_region(batch["views"][:, 0])
    puzzles = make_puzzles(puzzle_rng, region, permutations, grid_size, tile_size)
    tiles = normalize_tiles(puzzles.tiles) if settings.normalize_tiles else puzzles.tiles
    num_images, num_tiles = tiles.shape[:2]
    # Tile statistics normalise the tile pass only; the running averages follow whole images.
    tile_features, _ = apply_in_train_mode(
        encoder, params["encoder"], stats["encoder"],
        tiles.reshape((num_images * num_tiles,) + tiles.shape[2:]), rng=dropout_rng)
    logits, head_stats = apply_in_train_mode(
        head, params["head"], stats["head"], tile_features.reshape(num_images, num_tiles, -1))
    features, encoder_stats = apply_in_train_mode(encoder, params["encoder"], stats["encoder"],
                                                  region)
    value = jnp.mean(losses.softmax_cross_entropy(logits, puzzles.labels))
    metrics = {"permutation_accuracy": losses.top1_accuracy(logits, puzzles.labels)}
    new_extra = {"batch_stats": {"encoder": encoder_stats, "head": head_stats}}
    return value, StepOutput(new_extra, metrics, features)

  def represent(params, extra, images):
    return apply_in_eval_mode(encoder, params["encoder"], extra["batch_stats"]["encoder"],
                              to_region(images))

  return Method(init=init, loss=loss, represent=represent,
                coupling="its context-free head normalises by the batch's statistics (BatchNorm)")
