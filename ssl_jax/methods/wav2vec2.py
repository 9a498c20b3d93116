"""wav2vec 2.0 (Baevski, Zhou, Mohamed & Auli 2020, "wav2vec 2.0: A Framework for
Self-Supervised Learning of Speech Representations").

A strided convolutional feature encoder turns the raw waveform into latent steps z_t
(`models.wav2vec2`); a proportion of the steps is masked (Sec. 3.1: `mask_prob` of the
recorded steps, drawn without replacement, start a span of `mask_length` steps; spans may
overlap; the paper's p = 0.065 and M = 10 mask about half of the steps); a transformer with
convolutional relative positions contextualises the masked sequence into c_t; and for each
masked step the contrastive task (Eq. 3, `losses.wav2vec2_contrastive`) must pick the step's
quantized latent q_t (a Gumbel-softmax product quantizer of G groups x V entries, Sec. 2.1)
among K distractors drawn uniformly from the other masked steps of the same utterance
(`sample_distractors`), with cosine similarity over a temperature kappa. The loss is
L_m + alpha L_d (Eq. 2) with the codebook diversity penalty L_d (Eq. 4,
`losses.codebook_diversity`), plus the paper's L2 penalty on the feature encoder's output
(Sec. 4.2, weight `feature_penalty`). The Gumbel temperature anneals geometrically from
`gumbel_temperature[0]` to `[1]` over the run's schedule (the paper: 2 -> 0.5 by a factor
0.999995 per update over 400k updates).

The representation is the context network's output on the unmasked waveform, averaged over
the recorded steps. `test_metrics` gives the held-out contrastive loss and accuracy (masks
and distractors fixed by the evaluation's key, quantization without noise) and the codebook
perplexity (the entries in use, G V at most).

Config: `config.wav2vec2` (the encoder's widths, kernels, strides; model_dim, depth,
num_heads, mlp_dim, position_kernel, position_groups; groups G, entries V, codevector_dim,
final_dim; mask_prob, mask_length, distractors K, temperature kappa, diversity_weight alpha,
feature_penalty, gumbel_temperature, dropout).
"""
from typing import Any

import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.errors import UserError
from ssl_jax.methods import (Method, StepOutput, check_number, check_sizes, example_keys)
from ssl_jax.models import transformer
from ssl_jax.models.wav2vec2 import Wav2Vec2Network, encoded_length, num_steps


def span_mask(rng: jax.Array, length: jax.Array, window_steps: int, probability: float,
              span: int) -> jax.Array:
  """One utterance's masked steps [window_steps] (Sec. 3.1): round(p * length) starting steps
  (at least one) drawn without replacement from its `length` recorded steps, each masking
  itself and the span - 1 steps after it, cut at the recording's end."""
  steps = jnp.arange(window_steps)
  recorded = steps < length
  scores = jnp.where(recorded, jax.random.uniform(rng, (window_steps,)), 2.0)
  rank = jnp.argsort(jnp.argsort(scores))
  num_starts = jnp.maximum(jnp.round(probability * length), 1)
  starts = (rank < num_starts) & recorded
  started = jnp.cumsum(starts.astype(jnp.int32))
  before = jnp.concatenate([jnp.zeros((span,), jnp.int32), started])[:window_steps]
  return (started - before > 0) & recorded


def sample_distractors(rng: jax.Array, masked: jax.Array, num_distractors: int) -> jax.Array:
  """For each step of one utterance, `num_distractors` indices [T, K] drawn uniformly (with
  replacement) from its masked steps other than the step itself (Sec. 3.2). Meaningful where
  the step is masked and at least two steps are; 0 elsewhere."""
  window_steps = masked.shape[0]
  count = jnp.sum(masked.astype(jnp.int32))
  order = jnp.argsort(~masked, stable=True)  # the masked steps first, in time order
  own_rank = jnp.cumsum(masked.astype(jnp.int32)) - 1  # a masked step's place among them
  draws = jax.random.uniform(rng, (window_steps, num_distractors))
  picked = jnp.floor(draws * jnp.maximum(count - 1, 1)).astype(jnp.int32)  # 0 .. count - 2
  picked = picked + (picked >= own_rank[:, None])  # skip the step itself
  usable = masked[:, None] & (count >= 2)
  return jnp.where(usable, order[jnp.minimum(picked, window_steps - 1)], 0)


def gumbel_temperature(settings, step: jax.Array, schedule_steps: int) -> jax.Array:
  """tau(step): geometric from gumbel_temperature[0] to [1] over `schedule_steps`, then flat."""
  start, end = settings.gumbel_temperature
  progress = jnp.minimum(step / max(schedule_steps, 1), 1.0)
  return start * (end / start) ** progress


