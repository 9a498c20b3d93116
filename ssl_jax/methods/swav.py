"""SwAV (Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments").

Online clustering with swapped prediction. Every crop of an image goes through the encoder
and a projection MLP (2048 -> BatchNorm -> ReLU -> 128 in the paper), and its L2-normalised
output z is scored against K prototypes c_k (a bias-free linear layer): s = z^T C. For the
crops in `crops_for_assign` (the 2 global crops) a code q is computed from the scores of the
whole global batch by Sinkhorn-Knopp (`losses.sinkhorn_knopp`: epsilon 0.05, 3 iterations;
Sec. 3.1 and Alg. 1): soft assignments under which every prototype receives an equal
share of the batch, which is what rules out the trivial solution of one cluster. Each crop
then predicts the codes of the other crops' assignments from its own scores,
softmax(s / temperature) (Eq. 1-2), with the multi-crop loss of Sec. 3.2: each assigned crop
is predicted from every other crop, global and local (`losses.swav_swapped_prediction` says
exactly which pairs and how they are averaged). Codes carry no gradient.

As in the authors' `main_swav.py`:
- multi-crop: the global crops and the lower-resolution local crops (`batch["local_views"]`)
  go through the encoder as two batches (its BatchNorm statistics per resolution), and the
  projection head sees all crops as one batch;
- the prototypes are unit vectors: the authors re-normalise the prototype weights before
  every step, which a pure functional step cannot do to its parameters, so here the
  prototype matrix is L2-normalised column by column inside the forward pass, every time it
  is applied (the same scores; the gradient reaches the weights through the normalisation,
  which removes its radial part, as the authors' re-normalisation after the step does to
  first order);
- Sinkhorn runs on the scores z^T c (epsilon is its temperature), the predictions on
  z^T c / temperature;
- the queue (`queue_length` > 0, for small batches): the last `queue_length` embeddings z of
  each assigned crop, newest first, kept in `extra` and shifted with the current global
  batch after every step. From `queue_start_*` on (and once the queue has been filled),
  Sinkhorn runs on the scores of [queue; batch] against the current prototypes and only the
  batch's rows of the codes are kept: more examples to share the prototypes between. The
  authors start filling the queue at that epoch and use it once it is full; here it is
  filled from the first step (as solo-learn does), so it is full when it starts being used;
- the prototypes are frozen (gradient zeroed by stop_gradient, as DINO's last layer) for the
  first `freeze_prototypes_*` (one epoch in the paper). Weight decay still scales the
  frozen weights, which leaves the normalised prototypes, all the forward pass reads,
  unchanged.

The loss is split at the encoder outputs (`EmbeddingLoss`): the encoder runs per example, the
projection head, prototypes and Sinkhorn on the whole batch, so gradient accumulation is
exact with a BatchNorm-free encoder (a ViT). The representation is the encoder output h.

Config (`config.swav`): temperature, epsilon, sinkhorn_iterations, num_prototypes,
crops_for_assign, queue_length, queue_start_steps/_epochs, freeze_prototypes_steps/_epochs;
`config.projector` is the `MLPHead`.
"""
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from ssl_jax import config_lib, losses
from ssl_jax.errors import UserError
from ssl_jax.methods import (EmbeddingLoss, Method, StepOutput, check_mlp_head, check_num_views,
                             check_number, composed_loss, merge_views, split_views)
from ssl_jax.models import apply_in_eval_mode, apply_in_train_mode, build_encoder, init_variables
from ssl_jax.models.heads import MLPHead, ProjectedEncoder

NUM_GLOBAL_CROPS = 2


def _encode(network, images, train):
  """The encoder part of a `ProjectedEncoder`: h."""
  return network.encoder(images, train=train)


def _project(network, h, train):
  """The projector part of a `ProjectedEncoder`: g(h)."""
  return network.projector(h, train=train)


def prototype_scores(z: jax.Array, prototypes: jax.Array) -> jax.Array:
  """z^T c_k for unit embeddings z [n, D] and the prototype matrix [D, K], each of whose
  columns is L2-normalised here (the authors normalise the weights before every step)."""
  return z.astype(jnp.float32) @ losses.l2_normalize(prototypes.astype(jnp.float32), axis=0)


