"""Contrastive Predictive Coding (van den Oord, Li & Vinyals 2018, "Representation Learning with
Contrastive Predictive Coding", Sec. 2).

A causal strided convolutional encoder maps the signal to z_t, a GRU summarises z_{<=t} into
the context c_t, and for each k = 1..K a linear map W_k predicts z_{t+k} from c_t. The loss is
InfoNCE (Eq. 4) with the log-bilinear score of Eq. 3, exp(z_{t+k}^T W_k c_t): the positive is
the example's own z_{t+k}, the negatives are z_{t+k} of every other example of the global
batch at the same time (`losses.cpc_info_nce`). Steps whose target lies beyond a recording's
end (padding) are neither queries nor negatives.

The representation (`cpc.pooling`) is the context c_t at the last recorded step ("last": it
has read the whole sequence, like the paper's c_t which "summarizes all z_{<=t}", Sec. 2.2) or
its mean over the recorded steps ("mean"). Metrics: cpc_accuracy (picking the positive, over
all steps) and cpc_accuracy_k<k> per prediction step; `test_metrics` gives them on held-out
sequences.

Config: `config.cpc` (widths, kernels, strides of g_enc; context_width; prediction_steps K;
pooling).
"""
from typing import Any

import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.errors import UserError
from ssl_jax.methods import (EmbeddingLoss, Method, StepOutput, check_choice, check_number,
                             check_sizes, composed_loss)
from ssl_jax.methods.causal_lm import pool
from ssl_jax.models import predictive_coding

POOLINGS = ("last", "mean")


def network(config) -> predictive_coding.CPCNetwork:
  """The encoder, GRU and predictors that `config.cpc` describes (checked)."""
  settings = config.cpc
  for name in ("widths", "kernels", "strides"):
    check_sizes(f"config.cpc.{name}", settings[name])
  if not len(settings.widths) == len(settings.kernels) == len(settings.strides):
    raise UserError("config.cpc.widths, kernels and strides must have one entry per layer")
  if any(kernel < stride for kernel, stride in zip(settings.kernels, settings.strides)):
    raise UserError(f"config.cpc.kernels {tuple(settings.kernels)} must each be >= the "
                    f"layer's stride {tuple(settings.strides)} (causal padding is K - S)")
  check_number("config.cpc.context_width", settings.context_width, minimum=1, integer=True)
  check_number("config.cpc.prediction_steps", settings.prediction_steps, minimum=1, integer=True)
  check_choice("config.cpc.pooling", settings.pooling, POOLINGS)
  return predictive_coding.CPCNetwork(
      widths=tuple(settings.widths), kernels=tuple(settings.kernels),
      strides=tuple(settings.strides), context_width=settings.context_width,
      prediction_steps=settings.prediction_steps)


def build(config, length) -> Method:
  del length
  model = network(config)
  strides = tuple(config.cpc.strides)
  pooling = config.cpc.pooling

  def forward(params, inputs):
    z, context, predictions = model.apply({"params": params}, inputs["signal"])
    steps = predictive_coding.encoded_length(inputs["length"], strides)
    valid = jnp.arange(z.shape[1])[None, :] < steps[:, None]
    return z, context, predictions, valid

  def scores(predictions, z, valid):
    if predictions.shape[0] >= z.shape[1]:
      raise UserError(f"config.cpc.prediction_steps ({predictions.shape[0]}) must be below "
                      f"the {z.shape[1]} encoded steps of a window")
    value, accuracies = losses.cpc_info_nce(predictions, z, valid)
    metrics = {"cpc_accuracy": jnp.mean(accuracies),
               **{f"cpc_accuracy_k{k + 1}": a for k, a in enumerate(accuracies)}}
    return value, metrics

  def objective(params, inputs):
    z, context, predictions, valid = forward(params, inputs)
    value, metrics = scores(predictions, z, valid)
    return value, metrics, pool(context, valid, pooling)

  def encode_sequences(params, extra, batch, rng):
    """Each sequence's z, predictions W_k c_t and recorded steps (the per-example part)."""
    del extra, rng  # Deterministic: no corruption, no dropout.
    z, context, predictions, valid = forward(params, batch)
    return {"z": z, "predictions": jnp.moveaxis(predictions, 0, 1), "valid": valid,
            "features": pool(context, valid, pooling)}, {}

  def contrast(params, extra, embeddings, batch_stats, step):
    """InfoNCE with the other sequences of the whole batch as negatives."""
    del params, batch_stats, step
    value, metrics = scores(jnp.moveaxis(embeddings["predictions"], 1, 0), embeddings["z"],
                            embeddings["valid"])
    return value, StepOutput(extra, metrics, embeddings["features"])

  # The negatives meet the queries only as encodings: exact gradient accumulation by gradient
  # caching (`ssl_jax.accumulation`).
  contrastive = EmbeddingLoss(embed=encode_sequences, loss=contrast)

  def init(rng: jax.Array, batch: dict[str, jax.Array]) -> tuple[Any, Any]:
    return model.init(rng, batch["signal"])["params"], {}

  def represent(params, extra, inputs):
    del extra
    _, context, _, valid = forward(params, inputs)
    return pool(context, valid, pooling)

  def test_metrics(params, extra, batch, rng):
    """The batch's means, weighted by its recorded sequences (padding rows have length 0)."""
    del extra, rng
    value, metrics, _ = objective(params, batch)
    count = jnp.sum(batch["length"] > 0).astype(jnp.float32)
    return {"cpc_loss": (value * count, count),
            **{name: (accuracy * count, count) for name, accuracy in metrics.items()}}

  return Method(init=init, loss=composed_loss(contrastive), represent=represent,
                test_metrics=test_metrics, embedding_loss=contrastive,
                coupling="the other sequences of the batch are the negatives")
