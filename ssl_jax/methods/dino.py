"""DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers").

Self-distillation without labels: a student network (encoder + `DINOHead`) is trained to
match, by cross-entropy, the output distribution of a teacher that is an exponential moving
average of the student (momentum from base_momentum, 0.996, to 1 along a cosine; Sec. 3.1).
Multi-crop: the teacher sees only the 2 global views, the student sees every view, global
and local (lower resolution, `batch["local_views"]` from the input pipeline), and each
(teacher view, other student view) pair contributes (Alg. 1, `losses.dino_cross_entropy`).
Collapse is avoided by centering and sharpening the teacher's output:
P_t = softmax((g_t(x) - c) / tau_t), with the centre c <- m c + (1 - m) mean_batch g_t(x)
over the global batch (Eq. 4) and a low teacher temperature tau_t, warmed up linearly from
`warmup_teacher_temperature` (Sec. 4 / Appendix). The last layer of the head is frozen for
the first `freeze_last_layer_*` (gradients zeroed, as the authors' code does for stability).

The representation is the teacher's encoder output (the paper evaluates the teacher), or the
student's with `represent_teacher=False`.

Config (`config.dino`): student_temperature, teacher_temperature,
warmup_teacher_temperature, teacher_temperature_warmup_steps/_epochs, center_momentum,
base_momentum, final_momentum, freeze_last_layer_steps/_epochs, represent_teacher;
`config.head` is the `DINOHead`.
"""
import functools
from typing import Any

import jax
import jax.numpy as jnp

from ssl_jax import config_lib, ema, losses
from ssl_jax.methods import (Method, StepOutput, check_choice, check_num_views, check_number,
                             check_options, merge_views, split_views)
from ssl_jax.models import apply_in_eval_mode, apply_in_train_mode, build_encoder, init_variables
from ssl_jax.models.heads import DINOHead, ProjectedEncoder

_LAST_LAYER = ("last_layer_direction", "last_layer_gain")


def teacher_temperature(step: jax.Array, warmup_steps: int, start: float, end: float
                        ) -> jax.Array:
  """Linear from `start` to `end` over `warmup_steps`, then constant (DINO's warm-up)."""
  if warmup_steps <= 0:
    return jnp.asarray(end, jnp.float32)
  progress = jnp.clip(jnp.asarray(step, jnp.float32) / warmup_steps, 0.0, 1.0)
  return start + (end - start) * progress


def update_center(center: jax.Array, teacher_logits: jax.Array, momentum: float) -> jax.Array:
  """c <- m c + (1 - m) mean over the (global) batch of the teacher's outputs (Eq. 4)."""
  return momentum * center + (1.0 - momentum) * jnp.mean(
      teacher_logits.astype(jnp.float32), axis=0)


def check_head(key: str, head) -> None:
  """UserErrors for a config section that configures a `DINOHead` (`config.head`, iBOT's
  `config.patch_head`)."""
  check_options(key, head, DINOHead)
  for name in ("hidden_dim", "bottleneck_dim", "output_dim", "num_layers"):
    if name in head:
      check_number(f"{key}.{name}", head[name], minimum=1, integer=True)
  for name in ("use_bn", "norm_last_layer"):
    if name in head:
      check_choice(f"{key}.{name}", head[name], (True, False))


def evaluated_weights(settings, params, extra) -> tuple[Any, Any]:
  """(params, batch_stats) the representation reads: the teacher's (the paper evaluates the
  teacher) or, with `represent_teacher=False`, the student's."""
  if settings.represent_teacher:
    return extra["teacher"]["params"], extra["teacher"]["batch_stats"]
  return params, extra["batch_stats"]


def _check_settings(config) -> None:
  settings = config.dino
  for name in ("student_temperature", "teacher_temperature", "warmup_teacher_temperature"):
    check_number(f"config.dino.{name}", settings[name], above=0)
  for name in ("center_momentum", "base_momentum", "final_momentum"):
    check_number(f"config.dino.{name}", settings[name], minimum=0, maximum=1)
  for prefix in ("teacher_temperature_warmup", "freeze_last_layer"):
    for unit, integer in (("steps", True), ("epochs", False)):
      if settings.get(f"{prefix}_{unit}") is not None:
        check_number(f"config.dino.{prefix}_{unit}", settings[f"{prefix}_{unit}"], minimum=0,
                     integer=integer)
  check_choice("config.dino.represent_teacher", settings.represent_teacher, (True, False))
  check_head("config.head", config.head)


