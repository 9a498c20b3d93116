"""The language objectives: BERT's masked LM with NSP (`methods.mlm`) and GPT's causal LM
(`methods.causal_lm`), their shared token losses, and the inference helpers (`text_inference`).

Losses and metrics are checked against NumPy on the logits the networks output, the 80/10/10
masking by its statistics, a training step on 8 devices against 1, and sampling against
decoding done step by step here. Networks are 32 wide and one block deep, texts 16 tokens long.
"""
import jax
import ml_collections
import numpy as np
import pytest

from configs import common
from ssl_jax import config_lib, losses, text_inference
from ssl_jax.data.tokenizer import CLS_ID, MASK_ID, PAD_ID, SEP_ID
from ssl_jax.errors import UserError
from ssl_jax.methods import causal_lm, mlm
from tiny_configs import assert_sharded_equals_single_device, override, steps_on_meshes

VOCAB, LENGTH_TOKENS, BATCH = 60, 16, 16
NUM_SPECIAL = mlm.NUM_SPECIAL
LENGTH = config_lib.TrainingLength(steps_per_epoch=10, total_steps=3, schedule_steps=3)


def text_config(method: str, **dotted) -> ml_collections.ConfigDict:
  """A text run of `method` with a 32-wide, 1-block transformer over 16-token rows."""
  config = common.base_config()
  config.method = method
  config.data.modality = "text"
  config.data.max_length = LENGTH_TOKENS
  config.tokenizer = ml_collections.ConfigDict(dict(vocab_size=VOCAB))
  config.transformer = ml_collections.ConfigDict(dict(
      size="tiny", width=32, depth=1, num_heads=2, mlp_dim=64, max_length=LENGTH_TOKENS,
      dropout=0.0, dtype="float32"))
  config.mlm = ml_collections.ConfigDict(dict(
      select_rate=0.15, mask_rate=0.8, random_rate=0.1, nsp=True, nsp_weight=1.0,
      pooling="mean"))
  config.causal_lm = ml_collections.ConfigDict(dict(pooling="mean"))
  config.batch_size = BATCH
  config.total_steps = LENGTH.total_steps
  config.online_probe.enabled = False
  config.optimizer.update(name="adamw", lr=1e-3, lr_scaling="none", weight_decay=0.0,
                          warmup_steps=0)
  return override(config, **dotted)


def text_batch(seed: int, batch_size: int = BATCH) -> dict[str, np.ndarray]:
  """Sentence pairs `[CLS] A [SEP] B [SEP] [PAD]...` of random lengths, as the pipeline gives."""
  rng = np.random.default_rng(seed)
  tokens = np.zeros((batch_size, LENGTH_TOKENS), np.int32)
  segment_ids = np.zeros_like(tokens)
  for row in range(batch_size):
    length_a, length_b = rng.integers(1, 7, size=2)
    a = rng.integers(NUM_SPECIAL, VOCAB, size=length_a)
    b = rng.integers(NUM_SPECIAL, VOCAB, size=length_b)
    text = [CLS_ID, *a, SEP_ID, *b, SEP_ID]
    tokens[row, :len(text)] = text
    segment_ids[row, length_a + 2:len(text)] = 1
  return {"tokens": tokens, "attention_mask": (tokens != PAD_ID).astype(np.int32),
          "segment_ids": segment_ids,
          "next_sentence": rng.integers(0, 2, size=batch_size).astype(np.int32)}


