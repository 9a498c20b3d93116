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
from ssl_jax import losses
from ssl_jax.methods import (Method, check_mlp_head, check_num_views, check_number,
                             shared_network_method)
from ssl_jax.models import build_encoder
from ssl_jax.models.heads import MLPHead, ProjectedEncoder


def build(config, length) -> Method:
  check_num_views(config, 2, "SimCLR")
  del length  # SimCLR has no schedule besides the optimizer's.
  check_number("config.simclr.temperature", config.simclr.temperature, above=0)
  check_mlp_head("config.projector", config.projector)
  temperature = float(config.simclr.temperature)

  def objective(z1, z2):
    logits, labels = losses.nt_xent_logits(z1, z2, temperature)  # CSE'd by XLA with the loss
    metrics = {"contrastive_accuracy": losses.top1_accuracy(logits, labels),
               "embedding_std": losses.normalized_std(z1)}
    return losses.nt_xent(z1, z2, temperature), metrics

  network = ProjectedEncoder(build_encoder(config.encoder), MLPHead(**config.projector))
  return shared_network_method(
      network, objective, coupling="the other images of the batch are its negatives")