def build(config, length) -> Method:
  check_num_views(config, 2, "DINO")
  _check_settings(config)
  settings = config.dino
  network = ProjectedEncoder(build_encoder(config.encoder), DINOHead(**config.head))
  teacher = ema.MomentumTarget(  # no drop path in the teacher, as DINO's
      ProjectedEncoder(build_encoder(config.encoder, deterministic=True),
                       DINOHead(**config.head)),
      length.schedule_steps, settings.base_momentum, settings.final_momentum)
  warmup_steps = config_lib.to_steps(settings, "teacher_temperature_warmup",
                                     length.steps_per_epoch, default=0)
  freeze_steps = config_lib.to_steps(settings, "freeze_last_layer", length.steps_per_epoch,
                                     default=0)

  def init(rng: jax.Array, batch: dict[str, jax.Array]) -> tuple[Any, Any]:
    params, batch_stats = init_variables(network, rng, merge_views(batch["views"][:, :2]))
    extra = {"batch_stats": batch_stats,
             "teacher": teacher.init(params, batch_stats),
             "center": jnp.zeros((config.head.output_dim,), jnp.float32)}
    return params, extra

  def freeze_last_layer(params, step):
    head = dict(params["projector"])
    frozen = step < freeze_steps
    for name in _LAST_LAYER:
      if name in head:
        head[name] = jnp.where(frozen, jax.lax.stop_gradient(head[name]), head[name])
    return {**params, "projector": head}

  def loss(params, extra, batch, rng, step):
    global_rng, local_rng = jax.random.split(rng)
    views = batch["views"]
    if freeze_steps:
      params = freeze_last_layer(params, step)
    (h, student_global), stats = apply_in_train_mode(network, params, extra["batch_stats"],
                                                      merge_views(views), rng=global_rng)
    student = split_views(student_global, 2)
    if "local_views" in batch:  # another resolution: a second forward pass
      local = batch["local_views"]
      (_, student_local), stats = apply_in_train_mode(network, params, stats, merge_views(local),
                                                      rng=local_rng)
      student += split_views(student_local, local.shape[1])
    (_, teacher_logits), teacher_state = teacher.apply(extra["teacher"], merge_views(views))
    temperature = teacher_temperature(step, warmup_steps, settings.warmup_teacher_temperature,
                                      settings.teacher_temperature)
    probs = jax.nn.softmax((teacher_logits - extra["center"]) / temperature, axis=-1)
    value = losses.dino_cross_entropy(student, split_views(probs, 2),
                                      settings.student_temperature)
    new_extra = {
        "batch_stats": stats,
        "teacher": teacher_state,
        "center": update_center(extra["center"], teacher_logits, settings.center_momentum)}
    entropy = -jnp.mean(jnp.sum(probs * jnp.log(jnp.maximum(probs, 1e-12)), axis=-1))
    metrics = {"momentum": teacher.momentum(step), "teacher_temperature": temperature,
               "teacher_entropy": entropy,
               # Both of DINO's collapses (uniform, one prototype) make P_t constant: std 0.
               "embedding_std": losses.normalized_std(split_views(probs, 2)[0])}
    return value, StepOutput(new_extra, metrics, split_views(h, 2)[0])

  def update_extra(params, extra, step):
    return {**extra, "teacher": teacher.update(extra["teacher"], params, step)}

  def represent(params, extra, images, dense=False):
    h, _ = apply_in_eval_mode(network, *evaluated_weights(settings, params, extra), images,
                              dense=dense)
    return h

  return Method(init=init, loss=loss, represent=represent, update_extra=update_extra,
                represent_dense=functools.partial(represent, dense=True),
                coupling="the teacher's centre is a mean over the batch")
