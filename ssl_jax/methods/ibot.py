"""iBOT (Zhou et al. 2022, "iBOT: Image BERT Pre-Training with Online Tokenizer") and the
DINOv2 recipe (Oquab et al. 2024, "DINOv2: Learning Robust Visual Features without
Supervision") as its options.

iBOT is DINO (`methods/dino.py`) plus masked image modelling with the teacher as the
tokenizer. A ViT student and its EMA teacher (momentum base_momentum -> 1 along a cosine)
both put the CLS token and every patch token through a `DINOHead`
(`models.heads.MaskedDistillationNetwork`):
  - CLS self-distillation, DINO's loss: the teacher sees the 2 global views, the student
    every view (local crops at another resolution from `batch["local_views"]`), and each
    (teacher view, other student view) pair contributes (`losses.dino_cross_entropy`; Eq. 1,
    L_[CLS]).
  - Masked patch self-distillation: each global view is shown to the student with some of
    its patches replaced by a learned mask token (`vit.Encoder(mask_token=True)`), to the
    teacher whole; at each masked patch the student predicts the teacher's distribution for
    that patch of the same view (`losses.masked_patch_cross_entropy`; Eq. 2, L_MIM).
  Loss = cls_weight * L_[CLS] + patch_weight * L_MIM (lambda_1 = lambda_2 = 1 in the paper).
  Masks are BEiT's blockwise masks (`block_mask`): with probability `mask_probability`
  (0.5) a view gets a masking ratio drawn uniformly from `mask_ratio_range` (0.1-0.5), and
  rectangles of log-uniform aspect ratio in `mask_aspect_ratio` (0.3-1/0.3) are added until
  that many patches are masked; otherwise none (the authors' `pred_ratio 0 0.3`,
  `pred_ratio_var 0 0.2`, `pred_shape block`). The teacher's outputs are centred
  (separate running centres for the CLS and patch tokens, as DINO's Eq. 4) and sharpened by
  temperatures warmed up linearly, the patch one from `warmup_teacher_patch_temperature`.
  The head is shared between the CLS and patch tokens (`shared_head`, the paper's choice),
  or, with `shared_head=False`, the patch tokens get their own head (`config.patch_head`
  overrides `config.head` for it).

The DINOv2 recipe (`configs/dinov2.py`) is three options of this module, besides its
ViT-L and its schedule (Sec. 4):
  - `koleo_weight` 0.1: the KoLeo regulariser on the student's CLS tokens of each global
    view (`losses.koleo`, nearest neighbours over the global batch), spreading them over
    the sphere;
  - `centering="sinkhorn"`: the teacher's CLS outputs, and its outputs at the masked patches
    only, are turned into probabilities by 3 Sinkhorn-Knopp iterations with epsilon the
    teacher temperature (SwAV's, `losses.sinkhorn_knopp`) instead of centring and softmax;
  - `shared_head=False`, and 4 register tokens in the ViT (`config.encoder.registers`,
    Darcet et al. 2024).

The representation is the teacher encoder's pooled output (the papers evaluate the
teacher), or the student's with `represent_teacher=False`; `represent_dense` gives the
patch tokens on their grid.
"""
import functools
from typing import Any

import jax
import jax.numpy as jnp

from ssl_jax import config_lib, ema, losses
from ssl_jax.errors import UserError
from ssl_jax.methods import (Method, StepOutput, check_choice, check_num_views, check_number,
                             example_keys, merge_views, split_views)
from ssl_jax.methods.dino import (check_head, evaluated_weights, teacher_temperature,
                                  update_center)
from ssl_jax.models import apply_in_eval_mode, apply_in_train_mode, build_encoder, init_variables
from ssl_jax.models.heads import DINOHead, MaskedDistillationNetwork

_LAST_LAYER = ("last_layer_direction", "last_layer_gain")
_CENTERINGS = ("running", "sinkhorn")
# BEiT's block masking tries this many rectangles before it gives up on reaching the ratio.
_ATTEMPTS = 10


