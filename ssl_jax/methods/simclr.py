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

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.methods import Method, StepOutput
from ssl_jax.models import build_encoder
from ssl_jax.models.heads import MLPHead


class EncoderWithProjector(nn.Module):
  """h = f(x) and z = g(h)."""
  encoder: nn.Module
  projector: nn.Module

  def __call__(self, x, train: bool = False):
    h = self.encoder(x, train=train)
    return h, self.projector(h, train=train)


def _merge_views(views: jax.Array) -> jax.Array:
  """[B, V, H, W, C] -> [V * B, H, W, C], view-major, so view v is rows v*B .. (v+1)*B."""
  return jnp.swapaxes(views, 0, 1).reshape((-1,) + views.shape[2:])


def build(config) -> Method:
  network = EncoderWithProjector(build_encoder(config.encoder), MLPHead(**config.projector))
  temperature = float(config.simclr.temperature)
  if temperature <= 0:
    raise ValueError(f"simclr.temperature must be positive, got {temperature}")

  def init(rng: jax.Array, batch: dict[str, jax.Array]) -> tuple[Any, Any]:
    variables = network.init(rng, _merge_views(batch["views"][:, :2]), train=False)
    return variables["params"], {"batch_stats": variables["batch_stats"]}

  def loss(params, extra, batch, rng, step):
    del rng, step  # augmentation happened on device before the loss; SimCLR needs no more.
    views = batch["views"]
    if views.shape[1] != 2:
      raise ValueError(f"SimCLR takes 2 views per image, got {views.shape[1]}")
    n = views.shape[0]
    (h, z), new_state = network.apply(
        {"params": params, "batch_stats": extra["batch_stats"]}, _merge_views(views),
        train=True, mutable=["batch_stats"])
    value = losses.nt_xent(z[:n], z[n:], temperature)
    logits, labels = losses.nt_xent_logits(z[:n], z[n:], temperature)  # CSE'd by XLA
    metrics = {"contrastive_accuracy": losses.top1_accuracy(logits, labels)}
    return value, StepOutput({"batch_stats": new_state["batch_stats"]}, metrics, h[:n])

  def represent(params, extra, images):
    h, _ = network.apply({"params": params, "batch_stats": extra["batch_stats"]}, images,
                         train=False)
    return h

  return Method(init=init, loss=loss, represent=represent)
