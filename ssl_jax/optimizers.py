"""Optimizers and learning-rate schedules built from `config.optimizer`.

SimCLR and BYOL train with LARS (You et al. 2017): SGD with momentum whose per-layer step is
scaled by the trust ratio ||w|| / ||update||. Following SimCLR (Sec. B.1) and BYOL (App. C),
biases and BatchNorm parameters (every 1-D leaf) get neither weight decay nor the trust
ratio. The schedule is a linear warm-up followed by cosine decay (Loshchilov & Hutter 2017),
and the base rate scales with the global batch (`lr_scaling`: "linear" is lr * B / 256,
SimCLR's rule; "sqrt" is lr * sqrt(B), its small-batch rule; "none"). "adamw" decays the
weights apart from the Adam step (Loshchilov & Hutter 2019); "adam" adds the L2 penalty's
gradient wd * w before the Adam step, as Caffe's and PyTorch's Adam `weight_decay` do
(Colorization's recipe, Zhang et al. 2016).
"""
import math
from typing import Any

from absl import logging
import jax
import optax

from ssl_jax.config_lib import check_choice, check_number
from ssl_jax.errors import UserError


NAMES = ("lars", "adamw", "adam", "sgd")
LR_SCALINGS = ("linear", "sqrt", "none")


def check(optimizer_config) -> None:
  """One-line UserErrors for optimizer values no run can use: the name and learning-rate
  scaling, lr > 0, weight decay >= 0, momentum and Adam betas in [0, 1), a clipping norm >= 0
  and an end factor in [0, 1]."""
  section = "config.optimizer"
  check_choice(f"{section}.name", optimizer_config.name, NAMES)
  check_choice(f"{section}.lr_scaling", optimizer_config.lr_scaling, LR_SCALINGS)
  check_number(f"{section}.lr", optimizer_config.lr, above=0)
  check_number(f"{section}.weight_decay", optimizer_config.weight_decay, minimum=0)
  if optimizer_config.name in ("lars", "sgd"):
    check_number(f"{section}.momentum", optimizer_config.momentum, minimum=0, below=1)
  if optimizer_config.name == "lars":
    check_number(f"{section}.trust_coefficient", optimizer_config.trust_coefficient, above=0)
  if optimizer_config.name in ("adam", "adamw"):
    check_number(f"{section}.b1", optimizer_config.b1, minimum=0, below=1)
    check_number(f"{section}.b2", optimizer_config.b2, minimum=0, below=1)
  check_number(f"{section}.grad_clip_norm", optimizer_config.grad_clip_norm, minimum=0)
  check_number(f"{section}.end_lr_factor", optimizer_config.end_lr_factor, minimum=0,
               maximum=1)


def warn_if_warmup_outlasts(warmup_steps: int, total_steps: int) -> bool:
  """Logs one warning when the warm-up is longer than the run, and says whether it did.

  Not an error: a smoke run (`--config.total_steps=4`) of a recipe with a 10-epoch warm-up is
  a normal thing to launch; its learning rate just never reaches the peak."""
  if warmup_steps <= total_steps:
    return False
  logging.warning("the warm-up (%d steps, config.optimizer.warmup_*) is longer than the run "
                  "(%d steps): the learning rate never reaches its peak", warmup_steps,
                  total_steps)
  return True


def decay_mask(params: Any) -> Any:
  """True for leaves that get weight decay and the LARS trust ratio: kernels (ndim > 1)."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def peak_learning_rate(optimizer_config, batch_size: int) -> float:
  scaling = optimizer_config.lr_scaling
  if scaling == "linear":
    return optimizer_config.lr * batch_size / 256
  if scaling == "sqrt":
    return optimizer_config.lr * math.sqrt(batch_size)
  if scaling == "none":
    return optimizer_config.lr
  raise UserError(f"unknown optimizer.lr_scaling '{scaling}': use linear, sqrt or none")


def warmup_cosine(peak: float, warmup_steps: int, total_steps: int,
                  end_factor: float = 0.0) -> optax.Schedule:
  """Linear warm-up from 0 to `peak` over `warmup_steps`, then cosine decay to end_factor*peak."""
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup_steps,
      decay_steps=max(total_steps, warmup_steps + 1), end_value=peak * end_factor)


def build(optimizer_config, schedule: optax.Schedule) -> optax.GradientTransformation:
  """`optimizer_config.name` in {lars, adamw, adam, sgd}; decay on kernels only (`decay_mask`)."""
  name = optimizer_config.name
  wd = optimizer_config.weight_decay
  if name == "lars":
    tx = optax.lars(schedule, weight_decay=wd, weight_decay_mask=decay_mask,
                    trust_coefficient=optimizer_config.trust_coefficient,
                    trust_ratio_mask=decay_mask, momentum=optimizer_config.momentum)
  elif name == "adamw":
    tx = optax.adamw(schedule, b1=optimizer_config.b1, b2=optimizer_config.b2,
                     weight_decay=wd, mask=decay_mask)
  elif name == "adam":
    tx = optax.chain(optax.add_decayed_weights(wd, mask=decay_mask),
                     optax.adam(schedule, b1=optimizer_config.b1, b2=optimizer_config.b2))
  elif name == "sgd":
    tx = optax.chain(optax.add_decayed_weights(wd, mask=decay_mask),
                     optax.sgd(schedule, momentum=optimizer_config.momentum, nesterov=True))
  else:
    raise UserError(f"unknown optimizer '{name}': use lars, adamw, adam or sgd")
  if optimizer_config.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(optimizer_config.grad_clip_norm), tx)
  return tx