def block_mask(key: jax.Array, rows: int, columns: int, target: jax.Array,
               aspect_ratio: tuple[float, float]) -> jax.Array:
  """BEiT's blockwise mask (Bao et al. 2022, Alg. 1; iBOT's `pred_shape="block"`) over a
  rows x columns patch grid, [rows * columns] booleans in row-major order, True = masked.

  Until `target` patches (a float) are masked: up to 10 attempts, each drawing an area s
  uniform in [(min(rows, columns) // 3)^2, remaining] and an aspect ratio r log-uniform in
  `aspect_ratio`, a rectangle of round(sqrt(s r)) x round(sqrt(s / r)) patches (smaller than
  the grid) at a uniform position; the first that adds between 1 and `remaining` new patches
  is kept. The masking stops when no attempt succeeds, so it never exceeds `target`.
  """
  low = float((min(rows, columns) // 3) ** 2)
  row_index = jnp.arange(rows)[:, None]
  column_index = jnp.arange(columns)[None, :]
  log_low, log_high = jnp.log(aspect_ratio[0]), jnp.log(aspect_ratio[1])

  def attempt(_, carry):
    mask, added, remaining, key = carry
    key, area_key, ratio_key, top_key, left_key = jax.random.split(key, 5)
    area = low + (remaining - low) * jax.random.uniform(area_key)
    ratio = jnp.exp(jax.random.uniform(ratio_key, minval=log_low, maxval=log_high))
    height = jnp.round(jnp.sqrt(area * ratio)).astype(jnp.int32)
    width = jnp.round(jnp.sqrt(area / ratio)).astype(jnp.int32)
    fits = (height < rows) & (width < columns)
    top = jax.random.randint(top_key, (), 0, jnp.maximum(rows - height, 0) + 1)
    left = jax.random.randint(left_key, (), 0, jnp.maximum(columns - width, 0) + 1)
    block = ((row_index >= top) & (row_index < top + height) & (column_index >= left)
             & (column_index < left + width))
    new = jnp.sum(block & ~mask)
    accept = (added == 0) & fits & (new > 0) & (new <= remaining)
    return jnp.where(accept, mask | block, mask), jnp.where(accept, new, added), remaining, key

  def grow(carry):
    mask, count, key, _ = carry
    key, attempts_key = jax.random.split(key)
    mask, added, _, _ = jax.lax.fori_loop(
        0, _ATTEMPTS, attempt, (mask, jnp.int32(0), target - count, attempts_key))
    return mask, count + added, key, added > 0

  def going(carry):
    _, count, _, progressed = carry
    return progressed & (count < target)

  mask = jnp.zeros((rows, columns), bool)
  mask, _, _, _ = jax.lax.while_loop(going, grow, (mask, jnp.int32(0), key, jnp.bool_(True)))
  return mask.reshape(-1)


def draw_masks(keys: jax.Array, grid: int, probability: float,
               ratio_range: tuple[float, float], aspect_ratio: tuple[float, float]
               ) -> jax.Array:
  """One view's masks [B, grid * grid] from per-example keys [B]: with `probability` a ratio
  uniform in `ratio_range` of the patches is masked by `block_mask`, else none."""
  def one(key):
    masked_key, ratio_key, block_key = jax.random.split(key, 3)
    ratio = jax.random.uniform(ratio_key, minval=ratio_range[0], maxval=ratio_range[1])
    target = jnp.where(jax.random.bernoulli(masked_key, probability), ratio * grid * grid, 0.0)
    return block_mask(block_key, grid, grid, target, aspect_ratio)
  return jax.vmap(one)(keys)


def _check_pair(key: str, value, minimum: float, maximum: float | None = None) -> None:
  if not isinstance(value, (tuple, list)) or len(value) != 2:
    raise UserError(f"{key} must be a pair (low, high), got {value!r}")
  for index, bound in enumerate(value):
    check_number(f"{key}[{index}]", bound, minimum=minimum, maximum=maximum)
  if value[0] > value[1]:
    raise UserError(f"{key} must have low <= high, got {tuple(value)}")


def _check_settings(config) -> None:
  if config.encoder.get("name") != "vit":
    raise UserError(f"iBOT masks patch tokens: config.encoder.name must be 'vit', got "
                    f"{config.encoder.get('name')!r}")
  settings = config.ibot
  for name in ("student_temperature", "teacher_temperature", "warmup_teacher_temperature",
               "teacher_patch_temperature", "warmup_teacher_patch_temperature"):
    check_number(f"config.ibot.{name}", settings[name], above=0)
  for name in ("center_momentum", "base_momentum", "final_momentum", "mask_probability"):
    check_number(f"config.ibot.{name}", settings[name], minimum=0, maximum=1)
  for name in ("cls_weight", "patch_weight", "koleo_weight"):
    check_number(f"config.ibot.{name}", settings[name], minimum=0)
  for prefix in ("teacher_temperature_warmup", "freeze_last_layer"):
    for unit, integer in (("steps", True), ("epochs", False)):
      if settings.get(f"{prefix}_{unit}") is not None:
        check_number(f"config.ibot.{prefix}_{unit}", settings[f"{prefix}_{unit}"], minimum=0,
                     integer=integer)
  _check_pair("config.ibot.mask_ratio_range", settings.mask_ratio_range, 0.0, 1.0)
  _check_pair("config.ibot.mask_aspect_ratio", settings.mask_aspect_ratio, 1e-3)
  check_choice("config.ibot.centering", settings.centering, _CENTERINGS)
  check_number("config.ibot.sinkhorn_iterations", settings.sinkhorn_iterations, minimum=1,
               integer=True)
  for name in ("shared_head", "represent_teacher"):
    check_choice(f"config.ibot.{name}", settings[name], (True, False))
  check_head("config.head", config.head)
  check_head("config.patch_head", config.patch_head)
  if settings.shared_head and config.patch_head:
    raise UserError(f"config.patch_head.{sorted(config.patch_head)[0]} is set but "
                    "config.ibot.shared_head=True uses config.head for the patch tokens; set "
                    "config.ibot.shared_head=False or clear config.patch_head")


def _network(config, deterministic: bool) -> MaskedDistillationNetwork:
  encoder = build_encoder({**config.encoder, "mask_token": True}, deterministic=deterministic)
  patch_head = None
  if not config.ibot.shared_head:
    patch_head = DINOHead(**{**config.head, **config.patch_head})
  return MaskedDistillationNetwork(encoder, DINOHead(**config.head), patch_head)


def build(config, length) -> Method:
  check_num_views(config, 2, "iBOT")
  _check_settings(config)
  settings = config.ibot
  network = _network(config, deterministic=False)
  teacher = ema.MomentumTarget(_network(config, deterministic=True),  # no drop path
                               length.schedule_steps, settings.base_momentum,
                               settings.final_momentum)
  warmup_steps = config_lib.to_steps(settings, "teacher_temperature_warmup",
                                     length.steps_per_epoch, default=0)
  freeze_steps = config_lib.to_steps(settings, "freeze_last_layer", length.steps_per_epoch,
                                     default=0)
  patch_size = config.encoder.get("patch_size", 16)
  running_centres = settings.centering == "running"
  patch_dim = {**config.head, **config.patch_head}["output_dim"]

  def init(rng: jax.Array, batch: dict[str, jax.Array]) -> tuple[Any, Any]:
    params, batch_stats = init_variables(network, rng, merge_views(batch["views"][:, :2]))
    extra = {"batch_stats": batch_stats, "teacher": teacher.init(params, batch_stats)}
    if running_centres:
      extra["center"] = jnp.zeros((config.head.output_dim,), jnp.float32)
      extra["patch_center"] = jnp.zeros((patch_dim,), jnp.float32)
    return params, extra

  def freeze_last_layer(params, step):
    frozen = step < freeze_steps
    params = dict(params)
    for head in ("head", "patch_head"):
      if head in params:
        params[head] = {name: (jnp.where(frozen, jax.lax.stop_gradient(value), value)
                               if name in _LAST_LAYER else value)
                        for name, value in params[head].items()}
    return params

  def masks_of(rng, batch):
    """[2 * B, N] view-major (as `merge_views`): each global view's own masks."""
    keys = example_keys(rng, batch)
    grid = batch["views"].shape[2] // patch_size
    return jnp.concatenate([
        draw_masks(jax.vmap(lambda k, v=view: jax.random.fold_in(k, v))(keys), grid,
                   settings.mask_probability, tuple(settings.mask_ratio_range),
                   tuple(settings.mask_aspect_ratio))
        for view in range(2)])

  def teacher_probabilities(cls_logits, patch_logits, masks, extra, step):
    cls_temperature = teacher_temperature(step, warmup_steps,
                                          settings.warmup_teacher_temperature,
                                          settings.teacher_temperature)
    patch_temperature = teacher_temperature(step, warmup_steps,
                                            settings.warmup_teacher_patch_temperature,
                                            settings.teacher_patch_temperature)
    if running_centres:
      cls_probs = jax.nn.softmax((cls_logits - extra["center"]) / cls_temperature, axis=-1)
      patch_probs = jax.nn.softmax((patch_logits - extra["patch_center"]) / patch_temperature,
                                   axis=-1)
      centres = {"center": update_center(extra["center"], cls_logits, settings.center_momentum),
                 "patch_center": update_center(extra["patch_center"],
                                               patch_logits.reshape(-1, patch_dim),
                                               settings.center_momentum)}
    else:
      cls_probs = losses.sinkhorn_knopp(cls_logits, cls_temperature,
                                        settings.sinkhorn_iterations)
      patch_probs = losses.sinkhorn_knopp(
          patch_logits.reshape(-1, patch_dim), patch_temperature, settings.sinkhorn_iterations,
          weights=masks.reshape(-1)).reshape(patch_logits.shape)
      centres = {}
    return cls_probs, patch_probs, centres, {"teacher_temperature": cls_temperature,
                                             "teacher_patch_temperature": patch_temperature}

  def loss(params, extra, batch, rng, step):
    global_rng, local_rng, mask_rng = jax.random.split(rng, 3)
    views = batch["views"]
    masks = masks_of(mask_rng, batch)
    if freeze_steps:
      params = freeze_last_layer(params, step)
    (h, cls_tokens, student_cls, student_patches), stats = apply_in_train_mode(
        network, params, extra["batch_stats"], merge_views(views), rng=global_rng,
        patch_mask=masks)
    student = split_views(student_cls, 2)
    if "local_views" in batch:  # another resolution: a second forward pass, no masks
      local = batch["local_views"]
      (_, _, student_local, _), stats = apply_in_train_mode(
          network, params, stats, merge_views(local), rng=local_rng, patches=False)
      student += split_views(student_local, local.shape[1])
    (_, _, teacher_cls, teacher_patches), teacher_state = teacher.apply(extra["teacher"],
                                                                        merge_views(views))
    cls_probs, patch_probs, centres, temperatures = teacher_probabilities(
        teacher_cls, teacher_patches, masks, extra, step)
    cls_loss = losses.dino_cross_entropy(student, split_views(cls_probs, 2),
                                         settings.student_temperature)
    patch_loss = sum(
        losses.masked_patch_cross_entropy(s, t, m, settings.student_temperature)
        for s, t, m in zip(split_views(student_patches, 2), split_views(patch_probs, 2),
                           split_views(masks, 2))) / 2
    value = settings.cls_weight * cls_loss + settings.patch_weight * patch_loss
    metrics = {"cls_loss": cls_loss, "patch_loss": patch_loss}
    if settings.koleo_weight:
      koleo = sum(losses.koleo(tokens) for tokens in split_views(cls_tokens, 2))
      value = value + settings.koleo_weight * koleo
      metrics["koleo"] = koleo
    entropy = -jnp.mean(jnp.sum(cls_probs * jnp.log(jnp.maximum(cls_probs, 1e-12)), axis=-1))
    metrics.update(temperatures, momentum=teacher.momentum(step), teacher_entropy=entropy,
                   masked_fraction=jnp.mean(masks.astype(jnp.float32)),
                   # Both collapses (uniform, one prototype) make P_t constant: std 0.
                   embedding_std=losses.normalized_std(split_views(cls_probs, 2)[0]))
    new_extra = {"batch_stats": stats, "teacher": teacher_state, **centres}
    return value, StepOutput(new_extra, metrics, split_views(h, 2)[0])

  def update_extra(params, extra, step):
    return {**extra, "teacher": teacher.update(extra["teacher"], params, step)}

  def represent(params, extra, images, dense=False):
    out = apply_in_eval_mode(network, *evaluated_weights(settings, params, extra), images,
                             patches=False, dense=dense)
    return out[0]

  return Method(init=init, loss=loss, represent=represent, update_extra=update_extra,
                represent_dense=functools.partial(represent, dense=True),
                coupling=("the teacher's centring (a running mean or Sinkhorn-Knopp) and "
                          "KoLeo's nearest neighbours span the batch"))
