"""Exponential moving averages of parameters: momentum encoders and teachers.

MoCo's key encoder (He et al. 2020, Eq. 2), BYOL's target network (Grill et al. 2020, Sec. 3.1)
and DINO's teacher (Caron et al. 2021, Sec. 3.1) are all xi <- m xi + (1 - m) theta, applied
after each optimizer step, with m following BYOL's cosine schedule from a base value to 1.
"""
from typing import Any

import jax
import jax.numpy as jnp


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