def assignment_codes(scores: jax.Array, queue_scores: jax.Array | None, epsilon: float,
                     iterations: int) -> jax.Array:
  """The Sinkhorn codes [B, K] of the batch's `scores` [B, K]; with `queue_scores` [L, K]
  Sinkhorn runs on the L + B rows [queue; batch] and the batch's rows are returned."""
  scores = jax.lax.stop_gradient(scores)
  if queue_scores is None:
    return losses.sinkhorn_knopp(scores, epsilon, iterations)
  both = jnp.concatenate([jax.lax.stop_gradient(queue_scores), scores], axis=0)
  return losses.sinkhorn_knopp(both, epsilon, iterations)[queue_scores.shape[0]:]


def shift_queue(queue: jax.Array, z: jax.Array) -> jax.Array:
  """[L, D] -> the newest L of [z; queue]: the batch's embeddings in front, the oldest out."""
  return jnp.concatenate([z.astype(queue.dtype), queue], axis=0)[:queue.shape[0]]


def swapped_assignment_loss(z_crops: list[jax.Array], prototypes: jax.Array,
                            queue: jax.Array | None, use_queue: jax.Array | bool, *,
                            assigned: tuple[int, ...], temperature: float, epsilon: float,
                            iterations: int) -> tuple[jax.Array, list[jax.Array],
                                                      list[jax.Array]]:
  """SwAV's loss from every crop's unit embedding z [B, D] (global crops first), the prototype
  matrix [D, K] and, when not None, the queue [len(assigned), L, D]: Sinkhorn on [queue;
  batch] when `use_queue` (a traced bool), else on the batch alone. Returns (loss, codes of
  the assigned crops, every crop's scores)."""
  scores = [prototype_scores(z, prototypes) for z in z_crops]
  frozen = jax.lax.stop_gradient(prototypes)
  codes = []
  for i, crop in enumerate(assigned):
    if queue is None:
      codes.append(assignment_codes(scores[crop], None, epsilon, iterations))
      continue
    queue_scores = prototype_scores(queue[i], frozen)
    codes.append(jax.lax.cond(
        use_queue,
        lambda s, qs: assignment_codes(s, qs, epsilon, iterations),
        lambda s, qs: assignment_codes(s, None, epsilon, iterations),
        scores[crop], queue_scores))
  value = losses.swav_swapped_prediction(scores, codes, assigned, temperature)
  return value, codes, scores


def _check_settings(config) -> None:
  settings = config.swav
  for name in ("temperature", "epsilon"):
    check_number(f"config.swav.{name}", settings[name], above=0)
  check_number("config.swav.sinkhorn_iterations", settings.sinkhorn_iterations, minimum=1,
               integer=True)
  check_number("config.swav.num_prototypes", settings.num_prototypes, minimum=2, integer=True)
  check_number("config.swav.queue_length", settings.queue_length, minimum=0, integer=True)
  crops = settings.crops_for_assign
  if not isinstance(crops, (tuple, list)) or not crops or len(set(crops)) != len(crops):
    raise UserError(f"config.swav.crops_for_assign must be a non-empty tuple of distinct global "
                    f"crop indices (0 and/or 1), got {crops!r}")
  for index, crop in enumerate(crops):
    check_number(f"config.swav.crops_for_assign[{index}]", crop, minimum=0,
                 maximum=NUM_GLOBAL_CROPS - 1, integer=True)
  for prefix in ("queue_start", "freeze_prototypes"):
    for unit, integer in (("steps", True), ("epochs", False)):
      if settings.get(f"{prefix}_{unit}") is not None:
        check_number(f"config.swav.{prefix}_{unit}", settings[f"{prefix}_{unit}"], minimum=0,
                     integer=integer)
    if (settings.get(f"{prefix}_steps") is not None
        and settings.get(f"{prefix}_epochs") is not None):
      raise UserError(f"set only one of config.swav.{prefix}_steps and "
                      f"config.swav.{prefix}_epochs (clear the other with =None)")
  check_mlp_head("config.projector", config.projector)


