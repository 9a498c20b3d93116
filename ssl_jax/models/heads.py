"""Projection and prediction heads (MLPs) that sit on top of an encoder.

SimCLR (Chen et al. 2020, Sec. 2.1 and B.9) shows that the contrastive loss works much better
on a non-linear projection g(h) than on h itself, and that h (before g) is the better
representation downstream; the same MLP shape serves as BYOL/SimSiam predictor.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class MLPHead(nn.Module):
  """`num_layers` dense layers; hidden ones are Dense -> BatchNorm -> ReLU.

  `output_norm` adds a BatchNorm (no scale/bias) after the last layer, as in SimCLR v2's and
  SimSiam's projectors.
  """
  hidden_dim: int = 2048
  output_dim: int = 128
  num_layers: int = 2
  output_norm: bool = False
  dtype: Any = "float32"

  @nn.compact
  def __call__(self, x, train: bool = False):
    dtype = jnp.dtype(self.dtype)
    for _ in range(self.num_layers - 1):
      x = nn.Dense(self.hidden_dim, use_bias=False, dtype=dtype)(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=dtype)(x)
      x = nn.relu(x)
    x = nn.Dense(self.output_dim, dtype=dtype)(x)
    if self.output_norm:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, use_scale=False,
                       use_bias=False, dtype=dtype)(x)
    return x.astype(jnp.float32)
