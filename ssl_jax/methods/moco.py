"""MoCo v2 and v3: momentum-encoder contrast, chosen by `config.moco.version`.

MoCo v2 (He et al. 2020, "Momentum Contrast", with Chen et al. 2020, "Improved Baselines"):
a query encoder (encoder + MLP projector) is trained with InfoNCE (MoCo Eq. 1,
`losses.info_nce`) to pick the key of its own image, computed by a momentum (EMA) copy of
the query encoder (Eq. 2), among a queue of K keys from earlier batches. Keys of the whole
global batch are enqueued after every step (first in, first out). With `symmetric` (solo-
learn's "MoCo v2+") both views act as queries against the other view's keys, and each view
has its own queue, as in solo-learn; otherwise view 1 queries view 2 as in the paper.
BatchNorm statistics span the global batch (like SyncBN), which is what MoCo's shuffled BN
guards against leaking through per-device statistics, so no shuffling is needed.

MoCo v3 (Chen, Xie, He 2021, "An Empirical Study of Training Self-Supervised Vision
Transformers", Alg. 1): no queue; the query branch has a predictor, the negatives are the
other keys of the global batch, and the loss is symmetric:
ctr(q1, k2) + ctr(q2, k1) with ctr = 2 tau CrossEntropy(q k^T / tau, identity).

In both, the key encoder's momentum follows `ema.cosine_momentum` from base_momentum to
final_momentum (equal values give MoCo v2's constant 0.999). The representation is the query
encoder's output.

MoCo v3's loss is split at the encoders' outputs (`EmbeddingLoss`): the encoders run per
example, the heads (with their BatchNorm) and the contrast on the whole batch, which makes
gradient accumulation exact with a BatchNorm-free encoder (`ssl_jax.accumulation`).

Config (`config.moco`): version (2 or 3), temperature, base_momentum, final_momentum,
queue_size and symmetric (v2); `config.predictor` (v3).
"""
import functools
from typing import Any

import jax
import jax.numpy as jnp

from ssl_jax import ema, losses
from ssl_jax.errors import UserError
from ssl_jax.methods import (EmbeddingLoss, Method, StepOutput, check_choice, check_mlp_head,
                             check_num_views, check_number, composed_loss, merge_views,
                             split_views)
from ssl_jax.models import apply_in_eval_mode, apply_in_train_mode, build_encoder, init_variables
from ssl_jax.models.heads import MLPHead, ProjectedEncoder


