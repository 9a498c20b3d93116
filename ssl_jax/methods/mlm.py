"""BERT's masked language model with next-sentence prediction (Devlin, Chang, Lee, Toutanova
2019, "BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding").

Task #1, masked LM (Sec. 3.1): each real, non-special token is selected independently with
probability `select_rate` (the paper's 15%); a selected token becomes [MASK] with probability
`mask_rate` (80%), a uniformly random non-special token with probability `random_rate` (10%),
and stays unchanged otherwise (10%), so the encoder cannot tell which tokens it will be scored
on and must keep a contextual representation of every token (Appendix C.2). The loss is the
cross-entropy of the original token at the selected positions only, averaged over the selected
positions of the global batch (`losses.masked_cross_entropy`). The paper selects exactly 15% of
each sequence's positions; here each token is a coin flip, as in Hugging Face's
`DataCollatorForLanguageModeling`, which gives the same rate in expectation.

Task #2, next-sentence prediction (Sec. 3.1): for pairs `[CLS] A [SEP] B [SEP]`, a linear
classifier (`nsp`, BERT's `cls.seq_relationship`) on the pooler output (tanh of a dense layer on
the [CLS] state) says whether B followed A (`batch["next_sentence"]` 1) or is a random text
(0); its cross-entropy, weighted by `nsp_weight`, is added when `nsp` is on. The head is part of
the network whether or not NSP is on, so one parameter layout loads every BERT checkpoint; with
NSP off it gets no gradient.

The representation is the final hidden states of the uncorrupted text, pooled as `pooling` says:
"mean" over the real tokens (`transformer.masked_mean_pool`) or "cls" (the [CLS] state,
`transformer.cls_pool`). The online probe sees the same pooling of the corrupted text, from the
loss's forward pass. `test_metrics` scores held-out text under a masking fixed by its rng:
masked-token accuracy and the summed negative log-likelihood (perplexity) of the selected tokens.

Metrics: mlm_loss, masked_token_accuracy (at the selected positions), selected_fraction (of the
maskable tokens, ~select_rate), and with NSP nsp_loss and nsp_accuracy. The masking of each
row is drawn from its own key (`methods.example_keys`: the trainer's per-example keys, else
the first half of the loss's rng split over the rows) and dropout from the second half.

With `max_predictions` set, a row keeps at most that many selections and the MLM head scores
only those positions (BERT's `max_predictions_per_seq`; see `mask_tokens`).

Config: `config.mlm` (select_rate, mask_rate, random_rate, nsp, nsp_weight, pooling, and the
optional max_predictions),
`config.transformer` (the `transformer.Encoder`'s size and overrides, dropout, dtype),
`config.tokenizer.vocab_size`.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax import pretrained
from ssl_jax.data.tokenizer import SPECIAL_TOKENS, SpecialIds, special_ids
from ssl_jax.errors import UserError
from ssl_jax.methods import Method, StepOutput, check_choice, check_number, example_keys
from ssl_jax.models import transformer

NUM_SPECIAL = len(SPECIAL_TOKENS)  # ids below this are [PAD] [UNK] [CLS] [SEP] [MASK]
DEFAULT_SPECIALS = SpecialIds()  # the fixed ids of the vocabularies learned here
POOLINGS = ("mean", "cls")


class PreTrainingModel(nn.Module):
  """BERT for pre-training (Hugging Face's `BertForPreTraining`): the encoder with its MLM head
  and pooler, and the next-sentence classifier on the pooled [CLS] feature.

  Parameters: {"encoder": the `transformer.Encoder`'s, "nsp": {"kernel" [width, 2], "bias" [2]}};
  an encoder without a pooler (DistilBERT, RoBERTa, continued from `config.init_from`) has no
  next-sentence head.
  """
  encoder: transformer.Encoder

  @nn.compact
  def __call__(self, tokens, segment_ids=None, attention_mask=None, train: bool = False,
               positions=None) -> tuple[transformer.TransformerOutput, jax.Array | None]:
    """The encoder's output (MLM logits at `positions` [batch, P] only, when given) and the
    next-sentence logits [batch, 2] (float32; class 1 = "B follows A"), None without a
    pooler."""
    output = self.encoder(tokens, segment_ids, attention_mask, train=train, positions=positions)
    if output.pooled is None:
      return output, None
    nsp_logits = nn.Dense(2, kernel_init=nn.initializers.normal(stddev=0.02), name="nsp")(
        output.pooled)
    return output, nsp_logits.astype(jnp.float32)


def network(config) -> PreTrainingModel:
  """The BERT pre-training network that `config` trains (also for inference and converters)."""
  return PreTrainingModel(transformer.Encoder(vocab_size=config.tokenizer.vocab_size,
                                              **config.transformer))


def maskable(tokens: jax.Array, attention_mask: jax.Array,
             excluded: tuple[int, ...] = DEFAULT_SPECIALS.excluded) -> jax.Array:
  """Where a token may be selected for prediction [B, L] bool: real words, not special tokens
  ([CLS], [SEP], ...; the vocabulary's `excluded` ids) nor padding."""
  return ~jnp.isin(tokens, jnp.asarray(excluded, tokens.dtype)) & (attention_mask > 0)


def random_words(key: jax.Array, shape: tuple[int, ...], vocab_size: int,
                 excluded: tuple[int, ...], dtype) -> jax.Array:
  """Ids drawn uniformly from the vocabulary without the `excluded` (special) ids: a draw r
  from [0, vocab_size - len(excluded)) becomes the r-th id that is not excluded, shifting past
  each excluded id (sorted) at or below it. With this module's specials (0-4) it is
  randint(NUM_SPECIAL, vocab_size); for BERT's vocabulary it skips [PAD] [UNK] [CLS] [SEP]
  [MASK] wherever they sit."""
  ids = jax.random.randint(key, shape, 0, vocab_size - len(excluded), dtype=dtype)
  for special in sorted(excluded):
    ids = ids + (ids >= special).astype(dtype)
  return ids


def mask_tokens(keys: jax.Array, tokens: jax.Array, attention_mask: jax.Array, vocab_size: int,
                select_rate: float, mask_rate: float, random_rate: float,
                max_predictions: int | None = None,
                specials: SpecialIds = DEFAULT_SPECIALS) -> tuple[jax.Array, jax.Array]:
  """BERT's masked-LM corruption (Devlin et al. 2019, Sec. 3.1, Task #1; Appendix C.2).

  Each token with attention_mask 1 and a non-special id (not in `specials.excluded`; ids
  below NUM_SPECIAL in the vocabularies learned here) is selected with probability
  `select_rate`; a selected token becomes [MASK] (`specials.mask`) with probability
  `mask_rate`, a uniformly random non-special id (`random_words`) with probability
  `random_rate`, and is kept otherwise. Special tokens and padding are never selected. With `max_predictions` (BERT's
  `max_predictions_per_seq`), a row keeps at most that many selections, those with the smallest
  selection draws, so the cap drops a uniformly random subset and no position is favoured.

  `keys` holds one PRNG key per row [B] (`methods.example_keys`): a row's corruption depends
  on its key alone, not on the batch it is in. Returns (corrupted tokens [B, L] int32,
  selected [B, L] bool).
  """
  def row_draws(key):
    select_key, action_key, random_key = jax.random.split(key, 3)
    length = tokens.shape[1]
    return (jax.random.uniform(select_key, (length,)), jax.random.uniform(action_key, (length,)),
            random_words(random_key, (length,), vocab_size, specials.excluded, tokens.dtype))

  coin, action, random_ids = jax.vmap(row_draws)(keys)
  selected = maskable(tokens, attention_mask, specials.excluded) & (coin < select_rate)
  if max_predictions is not None and max_predictions < tokens.shape[1]:
    kept_draws, _ = jax.lax.top_k(jnp.where(selected, -coin, -jnp.inf), max_predictions)
    selected &= coin <= -kept_draws[:, -1:]
  to_mask = selected & (action < mask_rate)
  to_random = selected & (action >= mask_rate) & (action < mask_rate + random_rate)
  corrupted = jnp.where(to_mask, specials.mask, jnp.where(to_random, random_ids, tokens))
  return corrupted.astype(tokens.dtype), selected


def prediction_positions(selected: jax.Array, max_predictions: int | None
                         ) -> tuple[jax.Array | None, jax.Array]:
  """(positions [B, P], weights [B, P]): the selected positions of each row first (in order),
  padded with unselected ones of weight 0, P = `max_predictions`; (None, selected) without a
  cap, where the head scores every position."""
  if max_predictions is None or max_predictions >= selected.shape[1]:
    return None, selected
  positions = jnp.argsort(~selected, axis=1, stable=True)[:, :max_predictions]
  return positions, jnp.take_along_axis(selected, positions, axis=1)


def gather_targets(tokens: jax.Array, positions: jax.Array | None) -> jax.Array:
  """The original tokens at `positions` (all tokens when None)."""
  return tokens if positions is None else jnp.take_along_axis(tokens, positions, axis=1)


def pool(hidden: jax.Array, attention_mask: jax.Array, pooling: str) -> jax.Array:
  """The sequence representation [B, width]: mean over real tokens, or the [CLS] state."""
  if pooling == "cls":
    return transformer.cls_pool(hidden)
  return transformer.masked_mean_pool(hidden, attention_mask)


def _check(config) -> None:
  """Build-time checks of `config.mlm` and the vocabulary."""
  settings = config.mlm
  for name in ("select_rate", "mask_rate", "random_rate"):  # probabilities
    check_number(f"config.mlm.{name}", settings[name], minimum=0, maximum=1)
  if settings.mask_rate + settings.random_rate > 1.0:
    raise UserError(f"config.mlm.mask_rate + config.mlm.random_rate must be at most 1 (the "
                    f"rest stay unchanged), got {settings.mask_rate} + {settings.random_rate}")
  check_choice("config.mlm.nsp", settings.nsp, (True, False))
  check_number("config.mlm.nsp_weight", settings.nsp_weight, minimum=0)
  check_choice("config.mlm.pooling", settings.pooling, POOLINGS)
  if settings.get("max_predictions") is not None:
    check_number("config.mlm.max_predictions", settings.max_predictions, minimum=1,
                 integer=True)
  specials = special_ids(config)
  if config.tokenizer.vocab_size <= len(specials.excluded):
    raise UserError(f"config.tokenizer.vocab_size {config.tokenizer.vocab_size} leaves no room "
                    f"beyond the {len(specials.excluded)} special tokens")
  published = config.tokenizer.get("published_type")
  if published:
    if published not in pretrained.ENCODER_TYPES:
      raise UserError(f"config.init_from {config.init_from} is a {published} model; mlm "
                      f"continues an encoder ({', '.join(pretrained.ENCODER_TYPES)})")
    if specials.mask is None:
      raise UserError(f"config.init_from {config.init_from}: its tokenizer has no mask token")
  if settings.nsp and (not config.transformer.get("use_pooler", True)
                       or config.transformer.get("segment_types", 2) < 2):
    raise UserError("config.mlm.nsp needs a pooler and two segment types, which "
                    f"{config.get('init_from') or 'this network'} lacks: set "
                    "--config.mlm.nsp=False --config.data.sentence_pairs=False")


def build(config, length) -> Method:
  del length  # No schedule besides the optimizer's.
  _check(config)
  settings = config.mlm
  vocab_size = config.tokenizer.vocab_size
  specials = special_ids(config)
  model = network(config)

  max_predictions = settings.get("max_predictions")

  def corrupt(rng, batch):
    """(corrupted tokens, positions to score or None, their weights, their original tokens)."""
    corrupted, selected = mask_tokens(
        example_keys(rng, batch), batch["tokens"], batch["attention_mask"], vocab_size,
        settings.select_rate, settings.mask_rate, settings.random_rate, max_predictions, specials)
    positions, weights = prediction_positions(selected, max_predictions)
    return corrupted, positions, weights, gather_targets(batch["tokens"], positions)

  def forward(params, tokens, batch, train, dropout_rng=None, positions=None):
    rngs = {"dropout": dropout_rng} if dropout_rng is not None else {}
    return model.apply({"params": params}, tokens, batch["segment_ids"],
                       batch["attention_mask"], train=train, positions=positions, rngs=rngs)

  def init(rng: jax.Array, batch: dict[str, jax.Array]) -> tuple[Any, Any]:
    params = model.init(rng, batch["tokens"], batch["segment_ids"], batch["attention_mask"])
    return params["params"], {}  # No state besides the parameters.

  def loss(params, extra, batch, rng, step):
    del step
    mask_rng, dropout_rng = jax.random.split(rng)
    corrupted, positions, weights, targets = corrupt(mask_rng, batch)
    output, nsp_logits = forward(params, corrupted, batch, True, dropout_rng, positions)
    mlm_loss = losses.masked_cross_entropy(output.logits, targets, weights)
    candidates = maskable(batch["tokens"], batch["attention_mask"], specials.excluded)
    metrics = {"mlm_loss": mlm_loss,
               "masked_token_accuracy": losses.masked_accuracy(output.logits, targets, weights),
               "selected_fraction": jnp.sum(weights) / jnp.maximum(jnp.sum(candidates), 1)}
    value = mlm_loss
    if settings.nsp:
      nsp_loss = jnp.mean(losses.softmax_cross_entropy(nsp_logits, batch["next_sentence"]))
      metrics["nsp_loss"] = nsp_loss
      metrics["nsp_accuracy"] = losses.top1_accuracy(nsp_logits, batch["next_sentence"])
      value = value + settings.nsp_weight * nsp_loss
    features = pool(output.hidden, batch["attention_mask"], settings.pooling)
    return value, StepOutput(extra, metrics, features, weight=jnp.sum(weights))

  def represent(params, extra, inputs):
    del extra
    output, _ = forward(params, inputs["tokens"], inputs, False)
    return pool(output.hidden, inputs["attention_mask"], settings.pooling)

  def test_metrics(params, extra, batch, rng):
    del extra
    corrupted, positions, weights, targets = corrupt(rng, batch)
    output, _ = forward(params, corrupted, batch, False, positions=positions)
    nll, correct, count = losses.masked_token_sums(output.logits, targets, weights)
    return {"masked_token_accuracy": (correct, count), "nll": (nll, count)}

  # The MLM loss is a mean over the predicted tokens (weighted by their count when
  # microbatches accumulate); NSP adds a mean over sentence pairs, which one weight per
  # microbatch cannot combine exactly with it.
  coupling = ("with mlm.nsp its loss adds a mean over sentence pairs to the mean over "
              "predicted tokens, which microbatches cannot weight exactly (set mlm.nsp=False)"
              if settings.nsp else "")
  def published_params(fresh: dict) -> dict:
    """The step-0 parameters of `config.init_from`: the published encoder's (and its
    next-sentence head's), with the parts it lacks (a `*Model`'s masked-LM head, a
    `*ForMaskedLM`'s next-sentence head) kept from `fresh`, as Hugging Face initialises them."""
    published = pretrained.load(config.tokenizer.published_folder)
    return pretrained.merged(fresh, {"encoder": published.params, "nsp": published.nsp_params})

  return Method(init=init, loss=loss, represent=represent, test_metrics=test_metrics,
                coupling=coupling,
                published_params=published_params if config.get("init_from") else None)
