"""SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning").

One network (encoder f, projector g) embeds both views, a predictor h maps one embedding to
the other, and the loss is L = D(p1, z2) / 2 + D(p2, z1) / 2 with D(p, z) = -cos(p,
stopgrad(z)) (Eq. 1-3). There are no negatives and no momentum encoder: the stop-gradient
alone prevents collapse (Sec. 4.1; `embedding_std` in the metrics is the paper's Fig. 2
monitor, ~1/sqrt(d) when healthy and 0 when collapsed). The representation is f(x).

Config: `config.encoder`, `config.projector` (3 layers with a BatchNorm output in the paper)
and `config.predictor` (a 2-layer bottleneck MLP).
"""
import functools
from typing import Any

import jax

from ssl_jax import losses
from ssl_jax.methods import (Method, StepOutput, check_mlp_head, check_num_views, merge_views,
                             split_views)
from ssl_jax.models import apply_in_eval_mode, apply_in_train_mode, build_encoder, init_variables
from ssl_jax.models.heads import MLPHead, ProjectedEncoder


def build(config, length) -> Method:
  check_num_views(config, 2, "SimSiam")
  del length  # No schedule besides the optimizer's.
  check_mlp_head("config.projector", config.projector)
  check_mlp_head("config.predictor", config.predictor)
  network = ProjectedEncoder(build_encoder(config.encoder), MLPHead(**config.projector))
  predictor = MLPHead(**config.predictor)

  def init(rng: jax.Array, batch: dict[str, jax.Array]) -> tuple[Any, Any]:
    network_rng, predictor_rng = jax.random.split(rng)
    images = merge_views(batch["views"][:, :2])
    network_params, network_stats = init_variables(network, network_rng, images)
    (_, z), _ = apply_in_train_mode(network, network_params, network_stats, images)
    predictor_params, predictor_stats = init_variables(predictor, predictor_rng, z)
    return ({"network": network_params, "predictor": predictor_params},
            {"batch_stats": {"network": network_stats, "predictor": predictor_stats}})

  def loss(params, extra, batch, rng, step):
    del step
    views = batch["views"]
    stats = extra["batch_stats"]
    (h, z), network_stats = apply_in_train_mode(network, params["network"], stats["network"],
                                                merge_views(views), rng=rng)
    p, predictor_stats = apply_in_train_mode(predictor, params["predictor"], stats["predictor"], z)
    p1, p2 = split_views(p, 2)
    z1, z2 = split_views(z, 2)
    value = 0.5 * losses.negative_cosine(p1, z2) + 0.5 * losses.negative_cosine(p2, z1)
    metrics = {"embedding_std": losses.normalized_std(z1)}
    new_extra = {"batch_stats": {"network": network_stats, "predictor": predictor_stats}}
    return value, StepOutput(new_extra, metrics, split_views(h, 2)[0])

  def represent(params, extra, images, dense=False):
    h, _ = apply_in_eval_mode(network, params["network"], extra["batch_stats"]["network"], images,
                              dense=dense)
    return h

  return Method(init=init, loss=loss, represent=represent,
                represent_dense=functools.partial(represent, dense=True),
                coupling="its projector and predictor normalise by the batch's statistics")
