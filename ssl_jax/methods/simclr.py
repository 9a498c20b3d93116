"""SimCLR (Chen, Kornblith, Norouzi, Hinton 2020, "A Simple Framework for Contrastive
Learning of Visual Representations").

Two augmented views of each image go through the same encoder f and projection MLP g; the
NT-Xent loss (Eq. 1, `losses.nt_xent`) pulls the two projections of an image together and
pushes them away from the other 2N - 2 projections of the global batch. Both views go through
the network as one batch of 2N, so BatchNorm statistics span both views across all devices
(the paper's global BN, Sec. B.9 / Appendix). The representation is h = f(x), before g.

Config (`config.simclr`): `temperature`; `config.encoder` and `config.projector` give the
networks.
"""
from typing import Any

import jax

from ssl_jax import losses
from ssl_jax.errors import UserError
from ssl_jax.methods import Method, StepOutput, check_num_views, merge_views
from ssl_jax.models import apply_in_eval_mode, apply_in_train_mode, build_encoder, init_variables
from ssl_jax.models.heads import MLPHead, ProjectedEncoder


def build(config, length) -> Method:
  check_num_views(config, 2, "SimCLR")
  del length  # SimCLR has no schedule besides the optimizer's.
  network = ProjectedEncoder(build_encoder(config.encoder), MLPHead(**config.projector))
  temperature = float(config.simclr.temperature)
  if temperature <= 0:
    raise UserError(f"simclr.temperature must be positive, got {temperature}")

  def init(rng: jax.Array, batch: dict[str, jax.Array]) -> tuple[Any, Any]:
    params, batch_stats = init_variables(network, rng, merge_views(batch["views"][:, :2]))
    return params, {"batch_stats": batch_stats}

  def loss(params, extra, batch, rng, step):
    del step
    views = batch["views"]
    n = views.shape[0]
    (h, z), batch_stats = apply_in_train_mode(network, params, extra["batch_stats"],
                                              merge_views(views), rng=rng)
    value = losses.nt_xent(z[:n], z[n:], temperature)
    logits, labels = losses.nt_xent_logits(z[:n], z[n:], temperature)  # CSE'd by XLA
    metrics = {"contrastive_accuracy": losses.top1_accuracy(logits, labels),
               "embedding_std": losses.normalized_std(z[:n])}
    return value, StepOutput({"batch_stats": batch_stats}, metrics, h[:n])

  def represent(params, extra, images):
    h, _ = apply_in_eval_mode(network, params, extra["batch_stats"], images)
    return h

  return Method(init=init, loss=loss, represent=represent)
