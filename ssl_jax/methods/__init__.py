"""Self-supervised objectives, one module each, found by name.

A method module `ssl_jax/methods/<name>.py` exposes `build(config) -> Method`; `config.method`
names it. The trainer and the evaluation script talk to every objective through the same
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

from ssl_jax.components import import_component


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


def build(config) -> Method:
  """Imports `ssl_jax.methods.<config.method>` and builds the method from the config."""
  return import_component("ssl_jax.methods", config.method, "method").build(config)
