"""Exponential moving averages of parameters: momentum encoders and teachers.

MoCo's key encoder (He et al. 2020, Eq. 2), BYOL's target network (Grill et al. 2020, Sec. 3.1)
and DINO's teacher (Caron et al. 2021, Sec. 3.1) are all xi <- m xi + (1 - m) theta, applied
after each optimizer step, with m following BYOL's cosine schedule from a base value to 1.
"""
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from ssl_jax.models import apply_in_train_mode


def cosine_momentum(step: jax.Array, total_steps: int, base: float, final: float = 1.0
                    ) -> jax.Array:
  """m(k) = final - (final - base) (cos(pi k / K) + 1) / 2 (BYOL Sec. 3.2 with final = 1).

  m(0) = base, m(K) = final; base == final gives a constant momentum (MoCo v2's 0.999).
  """
  progress = jnp.clip(jnp.asarray(step, jnp.float32) / max(int(total_steps), 1), 0.0, 1.0)
  return final - (final - base) * (jnp.cos(jnp.pi * progress) + 1.0) / 2.0


def ema_update(target: Any, online: Any, momentum: jax.Array) -> Any:
  """target <- momentum * target + (1 - momentum) * online, leaf by leaf."""
  return jax.tree.map(lambda t, o: momentum * t + (1.0 - momentum) * o, target, online)


@dataclasses.dataclass(frozen=True)
class MomentumTarget:
  """A network whose weights follow an online network's by EMA, and what a method does with it.

  Its state is {"params", "batch_stats"}, kept in the method's `extra`: it starts as a copy of
  the online network (BYOL Sec. 3.1; MoCo's key encoder and DINO's teacher likewise), is
  applied in train mode (BatchNorm on the batch, as all three papers' target forward passes)
  with its output behind a stop-gradient, and after every optimizer step moves towards the
  online weights with `cosine_momentum(step)` from `base` to `final` over `schedule_steps`.
  `network` should be built deterministic (no dropout or drop path, as DINO's teacher).
  """
  network: Any
  schedule_steps: int
  base: float
  final: float = 1.0

  def momentum(self, step: jax.Array) -> jax.Array:
    return cosine_momentum(step, self.schedule_steps, self.base, self.final)

  def init(self, online_params: Any, online_batch_stats: Any) -> dict[str, Any]:
    return {"params": online_params, "batch_stats": online_batch_stats}

  def apply(self, state: dict[str, Any], *args, **kwargs) -> tuple[Any, dict[str, Any]]:
    """(stop_gradient(output), state with the updated BatchNorm statistics); `kwargs` go to
    the network's `apply` (`method=` runs a part of it)."""
    out, batch_stats = apply_in_train_mode(self.network, state["params"], state["batch_stats"],
                                           *args, **kwargs)
    return jax.lax.stop_gradient(out), {"params": state["params"], "batch_stats": batch_stats}

  def update(self, state: dict[str, Any], online_params: Any, step: jax.Array
             ) -> dict[str, Any]:
    """The EMA step xi <- m xi + (1 - m) theta, run after the optimizer's."""
    return {**state, "params": ema_update(state["params"], online_params, self.momentum(step))}
