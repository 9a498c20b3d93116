"""Barlow Twins (Zbontar, Jing, Misra, LeCun, Deny 2021, "Barlow Twins: Self-Supervised
Learning via Redundancy Reduction").

Both views go through the same encoder and projector; the loss (Eq. 1, `losses.barlow_twins`)
drives the cross-correlation matrix of the two views' batch-standardised embeddings towards
the identity: invariance on the diagonal, redundancy reduction (weighted by lambda) off it.
The correlation is computed over the global batch (inside the jit the matrix product spans
all devices, as the paper's all-reduce does). The representation is the encoder output.

Config (`config.barlow_twins`): `lambda_` (the off-diagonal weight, 0.0051 in the paper) and
`scale` (a constant factor on the loss, as solo-learn's `scale_loss`).
"""
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.methods import (Method, check_mlp_head, check_num_views, check_number,
                             shared_network_method)
from ssl_jax.models import build_encoder
from ssl_jax.models.heads import MLPHead, ProjectedEncoder


def build(config, length) -> Method:
  check_num_views(config, 2, "Barlow Twins")
  del length  # No schedule besides the optimizer's.
  settings = config.barlow_twins
  check_number("config.barlow_twins.lambda_", settings.lambda_, minimum=0)
  check_number("config.barlow_twins.scale", settings.scale, above=0)
  check_mlp_head("config.projector", config.projector)

  def objective(z1, z2):
    value, correlation = losses.barlow_twins(z1, z2, settings.lambda_)
    metrics = {"mean_diagonal_correlation": jnp.mean(jnp.diag(correlation)),
               "embedding_std": losses.normalized_std(z1)}
    return settings.scale * value, metrics

  network = ProjectedEncoder(build_encoder(config.encoder), MLPHead(**config.projector))
  return shared_network_method(
      network, objective, coupling="its cross-correlation matrix is a statistic of the batch")
