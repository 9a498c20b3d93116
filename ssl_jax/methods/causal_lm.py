"""GPT-style causal language modelling (Radford, Narasimhan, Salimans, Sutskever 2018,
"Improving Language Understanding by Generative Pre-Training", Sec. 3.1; Radford et al. 2019,
"Language Models are Unsupervised Multitask Learners", Sec. 2).

A decoder-only transformer (`transformer.Decoder`, GPT-2) maximises the likelihood of each
token given the ones before it, L = sum_t log P(u_t | u_<t) (2018, Eq. 1): the logits at
position t are scored against the token at t + 1, over every position whose next token is real
(attention_mask[t + 1] = 1), averaged over those positions of the global batch. Rows are
`[CLS] text [SEP]`: [CLS] serves as beginning-of-text and [SEP] as end-of-text, so the model
also learns where a text ends (GPT-2's <|endoftext|>). The decoder has no segment embedding:
a sentence pair is read as one text with [SEP] between its parts.

The representation is the final hidden states (after GPT-2's final LayerNorm) of the text,
pooled as `pooling` says: "mean" over the real tokens, or "last", the state of the last real
token, the only one that has read the whole text (the position GPT's Sec. 3.2 classifies from).
`test_metrics` gives the summed next-token negative log-likelihood (perplexity) and accuracy
on held-out text; the rng is unused, the forward pass is deterministic. Metrics:
next_token_accuracy (argmax at the positions the loss counts). Dropout draws from the loss's rng.

Config: `config.causal_lm` (pooling), `config.transformer` (the `transformer.Decoder`'s size
and overrides, dropout, dtype), `config.tokenizer.vocab_size`.
"""
from typing import Any

import jax
import jax.numpy as jnp

from ssl_jax import losses, pretrained
from ssl_jax.errors import UserError
from ssl_jax.methods import Method, StepOutput, check_choice
from ssl_jax.models import transformer

POOLINGS = ("mean", "last")


def network(config) -> transformer.Decoder:
  """The GPT-2 decoder that `config` trains (also for sampling and converters)."""
  return transformer.Decoder(vocab_size=config.tokenizer.vocab_size, **config.transformer)


def pool(hidden: jax.Array, attention_mask: jax.Array, pooling: str) -> jax.Array:
  """The sequence representation [B, width]: mean over real tokens, or the last real token."""
  if pooling == "last":
    return transformer.last_token_pool(hidden, attention_mask)
  return transformer.masked_mean_pool(hidden, attention_mask)


def next_token_targets(tokens: jax.Array, attention_mask: jax.Array
                       ) -> tuple[jax.Array, jax.Array]:
  """(targets [B, L - 1], weights [B, L - 1]) for the logits at positions 0 .. L - 2: the
  token that follows each position, counted where it is a real token."""
  return tokens[:, 1:], attention_mask[:, 1:]


def build(config, length) -> Method:
  del length  # No schedule besides the optimizer's.
  check_choice("config.causal_lm.pooling", config.causal_lm.pooling, POOLINGS)
  published = config.tokenizer.get("published_type")
  if published and published not in pretrained.DECODER_TYPES:
    raise UserError(f"config.init_from {config.init_from} is a {published} model; causal_lm "
                    f"continues a decoder ({', '.join(pretrained.DECODER_TYPES)})")
  pooling = config.causal_lm.pooling
  model = network(config)

  def forward(params, inputs, train, dropout_rng=None):
    rngs = {"dropout": dropout_rng} if dropout_rng is not None else {}
    return model.apply({"params": params}, inputs["tokens"], inputs["attention_mask"],
                       train=train, rngs=rngs)

  def init(rng: jax.Array, batch: dict[str, jax.Array]) -> tuple[Any, Any]:
    params = model.init(rng, batch["tokens"], batch["attention_mask"])
    return params["params"], {}  # No state besides the parameters.

  def loss(params, extra, batch, rng, step):
    del step
    output = forward(params, batch, True, rng)
    targets, weights = next_token_targets(batch["tokens"], batch["attention_mask"])
    logits = output.logits[:, :-1]
    value = losses.masked_cross_entropy(logits, targets, weights)
    metrics = {"next_token_accuracy": losses.masked_accuracy(logits, targets, weights)}
    features = pool(output.hidden, batch["attention_mask"], pooling)
    return value, StepOutput(extra, metrics, features, weight=jnp.sum(weights))

  def represent(params, extra, inputs):
    del extra
    return pool(forward(params, inputs, False).hidden, inputs["attention_mask"], pooling)

  def test_metrics(params, extra, batch, rng):
    del extra, rng  # Deterministic: no corruption, no dropout.
    output = forward(params, batch, False)
    targets, weights = next_token_targets(batch["tokens"], batch["attention_mask"])
    nll, correct, count = losses.masked_token_sums(output.logits[:, :-1], targets, weights)
    return {"nll": (nll, count), "next_token_accuracy": (correct, count)}

  # A mean over the predicted tokens of every row: microbatches accumulate exactly, weighted
  # by their token counts.
  def published_params(fresh: dict) -> dict:
    """The step-0 parameters of `config.init_from`: the published GPT-2's."""
    return pretrained.merged(fresh, pretrained.load(config.tokenizer.published_folder).params)

  return Method(init=init, loss=loss, represent=represent, test_metrics=test_metrics,
                coupling="",
                published_params=published_params if config.get("init_from") else None)
