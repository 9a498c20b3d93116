"""VICReg (Bardes, Ponce, LeCun 2022, "VICReg: Variance-Invariance-Covariance Regularization
for Self-Supervised Learning").

Both views go through the same encoder and expander (projector); the loss (Eq. 6) is
lambda s(Z, Z') + mu [v(Z) + v(Z')] + nu [c(Z) + c(Z')]: invariance (mean squared distance
between the views' embeddings), variance (a hinge keeping every dimension's std above gamma
over the global batch) and covariance (off-diagonal covariance squared, decorrelating the
dimensions); see `losses.vicreg_terms`. The representation is the encoder output.

Config (`config.vicreg`): invariance_weight (lambda, 25), variance_weight (mu, 25),
covariance_weight (nu, 1), gamma (1), eps (1e-4).
"""
from ssl_jax import losses
from ssl_jax.methods import (Method, check_mlp_head, check_num_views, check_number,
                             shared_network_method)
from ssl_jax.models import build_encoder
from ssl_jax.models.heads import MLPHead, ProjectedEncoder


def build(config, length) -> Method:
  check_num_views(config, 2, "VICReg")
  del length  # No schedule besides the optimizer's.
  settings = config.vicreg
  weights = {"invariance": settings.invariance_weight, "variance": settings.variance_weight,
             "covariance": settings.covariance_weight}
  for name, weight in weights.items():
    check_number(f"config.vicreg.{name}_weight", weight, minimum=0)
  # gamma: the std each dimension is held above; eps keeps sqrt(Var + eps) differentiable.
  check_number("config.vicreg.gamma", settings.gamma, above=0)
  check_number("config.vicreg.eps", settings.eps, above=0)
  check_mlp_head("config.projector", config.projector)

  def objective(z1, z2):
    terms = losses.vicreg_terms(z1, z2, gamma=settings.gamma, eps=settings.eps)
    value = sum(weights[name] * terms[name] for name in weights)
    return value, {**terms, "embedding_std": losses.normalized_std(z1)}

  network = ProjectedEncoder(build_encoder(config.encoder), MLPHead(**config.projector))
  return shared_network_method(
      network, objective,
      coupling="its variance and covariance terms are statistics of the batch")