def numpy_log_softmax(logits: np.ndarray) -> np.ndarray:
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(axis=-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def numpy_token_terms(logits, targets, weights) -> tuple[float, float, float]:
  """(summed cross-entropy, correct argmax count, count) over the positions `weights` selects."""
  weights = np.asarray(weights, bool)
  log_probs = numpy_log_softmax(logits)
  nll = -np.take_along_axis(log_probs, np.asarray(targets)[..., None], axis=-1)[..., 0]
  correct = np.argmax(logits, axis=-1) == targets
  return float(nll[weights].sum()), float(correct[weights].sum()), float(weights.sum())


def initialised(module, config, batch):
  method = module.build(config, LENGTH)
  params, extra = method.init(jax.random.PRNGKey(0), batch)
  return method, params, extra


# ---------------------------------------------------------------------------------------------
# Masking, losses and metrics.
# ---------------------------------------------------------------------------------------------


def test_masking_selects_15_percent_of_real_words_and_replaces_them_80_10_10():
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, VOCAB, size=(1024, 320)).astype(np.int32)
  attention_mask = (rng.random(tokens.shape) < 0.8).astype(np.int32)
  corrupted, selected = jax.jit(mlm.mask_tokens, static_argnums=(3, 4, 5, 6))(
      jax.random.split(jax.random.PRNGKey(1), len(tokens)), tokens, attention_mask, VOCAB, 0.15,
      0.8, 0.1)
  corrupted, selected = np.asarray(corrupted), np.asarray(selected)
  candidates = (tokens >= NUM_SPECIAL) & (attention_mask == 1)
  assert candidates.sum() >= 200_000
  assert not selected[~candidates].any(), "a special token or padding was selected"
  np.testing.assert_array_equal(corrupted[~selected], tokens[~selected])
  assert abs(selected.sum() / candidates.sum() - 0.15) < 0.005
  masked = selected & (corrupted == MASK_ID)
  replaced = selected & (corrupted != MASK_ID) & (corrupted != tokens)
  kept = selected & (corrupted == tokens)
  # A random replacement equals the original with probability 1 / 55: 0.1 * 54/55 replaced.
  expected = {"masked": (masked, 0.8), "replaced": (replaced, 0.1 * 54 / 55),
              "kept": (kept, 0.1 + 0.1 / 55)}
  for name, (where, fraction) in expected.items():
    assert abs(where.sum() / selected.sum() - fraction) < 0.015, name
  random_ids = corrupted[selected & (corrupted != MASK_ID)]
  assert random_ids.min() >= NUM_SPECIAL and random_ids.max() < VOCAB


def test_masked_token_losses_match_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(4, 7, 6)).astype(np.float32)
  targets = rng.integers(0, 6, size=(4, 7))
  weights = rng.random((4, 7)) < 0.4
  nll, correct, count = numpy_token_terms(logits, targets, weights)
  sums = losses.masked_token_sums(logits, targets, weights)
  np.testing.assert_allclose(sums, (nll, correct, count), rtol=1e-5)
  np.testing.assert_allclose(losses.masked_cross_entropy(logits, targets, weights), nll / count,
                             rtol=1e-5)
  np.testing.assert_allclose(losses.masked_accuracy(logits, targets, weights), correct / count)
  nothing = np.zeros_like(weights)
  assert float(losses.masked_cross_entropy(logits, targets, nothing)) == 0.0


def test_mlm_loss_metrics_and_test_metrics_match_numpy():
  """The loss's masking is `mask_tokens` under the first half of its rng split over the rows;
  with dropout 0 the logits of the corrupted text are those of the network in eval mode."""
  config = text_config("mlm", **{"mlm.nsp_weight": 0.5, "mlm.select_rate": 0.3})
  batch = text_batch(1)
  method, params, extra = initialised(mlm, config, batch)
  rng = jax.random.PRNGKey(3)
  value, output = method.loss(params, extra, batch, rng, 0)
  row_keys = jax.random.split(jax.random.split(rng)[0], BATCH)
  corrupted, selected = mlm.mask_tokens(row_keys, batch["tokens"],
                                        batch["attention_mask"], VOCAB, 0.3, 0.8, 0.1)
  assert np.asarray(selected).sum() > 0
  out, nsp_logits = mlm.network(config).apply(
      {"params": params}, corrupted, batch["segment_ids"], batch["attention_mask"])
  nll, correct, count = numpy_token_terms(out.logits, batch["tokens"], selected)
  nsp_log_probs = numpy_log_softmax(nsp_logits)
  nsp_loss = -np.mean(nsp_log_probs[np.arange(BATCH), batch["next_sentence"]])
  metrics = output.metrics
  np.testing.assert_allclose(metrics["mlm_loss"], nll / count, rtol=1e-5)
  np.testing.assert_allclose(metrics["masked_token_accuracy"], correct / count)
  np.testing.assert_allclose(metrics["nsp_loss"], nsp_loss, rtol=1e-5)
  np.testing.assert_allclose(metrics["nsp_accuracy"],
                             np.mean(np.argmax(nsp_logits, -1) == batch["next_sentence"]))
  np.testing.assert_allclose(value, nll / count + 0.5 * nsp_loss, rtol=1e-5)
  candidates = (batch["tokens"] >= NUM_SPECIAL).sum()
  np.testing.assert_allclose(metrics["selected_fraction"], count / candidates, rtol=1e-6)
  assert output.features.shape == (BATCH, 32)

  held_out = method.test_metrics(params, extra, batch, jax.random.split(rng)[0])
  np.testing.assert_allclose(held_out["nll"], (nll, count), rtol=1e-5)
  np.testing.assert_allclose(held_out["masked_token_accuracy"], (correct, count))

  without_nsp = mlm.build(override(config, **{"mlm.nsp": False}), LENGTH)
  value, output = without_nsp.loss(params, extra, batch, rng, 0)
  np.testing.assert_allclose(value, nll / count, rtol=1e-5)
  assert "nsp_loss" not in output.metrics


