"""The head of a context-free network (Noroozi & Favaro 2016, Sec. 3.1, Fig. 3).

A jigsaw puzzle's tiles go through the encoder one at a time (a siamese network whose branches
share weights), so no feature before this head sees more than one tile. Here every tile's
features pass through the same fully connected layer (the paper's fc6; VISSL's ResNet-50
recipe uses 2048 -> 1000 with BatchNorm and ReLU), the tiles' outputs are concatenated in puzzle
order, and an MLP (fc7, fc8) classifies which permutation shuffled the tiles.
"""
import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from ssl_jax.models import policy
from ssl_jax.models.heads import MLPHead


class ContextFreeHead(nn.Module):
  """[batch, tiles, features] -> logits [batch, num_classes] over the permutation set.

  Per tile: Dense(tile_dim) -> BatchNorm -> ReLU, shared by all tiles (its BatchNorm statistics
  span batch and tiles); then the concatenation [batch, tiles * tile_dim] goes through an
  `MLPHead` of `num_layers` layers (hidden width `hidden_dim`; one layer is linear).
  """
  tile_dim: int
  num_classes: int
  hidden_dim: int = 4096
  num_layers: int = 2
  dtype: Any = dataclasses.field(default_factory=policy.compute_dtype)

  @nn.compact
  def __call__(self, tile_features, train: bool = False):
    dtype = jnp.dtype(self.dtype)
    x = nn.Dense(self.tile_dim, use_bias=False, dtype=dtype)(tile_features)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=dtype)(x))
    x = x.reshape(x.shape[0], -1)
    return MLPHead(self.hidden_dim, self.num_classes, self.num_layers, dtype=self.dtype)(
        x, train=train)
