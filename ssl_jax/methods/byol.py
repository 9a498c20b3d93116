"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent").

An online network (encoder f, projector g, predictor q) predicts the target network's
projection of the other view; the target (f', g') is an exponential moving average of the
online weights, xi <- tau xi + (1 - tau) theta, with tau rising from `base_momentum` (0.996)
to 1 along a cosine over training (Sec. 3.2). The loss is the normalised MSE
||q(z)/|q(z)| - z'/|z'|||^2 = 2 - 2 cos (Eq. 2), symmetrised over the two views (Eq. 3,
L + L~); gradients reach only the online network. The representation is the online f(x).

Config (`config.byol`): base_momentum, final_momentum; `config.encoder`, `config.projector`
and `config.predictor` give the networks.
"""
import functools
from typing import Any

import jax

from ssl_jax import ema, losses
from ssl_jax.methods import (Method, StepOutput, check_mlp_head, check_num_views, check_number,
                             merge_views, split_views)
from ssl_jax.models import apply_in_eval_mode, apply_in_train_mode, build_encoder, init_variables
from ssl_jax.models.heads import MLPHead, ProjectedEncoder


def build(config, length) -> Method:
  check_num_views(config, 2, "BYOL")
  settings = config.byol
  for name in ("base_momentum", "final_momentum"):  # the EMA's tau
    check_number(f"config.byol.{name}", settings[name], minimum=0, maximum=1)
  check_mlp_head("config.projector", config.projector)
  check_mlp_head("config.predictor", config.predictor)
  online = ProjectedEncoder(build_encoder(config.encoder), MLPHead(**config.projector))
  predictor = MLPHead(**config.predictor)
  target = ema.MomentumTarget(
      ProjectedEncoder(build_encoder(config.encoder, deterministic=True),
                       MLPHead(**config.projector)),
      length.schedule_steps, settings.base_momentum, settings.final_momentum)

  def init(rng: jax.Array, batch: dict[str, jax.Array]) -> tuple[Any, Any]:
    online_rng, predictor_rng = jax.random.split(rng)
    images = merge_views(batch["views"][:, :2])
    online_params, online_stats = init_variables(online, online_rng, images)
    (_, z), _ = apply_in_train_mode(online, online_params, online_stats, images)
    predictor_params, predictor_stats = init_variables(predictor, predictor_rng, z)
    params = {"online": online_params, "predictor": predictor_params}
    # The target starts as a copy of the online network (Sec. 3.1).
    extra = {"batch_stats": {"online": online_stats, "predictor": predictor_stats},
             "target": target.init(online_params, online_stats)}
    return params, extra

  def loss(params, extra, batch, rng, step):
    views = batch["views"]
    images = merge_views(views)
    stats = extra["batch_stats"]
    (h, z), online_stats = apply_in_train_mode(online, params["online"], stats["online"], images,
                                               rng=rng)
    p, predictor_stats = apply_in_train_mode(predictor, params["predictor"], stats["predictor"], z)
    (_, z_target), target_state = target.apply(extra["target"], images)
    p1, p2 = split_views(p, 2)
    t1, t2 = split_views(z_target, 2)
    value = losses.normalized_mse(p1, t2) + losses.normalized_mse(p2, t1)
    new_extra = {"batch_stats": {"online": online_stats, "predictor": predictor_stats},
                 "target": target_state}
    metrics = {"momentum": target.momentum(step),
               "prediction_cosine": jax.numpy.mean(losses.cosine_similarity(p1, t2)),
               "embedding_std": losses.normalized_std(split_views(z, 2)[0])}
    return value, StepOutput(new_extra, metrics, split_views(h, 2)[0])

  def update_extra(params, extra, step):
    return {**extra, "target": target.update(extra["target"], params["online"], step)}

  def represent(params, extra, images, dense=False):
    h, _ = apply_in_eval_mode(online, params["online"], extra["batch_stats"]["online"], images,
                              dense=dense)
    return h

  return Method(init=init, loss=loss, represent=represent, update_extra=update_extra,
                represent_dense=functools.partial(represent, dense=True),
                coupling="its projector and predictor normalise by the batch's statistics")