def test_causal_lm_loss_and_metrics_match_numpy_with_padding_excluded():
  config = text_config("causal_lm")
  batch = text_batch(2)
  method, params, extra = initialised(causal_lm, config, batch)
  value, output = method.loss(params, extra, batch, jax.random.PRNGKey(1), 0)
  logits = causal_lm.network(config).apply({"params": params}, batch["tokens"],
                                           batch["attention_mask"]).logits
  nll, correct, count = numpy_token_terms(np.asarray(logits)[:, :-1], batch["tokens"][:, 1:],
                                          batch["attention_mask"][:, 1:])
  assert count == batch["attention_mask"].sum() - BATCH  # every real token but the [CLS]
  np.testing.assert_allclose(value, nll / count, rtol=1e-5)
  np.testing.assert_allclose(output.metrics["next_token_accuracy"], correct / count)
  held_out = method.test_metrics(params, extra, batch, jax.random.PRNGKey(9))
  np.testing.assert_allclose(held_out["nll"], (nll, count), rtol=1e-5)
  np.testing.assert_allclose(held_out["next_token_accuracy"], (correct, count))


def test_causal_lm_earlier_positions_ignore_a_later_token():
  """Changing token t leaves the logits before t and the "last" pooling of the prefix before t
  unchanged; the representation of the whole text does change."""
  config = text_config("causal_lm", **{"causal_lm.pooling": "last"})
  batch = text_batch(3, batch_size=2)
  method, params, extra = initialised(causal_lm, config, batch)
  decoder = causal_lm.network(config)
  changed = {**batch, "tokens": batch["tokens"].copy()}
  t = 3
  changed["tokens"][:, t] = (changed["tokens"][:, t] + 1 - NUM_SPECIAL) % (VOCAB - NUM_SPECIAL) \
      + NUM_SPECIAL
  before, after = (np.asarray(decoder.apply({"params": params}, b["tokens"],
                                            b["attention_mask"]).logits) for b in (batch, changed))
  np.testing.assert_allclose(after[:, :t], before[:, :t], rtol=1e-6, atol=1e-6)
  assert not np.allclose(after[:, t], before[:, t])
  prefix = {key: batch[key] for key in ("tokens", "attention_mask", "segment_ids")}
  prefix["attention_mask"] = prefix["attention_mask"] * (np.arange(LENGTH_TOKENS) < t)
  changed_prefix = {**prefix, "tokens": changed["tokens"]}
  np.testing.assert_allclose(method.represent(params, extra, changed_prefix),
                             method.represent(params, extra, prefix), rtol=1e-6, atol=1e-6)
  last = np.asarray(method.represent(params, extra, batch))
  np.testing.assert_allclose(
      last, np.asarray(decoder.apply({"params": params}, batch["tokens"],
                                     batch["attention_mask"]).hidden)[
          np.arange(2), batch["attention_mask"].sum(1) - 1], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# The trainer's step on 8 devices.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["mlm", "causal_lm"])
def test_sharded_step_equals_single_device_step(method):
  """SGD rather than AdamW: the attention key bias has a true gradient of 0 (a softmax does
  not change when every logit of a query moves by the same q.b), and Adam would turn the
  rounding noise of that 0, which differs between 8 and 1 devices, into full-size steps."""
  config = text_config(method, **{"optimizer.name": "sgd", "optimizer.lr": 0.1,
                                  "transformer.dropout": 0.1})
  results = steps_on_meshes(config, [text_batch(seed) for seed in range(3)], (LENGTH_TOKENS,),
                            LENGTH)
  assert_sharded_equals_single_device(results)


# ---------------------------------------------------------------------------------------------
# Inference: filling in masks, sampling.
# ---------------------------------------------------------------------------------------------


def test_top_k_fill_proposes_the_most_probable_non_special_tokens():
  config = text_config("mlm")
  batch = text_batch(4, batch_size=2)
  _, params, _ = initialised(mlm, config, batch)
  tokens = batch["tokens"].copy()
  tokens[0, 1], tokens[1, 2] = MASK_ID, MASK_ID
  network = mlm.network(config)
  ids, probs = text_inference.top_k_fill(network, params, tokens, batch["attention_mask"],
                                         batch["segment_ids"], k=4)
  assert ids.shape == probs.shape == (2, 4)
  out, _ = network.apply({"params": params}, tokens, batch["segment_ids"],
                         batch["attention_mask"])
  for row, (i, j) in enumerate([(0, 1), (1, 2)]):
    expected = np.exp(numpy_log_softmax(out.logits[i, j]))
    ranked = [token for token in np.argsort(-expected) if token >= NUM_SPECIAL][:4]
    np.testing.assert_array_equal(ids[row], ranked)
    np.testing.assert_allclose(probs[row], expected[ranked], rtol=1e-5)
  assert ids.min() >= NUM_SPECIAL


@pytest.fixture(scope="module")
def decoder_and_params():
  """An untrained decoder whose parameters get noise of std 0.3: at the 0.02 init every
  next-token distribution is nearly uniform, so greedy and top-k choices would be decided by
  rounding."""
  config = text_config("causal_lm")
  _, params, _ = initialised(causal_lm, config, text_batch(5, batch_size=2))
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  params = jax.tree.unflatten(tree, [leaf + 0.3 * jax.random.normal(key, leaf.shape)
                                     for leaf, key in zip(leaves, keys)])
  return causal_lm.network(config), params


def test_greedy_sampling_equals_step_by_step_argmax(decoder_and_params):
  decoder, params = decoder_and_params
  prompt = [CLS_ID, 17, 23]
  sampled = text_inference.sample(decoder, params, prompt, jax.random.PRNGKey(0),
                                  max_new_tokens=6, temperature=0.0)
  expected = list(prompt)
  for _ in range(6):
    # Filled up to the full length with an arbitrary word, so every step has one shape: the
    # causal mask keeps it from the position read.
    tokens = np.full((1, LENGTH_TOKENS), 7, np.int32)
    tokens[0, :len(expected)] = expected
    logits = decoder.apply({"params": params}, tokens, np.ones_like(tokens)).logits
    expected.append(int(np.argmax(logits[0, len(expected) - 1])))
    if expected[-1] == SEP_ID:
      break
  np.testing.assert_array_equal(sampled, expected)


def test_sampling_is_deterministic_per_rng_and_stays_in_the_top_k(decoder_and_params):
  decoder, params = decoder_and_params
  prompt = [CLS_ID, 9]
  draw = lambda seed, k: text_inference.sample(decoder, params, prompt, jax.random.PRNGKey(seed),
                                               max_new_tokens=20, temperature=1.5, top_k=k)
  first = draw(0, 3)
  np.testing.assert_array_equal(first, draw(0, 3))
  assert len(first) <= LENGTH_TOKENS and (len(first) == LENGTH_TOKENS or first[-1] == SEP_ID)

  def in_top_3(sampled):
    tokens = np.asarray([sampled], np.int32)
    logits = np.asarray(decoder.apply({"params": params}, tokens, np.ones_like(tokens)).logits)
    return [sampled[position] in np.argsort(-logits[0, position - 1])[:3]
            for position in range(len(prompt), len(sampled))]

  for sampled in (first, draw(1, 3), draw(2, 3)):
    assert all(in_top_3(sampled)), sampled
  assert not all(in_top_3(draw(0, 0))), "without top_k the check above would be vacuous"


# ---------------------------------------------------------------------------------------------
# Config checks.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method, dotted", [
    ("mlm", {"mlm.select_rate": 1.5}),
    ("mlm", {"mlm.mask_rate": -0.1}),
    ("mlm", {"mlm.mask_rate": 0.95, "mlm.random_rate": 0.1}),
    ("mlm", {"mlm.pooling": "max"}),
    ("causal_lm", {"causal_lm.pooling": "cls"}),
])
def test_bad_config_values_are_user_errors(method, dotted):
  module = {"mlm": mlm, "causal_lm": causal_lm}[method]
  with pytest.raises(UserError):
    module.build(text_config(method, **dotted), LENGTH)
