"""Self-supervised objectives, one module each, found by name.

A method module `ssl_jax/methods/<name>.py` exposes `build(config, length) -> Method`;
`config.method` names it, and `length` (`config_lib.TrainingLength`) gives the horizon of
schedules that follow training progress (EMA momentum, teacher temperature). The trainer and the evaluation script talk to every objective through the same
four functions, so neither ever branches on a method's name:

  init(rng, batch) -> (params, extra)
      trainable parameters, and everything else the method carries (BatchNorm statistics,
      an EMA target network, a queue, a centre).
  loss(params, extra, batch, rng, step) -> (loss, StepOutput)
      pure and jittable; `batch` holds device-augmented, normalised inputs.
  update_extra(params, extra, step) -> extra
      runs after the optimizer update (EMA targets and their momentum schedules).
  represent(params, extra, images) -> features
      the frozen representation used downstream (normalised images in, [batch, dim] out).
"""
import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from ssl_jax.components import import_component
from ssl_jax.errors import UserError


class StepOutput(NamedTuple):
  """What a method's loss returns besides the loss value.

  `features` is the representation of the first view in this step, computed in the same
  forward pass; the trainer fits its online linear probe on `stop_gradient(features)`.
  """
  extra: Any
  metrics: dict[str, jax.Array]
  features: jax.Array


@dataclasses.dataclass(frozen=True)
class Method:
  init: Callable[..., tuple[Any, Any]]
  loss: Callable[..., tuple[jax.Array, StepOutput]]
  represent: Callable[..., jax.Array]
  update_extra: Callable[..., Any] = lambda params, extra, step: extra


def merge_views(views: jax.Array) -> jax.Array:
  """[B, V, H, W, C] -> [V * B, H, W, C], view-major: view v is rows v*B .. (v+1)*B.

  All views go through a network as one batch, so its BatchNorm statistics span every view
  of the global batch (SimCLR's global BN, Chen et al. 2020, Sec. B.9).
  """
  return jnp.swapaxes(views, 0, 1).reshape((-1,) + views.shape[2:])


def split_views(x: jax.Array, num_views: int) -> list[jax.Array]:
  """Inverse of `merge_views` on a network's output: [V * B, ...] -> V arrays [B, ...]."""
  return jnp.split(x, num_views, axis=0)


def check_num_views(config, expected: int, method: str) -> None:
  """A UserError, at build time, when `config.data.num_views` is not what the method takes."""
  if config.data.num_views != expected:
    raise UserError(f"{method} takes {expected} views per image, but config.data.num_views "
                    f"is {config.data.num_views}")


def find(config):
  """The module `ssl_jax.methods.<config.method>` (a one-line UserError when there is none)."""
  return import_component("ssl_jax.methods", config.method, "method")


def build(config, length) -> Method:
  """Builds the method `config.method` for a run of `length` (a `TrainingLength`)."""
  return find(config).build(config, length)