def enqueue(queue: jax.Array, pointer: jax.Array, keys: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Writes `keys` [n, D] into the ring buffer `queue` [K, D] at `pointer`, replacing the
  oldest n entries; returns (queue, new pointer). K must be a multiple of n (MoCo's assert).
  """
  size, n = queue.shape[0], keys.shape[0]
  queue = jax.lax.dynamic_update_slice_in_dim(queue, keys.astype(queue.dtype), pointer, axis=0)
  return queue, (pointer + n) % size


def _encode(network, images, train):
  """The encoder part of a `ProjectedEncoder`: h."""
  return network.encoder(images, train=train)


def _project(network, h, train):
  """The projector part of a `ProjectedEncoder`: z = g(h)."""
  return network.projector(h, train=train)


def _with_part(stats: dict, updated: dict) -> dict:
  """A `ProjectedEncoder`'s BatchNorm statistics with its encoder's replaced by `updated`
  (an encoder without BatchNorm has none to replace)."""
  return {**stats, "encoder": updated} if updated else stats


def _check_settings(config) -> None:
  settings = config.moco
  check_choice("config.moco.version", settings.version, (2, 3))
  check_number("config.moco.temperature", settings.temperature, above=0)
  for name in ("base_momentum", "final_momentum"):
    check_number(f"config.moco.{name}", settings[name], minimum=0, maximum=1)
  check_mlp_head("config.projector", config.projector)
  if settings.version == 3:
    check_mlp_head("config.predictor", config.predictor)
    return
  check_choice("config.moco.symmetric", settings.symmetric, (True, False))
  check_number("config.moco.queue_size", settings.queue_size, minimum=1, integer=True)
  if settings.queue_size % config.batch_size:
    raise UserError(f"config.moco.queue_size must be a multiple of config.batch_size "
                    f"({config.batch_size}): the keys of each step replace a whole block; "
                    f"got {settings.queue_size}")


def build(config, length) -> Method:
  check_num_views(config, 2, "MoCo")
  _check_settings(config)
  settings = config.moco
  version = int(settings.version)
  queue_size = int(settings.queue_size)
  query_network = ProjectedEncoder(build_encoder(config.encoder), MLPHead(**config.projector))
  key_encoder = ema.MomentumTarget(
      ProjectedEncoder(build_encoder(config.encoder, deterministic=True),
                       MLPHead(**config.projector)),
      length.schedule_steps, settings.base_momentum, settings.final_momentum)
  predictor = MLPHead(**config.predictor) if version == 3 else None
  num_queues = 2 if settings.symmetric else 1

  def init(rng: jax.Array, batch: dict[str, jax.Array]) -> tuple[Any, Any]:
    network_rng, predictor_rng, queue_rng = jax.random.split(rng, 3)
    images = merge_views(batch["views"][:, :2])
    network_params, network_stats = init_variables(query_network, network_rng, images)
    params = {"query": network_params}
    stats = {"query": network_stats}
    extra = {"target": key_encoder.init(network_params, network_stats)}
    if predictor is not None:
      (_, z), _ = apply_in_train_mode(query_network, network_params, network_stats, images)
      params["predictor"], stats["predictor"] = init_variables(predictor, predictor_rng, z)
    else:  # MoCo initialises the queue with random unit vectors.
      dim = config.projector.output_dim
      queue = jax.random.normal(queue_rng, (num_queues, queue_size, dim), jnp.float32)
      extra["queue"] = losses.l2_normalize(queue)
      extra["queue_pointer"] = jnp.zeros((), jnp.int32)
    extra["batch_stats"] = stats
    return params, extra

  def embed_views(params, extra, batch, rng):
    """MoCo v3's per-example part: the query and key encoders' h of both views of each image,
    [b, 2, D] (the heads, with their BatchNorm, run on the whole batch in `contrast`)."""
    images = merge_views(batch["views"])
    query_stats, target = extra["batch_stats"]["query"], extra["target"]
    h, query_stats = apply_in_train_mode(query_network, params["query"], query_stats, images,
                                         rng=rng, method=_encode)
    h_key, target = key_encoder.apply(target, images, method=_encode)
    per_example = lambda x: jnp.swapaxes(x.reshape((2, -1) + x.shape[1:]), 0, 1)
    updated = {"query": query_stats.get("encoder", {}),
               "target": target["batch_stats"].get("encoder", {})}
    return {"query": per_example(h), "key": per_example(h_key)}, updated

  def contrast(params, extra, embeddings, encoder_stats, step):
    """MoCo v3's loss from both encoders' h: projector and predictor on the queries, the key
    projector, symmetric InfoNCE with the other keys of the whole batch as negatives."""
    stats = {**extra["batch_stats"],
             "query": _with_part(extra["batch_stats"]["query"], encoder_stats["query"])}
    target = {**extra["target"], "batch_stats": _with_part(extra["target"]["batch_stats"],
                                                          encoder_stats["target"])}
    h = merge_views(embeddings["query"])
    q, stats["query"] = apply_in_train_mode(query_network, params["query"], stats["query"], h,
                                            method=_project)
    q, stats["predictor"] = apply_in_train_mode(predictor, params["predictor"],
                                                stats["predictor"], q)
    k, target = key_encoder.apply(target, merge_views(embeddings["key"]), method=_project)
    q1, q2 = split_views(q, 2)
    k1, k2 = split_views(k, 2)
    t = settings.temperature
    value = 2 * t * (losses.batch_info_nce(q1, k2, t) + losses.batch_info_nce(q2, k1, t))
    logits = losses.batch_info_nce_logits(q1, k2, t)
    metrics = {"momentum": key_encoder.momentum(step),
               "contrastive_accuracy": losses.top1_accuracy(logits, jnp.arange(logits.shape[0])),
               "embedding_std": losses.normalized_std(q1)}
    new_extra = {"target": target, "batch_stats": stats}
    return value, StepOutput(new_extra, metrics, split_views(h, 2)[0])

  def loss(params, extra, batch, rng, step):  # MoCo v2
    views = batch["views"]
    images = merge_views(views)
    stats = dict(extra["batch_stats"])
    (h, q), stats["query"] = apply_in_train_mode(query_network, params["query"], stats["query"],
                                                 images, rng=rng)
    (_, k), target_state = key_encoder.apply(extra["target"], images)
    k1, k2 = split_views(k, 2)
    new_extra = {"target": target_state}
    metrics = {"momentum": key_encoder.momentum(step)}
    q1, q2 = split_views(q, 2)
    queue = extra["queue"]
    t = settings.temperature
    if settings.symmetric:  # queue[v] holds keys of view v
      value = 0.5 * (losses.info_nce(q1, k2, queue[1], t) + losses.info_nce(q2, k1, queue[0], t))
      new_keys = [k1, k2]
    else:
      value = losses.info_nce(q1, k2, queue[0], t)
      new_keys = [k2]
    pointer = extra["queue_pointer"]
    updated = []
    for v, keys in enumerate(new_keys):
      queue_v, new_pointer = enqueue(queue[v], pointer, losses.l2_normalize(keys))
      updated.append(queue_v)
    new_extra["queue"] = jnp.stack(updated)
    new_extra["queue_pointer"] = new_pointer
    new_extra["batch_stats"] = stats
    metrics["embedding_std"] = losses.normalized_std(split_views(q, 2)[0])
    return value, StepOutput(new_extra, metrics, split_views(h, 2)[0])

  def update_extra(params, extra, step):
    return {**extra, "target": key_encoder.update(extra["target"], params["query"], step)}

  def represent(params, extra, images, dense=False):
    h, _ = apply_in_eval_mode(query_network, params["query"], extra["batch_stats"]["query"],
                              images, dense=dense)
    return h
  represent_dense = functools.partial(represent, dense=True)

  if version == 3:
    # The other keys of the batch are the negatives, and they meet the queries only as
    # embeddings: exact gradient accumulation by gradient caching (`ssl_jax.accumulation`)
    # when the encoder has no BatchNorm (a ViT, as in the paper).
    contrastive = EmbeddingLoss(embed=embed_views, loss=contrast)
    return Method(init=init, loss=composed_loss(contrastive), represent=represent,
                  represent_dense=represent_dense,
                  update_extra=update_extra, embedding_loss=contrastive,
                  coupling="the other keys of the batch are the negatives")
  return Method(init=init, loss=loss, represent=represent, update_extra=update_extra,
                represent_dense=represent_dense,
                coupling="the batch's keys enter the queue of negatives together")