def build(config, length) -> Method:
  check_num_views(config, NUM_GLOBAL_CROPS, "SwAV")
  _check_settings(config)
  settings = config.swav
  assigned = tuple(int(crop) for crop in settings.crops_for_assign)
  num_prototypes = int(settings.num_prototypes)
  queue_length = int(settings.queue_length)
  network = ProjectedEncoder(build_encoder(config.encoder), MLPHead(**config.projector))
  freeze_steps = config_lib.to_steps(settings, "freeze_prototypes", length.steps_per_epoch,
                                     default=0)
  # The queue is filled from the first step and used from queue_start on, once it is full.
  queue_use_step = max(
      config_lib.to_steps(settings, "queue_start", length.steps_per_epoch, default=0),
      math.ceil(queue_length / config.batch_size))
  objective = functools.partial(
      swapped_assignment_loss, assigned=assigned, temperature=settings.temperature,
      epsilon=settings.epsilon, iterations=int(settings.sinkhorn_iterations))

  def init(rng: jax.Array, batch: dict[str, jax.Array]) -> tuple[Any, Any]:
    network_rng, prototype_rng = jax.random.split(rng)
    network_params, batch_stats = init_variables(network, network_rng,
                                                 merge_views(batch["views"][:, :2]))
    dim = config.projector.output_dim
    prototypes = losses.l2_normalize(
        jax.random.normal(prototype_rng, (dim, num_prototypes), jnp.float32), axis=0)
    extra = {"batch_stats": batch_stats}
    if queue_length:
      extra["queue"] = jnp.zeros((len(assigned), queue_length, dim), jnp.float32)
    return {"network": network_params, "prototypes": prototypes}, extra

  def embed(params, extra, batch, rng):
    """The per-example part: the encoder's h of every crop, {"global": [b, 2, d], "local":
    [b, V, d]} (each resolution a batch of its own), and its BatchNorm statistics."""
    global_rng, local_rng = jax.random.split(rng)
    per_example = lambda h, views: jnp.swapaxes(h.reshape((views, -1) + h.shape[1:]), 0, 1)
    views = batch["views"]
    h, stats = apply_in_train_mode(network, params["network"], extra["batch_stats"],
                                   merge_views(views), rng=global_rng, method=_encode)
    embeddings = {"global": per_example(h, views.shape[1])}
    if "local_views" in batch:  # another resolution: a second pass
      local = batch["local_views"]
      h, stats = apply_in_train_mode(network, params["network"], stats, merge_views(local),
                                     rng=local_rng, method=_encode)
      embeddings["local"] = per_example(h, local.shape[1])
    return embeddings, stats.get("encoder", {})

  def coupled_loss(params, extra, embeddings, encoder_stats, step):
    """The projection head on all crops as one batch, the prototypes, Sinkhorn over the
    global batch (and the queue), the swapped prediction, the queue's shift."""
    stats = extra["batch_stats"]
    if encoder_stats:
      stats = {**stats, "encoder": encoder_stats}
    crops = [embeddings["global"]] + ([embeddings["local"]] if "local" in embeddings else [])
    num_crops = sum(c.shape[1] for c in crops)
    h = jnp.concatenate([merge_views(c) for c in crops], axis=0)
    z, stats = apply_in_train_mode(network, params["network"], stats, h, method=_project)
    z_crops = split_views(losses.l2_normalize(z), num_crops)
    prototypes = params["prototypes"]
    if freeze_steps:
      prototypes = jnp.where(step < freeze_steps, jax.lax.stop_gradient(prototypes), prototypes)
    queue = extra.get("queue")
    use_queue = jnp.logical_and(queue is not None, step >= queue_use_step)
    value, codes, scores = objective(z_crops, prototypes, queue, use_queue)

    new_extra = {"batch_stats": stats}
    if queue is not None:
      new_extra["queue"] = jnp.stack([
          shift_queue(queue[i], jax.lax.stop_gradient(z_crops[crop]))
          for i, crop in enumerate(assigned)])
    entropy = jnp.mean(jnp.stack([
        jnp.mean(-jnp.sum(q * jnp.log(jnp.maximum(q, 1e-12)), axis=-1)) for q in codes]))
    picked = jax.nn.one_hot(jnp.argmax(scores[assigned[0]], axis=-1), num_prototypes)
    metrics = {
        # Both collapses (one point; or the codes carrying no information) show here: the
        # embedding std falls to 0, the codes' entropy rises to log K, and the prototypes
        # the network's own scores pick (argmax, over the global batch) fall to a few.
        "embedding_std": losses.normalized_std(z_crops[0]),
        "code_entropy": entropy,
        "prototypes_used": jnp.sum(jnp.max(picked, axis=0)),
        "queue_in_use": use_queue.astype(jnp.float32)}
    return value, StepOutput(new_extra, metrics, embeddings["global"][:, 0])

  def represent(params, extra, images, dense=False):
    h, _ = apply_in_eval_mode(network, params["network"], extra["batch_stats"], images,
                              dense=dense)
    return h

  embedding_loss = EmbeddingLoss(embed=embed, loss=coupled_loss)
  return Method(init=init, loss=composed_loss(embedding_loss), represent=represent,
                represent_dense=functools.partial(represent, dense=True),
                embedding_loss=embedding_loss,
                coupling="Sinkhorn's codes share the prototypes out over the whole batch")