def network(config) -> Wav2Vec2Network:
  """The feature encoder, context network and quantizer that `config.wav2vec2` describes
  (checked)."""
  s = config.wav2vec2
  for name in ("widths", "kernels", "strides"):
    check_sizes(f"config.wav2vec2.{name}", s[name])
  if not len(s.widths) == len(s.kernels) == len(s.strides):
    raise UserError("config.wav2vec2.widths, kernels and strides must have one entry per layer")
  for name in ("model_dim", "depth", "num_heads", "mlp_dim", "position_kernel",
               "position_groups", "groups", "entries", "codevector_dim", "final_dim",
               "mask_length", "distractors"):
    check_number(f"config.wav2vec2.{name}", s[name], minimum=1, integer=True)
  for big, small in (("model_dim", "num_heads"), ("model_dim", "position_groups"),
                     ("codevector_dim", "groups")):
    if s[big] % s[small]:
      raise UserError(f"config.wav2vec2.{big} ({s[big]}) must be a multiple of {small} "
                      f"({s[small]})")
  check_number("config.wav2vec2.mask_prob", s.mask_prob, above=0, maximum=1)
  check_number("config.wav2vec2.temperature", s.temperature, above=0)
  check_number("config.wav2vec2.diversity_weight", s.diversity_weight, minimum=0)
  check_number("config.wav2vec2.feature_penalty", s.feature_penalty, minimum=0)
  check_number("config.wav2vec2.dropout", s.dropout, minimum=0, below=1)
  if len(s.gumbel_temperature) != 2:
    raise UserError("config.wav2vec2.gumbel_temperature must be (start, end), got "
                    f"{tuple(s.gumbel_temperature)}")
  for index, value in enumerate(s.gumbel_temperature):
    check_number(f"config.wav2vec2.gumbel_temperature[{index}]", value, above=0)
  steps = num_steps(config.data.max_length, s.kernels, s.strides)
  if steps < 2:
    raise UserError(f"config.wav2vec2's encoder turns config.data.max_length "
                    f"({config.data.max_length}) samples into {steps} steps: use a longer "
                    "window or fewer or smaller strides (at least 2 steps)")
  return Wav2Vec2Network(
      widths=tuple(s.widths), kernels=tuple(s.kernels), strides=tuple(s.strides),
      model_dim=s.model_dim, depth=s.depth, num_heads=s.num_heads, mlp_dim=s.mlp_dim,
      position_kernel=s.position_kernel, position_groups=s.position_groups, groups=s.groups,
      entries=s.entries, codevector_dim=s.codevector_dim, final_dim=s.final_dim,
      dropout=s.dropout)


def build(config, length) -> Method:
  model = network(config)
  settings = config.wav2vec2
  kernels, strides = tuple(settings.kernels), tuple(settings.strides)

  def masks_and_distractors(keys, lengths, window_steps):
    """Per example: its masked steps [B, T] and distractor indices [B, T, K]."""
    def one(key, steps):
      mask_key, distractor_key = jax.random.split(key)
      masked = span_mask(mask_key, steps, window_steps, settings.mask_prob,
                         settings.mask_length)
      return masked, sample_distractors(distractor_key, masked, settings.distractors)
    return jax.vmap(one)(keys, lengths)

  def objective(params, batch, keys, dropout_rng, temperature, noise_rng, deterministic):
    signal = batch["signal"]
    steps = encoded_length(batch["length"], kernels, strides)
    steps_per_window = num_steps(signal.shape[1], kernels, strides)
    valid = jnp.arange(steps_per_window)[None, :] < steps[:, None]
    masked, distractors = masks_and_distractors(keys, steps, steps_per_window)
    out = model.apply({"params": params}, signal, masked, valid, temperature, noise_rng,
                      deterministic, rngs=None if deterministic else {"dropout": dropout_rng})
    queries = masked & (jnp.sum(masked, axis=1, keepdims=True) >= 2)
    contrastive, accuracy, count = losses.wav2vec2_contrastive(
        out["projected"], out["quantized"], queries, distractors, settings.temperature)
    diversity, perplexity = losses.codebook_diversity(out["logits"], valid)
    penalty = jnp.mean(jnp.square(out["z"]))
    value = (contrastive + settings.diversity_weight * diversity
             + settings.feature_penalty * penalty)
    metrics = {"contrastive_loss": contrastive, "contrastive_accuracy": accuracy,
               "diversity_loss": diversity, "codebook_perplexity": perplexity,
               "feature_penalty": penalty,
               "masked_fraction": jnp.sum(masked) / jnp.maximum(jnp.sum(valid), 1)}
    features = transformer.masked_mean_pool(out["context"], valid)
    return value, metrics, features, count

  def init(rng: jax.Array, batch: dict[str, jax.Array]) -> tuple[Any, Any]:
    signal = batch["signal"]
    steps_per_window = num_steps(signal.shape[1], kernels, strides)
    masked = jnp.zeros((signal.shape[0], steps_per_window), bool)
    return model.init(rng, signal, masked, ~masked, 1.0, rng, True)["params"], {}

  def loss(params, extra, batch, rng, step):
    mask_rng, noise_rng, dropout_rng = jax.random.split(rng, 3)
    temperature = gumbel_temperature(settings, step, length.schedule_steps)
    value, metrics, features, _ = objective(params, batch, example_keys(mask_rng, batch),
                                            dropout_rng, temperature, noise_rng,
                                            deterministic=False)
    return value, StepOutput(extra, {**metrics, "gumbel_temperature": temperature}, features)

  def represent(params, extra, inputs):
    del extra
    context, valid = model.apply(
        {"params": params}, inputs["signal"],
        encoded_length(inputs["length"], kernels, strides), method=Wav2Vec2Network.represent)
    return transformer.masked_mean_pool(context, valid)

  def test_metrics(params, extra, batch, rng):
    """The held-out contrastive task with the noise-free argmax quantizer; each metric is
    weighted by the batch's masked steps (the loss, accuracy) or recorded utterances."""
    del extra
    value, metrics, _, count = objective(params, batch, example_keys(rng, batch), rng, 1.0, None,
                                         deterministic=True)
    utterances = jnp.sum(batch["length"] > 0).astype(jnp.float32)
    return {"wav2vec2_loss": (value * utterances, utterances),
            "contrastive_loss": (metrics["contrastive_loss"] * count, count),
            "contrastive_accuracy": (metrics["contrastive_accuracy"] * count, count),
            "codebook_perplexity": (metrics["codebook_perplexity"] * utterances, utterances)}

  return Method(init=init, loss=loss, represent=represent, test_metrics=test_metrics,
                coupling="the codebook diversity penalty averages the code distribution "
                         "over the batch")
