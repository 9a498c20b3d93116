"""BERT / GPT-2 transformers: published parameter counts, masks, tied heads, pooling, dropout."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.data.tokenizer import CLS_ID, PAD_ID, SEP_ID
from ssl_jax.models.transformer import Decoder, Encoder, cls_pool, masked_mean_pool

VOCAB = 50
TINY = dict(vocab_size=VOCAB, size="tiny", max_length=16)


def count(params):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


def random_variables(model, tokens, seed=0):
  """Variables with `init`'s structure (traced under eval_shape) filled with NumPy normals:
  running the initialisers for real would compile each of them, seconds on a small CPU."""
  rng = np.random.default_rng(seed)
  abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens)
  return jax.tree.map(lambda x: jnp.asarray(rng.normal(0, 0.2, x.shape), x.dtype), abstract)


def token_batch(shape, seed=0):
  return np.random.default_rng(seed).integers(5, VOCAB, shape).astype(np.int32)


def test_bert_base_parameter_count_matches_published():
  params = jax.eval_shape(Encoder(vocab_size=30522, size="bert_base").init,
                          jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"]
  # Hugging Face bert-base-uncased BertModel (embeddings, 12 layers, pooler): 109,482,240.
  trunk = {k: v for k, v in params.items() if not k.startswith("mlm_")}
  assert count(trunk) == 109_482_240
  # BertForPreTraining is 110,106,428; its NSP classifier (768 * 2 + 2) belongs to the method.
  assert count(params) == 110_106_428 - (768 * 2 + 2)
  assert params["embeddings"]["position_embed"].shape == (512, 768)
  assert params["segment_embed"]["embedding"].shape == (2, 768)


def test_gpt2_parameter_count_matches_published():
  params = jax.eval_shape(Decoder(vocab_size=50257, size="gpt2").init,
                          jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"]
  assert count(params) == 124_439_808  # Hugging Face gpt2 (GPT2LMHeadModel, lm_head tied)
  assert params["embeddings"]["position_embed"].shape == (1024, 768)


def test_larger_presets_have_published_shapes():
  for model, width, depth in [(Encoder(vocab_size=30522, size="bert_large"), 1024, 24),
                              (Decoder(vocab_size=50257, size="gpt2_medium"), 1024, 24)]:
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                            jnp.zeros((1, 8), jnp.int32))["params"]
    assert sum(k.startswith("block_") for k in params) == depth
    assert params["block_0"]["mlp"]["fc1"]["kernel"].shape == (width, 4096)
    assert params["block_0"]["attention"]["query"]["kernel"].shape == (width, 16, 64)
  # bert-large-uncased BertModel: 335,141,888.
  trunk = {k: v for k, v in jax.eval_shape(
      Encoder(vocab_size=30522, size="bert_large").init, jax.random.PRNGKey(0),
      jnp.zeros((1, 8), jnp.int32))["params"].items() if not k.startswith("mlm_")}
  assert count(trunk) == 335_141_888


def test_output_shapes_and_dtypes():
  tokens = token_batch((3, 10))
  encoder, decoder = Encoder(**TINY), Decoder(**TINY)
  out = encoder.apply(random_variables(encoder, tokens), tokens)
  assert out.hidden.shape == (3, 10, 64) and out.logits.shape == (3, 10, VOCAB)
  assert out.pooled.shape == (3, 64)
  out = decoder.apply(random_variables(decoder, tokens), tokens)
  assert out.hidden.shape == (3, 10, 64) and out.logits.shape == (3, 10, VOCAB)
  assert out.pooled is None
  for array in (out.hidden, out.logits):
    assert array.dtype == jnp.float32 and np.all(np.isfinite(array))


def test_bfloat16_activations_keep_float32_params_and_outputs():
  tokens = token_batch((2, 6))
  decoder = Decoder(dtype="bfloat16", **TINY)
  variables = random_variables(decoder, tokens)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
  out = jax.jit(decoder.apply)(variables, tokens)
  reference = Decoder(**TINY).apply(variables, tokens)
  assert out.logits.dtype == jnp.float32
  np.testing.assert_allclose(out.logits, reference.logits, atol=0.5)


def test_causal_mask_blocks_the_future_exactly():
  decoder = Decoder(**TINY)
  tokens = token_batch((2, 12))
  variables = random_variables(decoder, tokens)
  apply = jax.jit(decoder.apply)
  before = apply(variables, tokens).logits
  for t in (0, 5, 11):
    changed = tokens.copy()
    changed[:, t] = (changed[:, t] + 7) % VOCAB
    after = apply(variables, changed).logits
    np.testing.assert_array_equal(after[:, :t], before[:, :t])
    assert not np.allclose(after[:, t], before[:, t])


def test_decoder_padding_mask_hides_padded_keys():
  decoder = Decoder(**TINY)
  tokens = token_batch((1, 8))
  tokens[0, 2] = PAD_ID  # a padded slot among real tokens, hidden by attention_mask
  mask = np.ones_like(tokens)
  mask[0, 2] = 0
  variables = random_variables(decoder, tokens)
  apply = jax.jit(decoder.apply)
  changed = tokens.copy()
  changed[0, 2] = 9
  before, after = apply(variables, tokens, mask).logits, apply(variables, changed, mask).logits
  real = mask[0].astype(bool)
  np.testing.assert_array_equal(after[0, real], before[0, real])


def test_encoder_padding_does_not_affect_real_tokens():
  encoder = Encoder(**TINY)
  tokens = token_batch((2, 10))
  tokens[:, 0], mask = CLS_ID, np.ones_like(tokens)
  tokens[0, 6:], mask[0, 6:] = PAD_ID, 0
  tokens[1, 9], mask[1, 9] = PAD_ID, 0
  tokens[:, 5] = SEP_ID
  segments = (np.arange(10) >= 3).astype(np.int32)[None].repeat(2, 0)
  variables = random_variables(encoder, tokens)
  apply = jax.jit(encoder.apply)
  before = apply(variables, tokens, segments, mask)
  changed = np.where(mask == 0, 17, tokens).astype(np.int32)
  after = apply(variables, changed, segments, mask)
  real = mask.astype(bool)
  np.testing.assert_array_equal(after.hidden[real], before.hidden[real])
  np.testing.assert_array_equal(after.logits[real], before.logits[real])
  np.testing.assert_array_equal(after.pooled, before.pooled)
  # Without the mask the padding is attended to, and real outputs move.
  unmasked = apply(variables, changed, segments)
  assert not np.allclose(unmasked.hidden[0, :6], before.hidden[0, :6])


def test_masked_mean_and_cls_pooling_match_numpy():
  rng = np.random.default_rng(0)
  hidden = rng.normal(size=(3, 5, 4)).astype(np.float32)
  mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
  expected = np.stack([hidden[i, :mask[i].sum()].mean(0) for i in range(3)])
  np.testing.assert_allclose(masked_mean_pool(hidden, mask), expected, rtol=1e-6)
  np.testing.assert_array_equal(cls_pool(hidden), hidden[:, 0])


def test_heads_are_tied_to_the_token_embedding():
  tokens = token_batch((2, 7))
  decoder = Decoder(**TINY)
  variables = random_variables(decoder, tokens)
  out = decoder.apply(variables, tokens)
  embedding = np.asarray(variables["params"]["embeddings"]["token_embed"]["embedding"])
  np.testing.assert_allclose(out.logits, np.asarray(out.hidden) @ embedding.T,
                             rtol=1e-5, atol=1e-4)

  encoder = Encoder(**TINY)
  variables = random_variables(encoder, tokens)
  params = jax.tree.map(np.asarray, variables["params"])
  out = encoder.apply(variables, tokens)
  # BERT's MLM head: dense + GELU + LayerNorm (eps 1e-12), then the embedding and a bias.
  h = np.asarray(out.hidden) @ params["mlm_transform"]["kernel"] + params["mlm_transform"]["bias"]
  h = np.asarray(jax.nn.gelu(h, approximate=False))
  h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-12)
  h = h * params["mlm_norm"]["scale"] + params["mlm_norm"]["bias"]
  embedding = params["embeddings"]["token_embed"]["embedding"]
  np.testing.assert_allclose(out.logits, h @ embedding.T + params["mlm_bias"],
                             rtol=1e-4, atol=1e-3)
  pooled = np.tanh(np.asarray(out.hidden)[:, 0] @ params["pooler"]["kernel"]
                   + params["pooler"]["bias"])
  np.testing.assert_allclose(out.pooled, pooled, rtol=1e-5, atol=1e-5)
  # No separate output matrix: the only [vocab, width]-sized weight is the token embedding.
  for model in (encoder, decoder):
    leaves = jax.tree.leaves(random_variables(model, tokens))
    assert sum(x.size == VOCAB * 64 for x in leaves) == 1


@pytest.mark.parametrize("model_class", [Encoder, Decoder])
def test_dropout_only_in_train_mode(model_class):
  model = model_class(dropout=0.1, **TINY)
  tokens = token_batch((2, 8))
  variables = random_variables(model, tokens)
  apply = jax.jit(model.apply, static_argnames="train")
  first, second = apply(variables, tokens), apply(variables, tokens)
  np.testing.assert_array_equal(first.logits, second.logits)
  train = apply(variables, tokens, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
  other = apply(variables, tokens, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
  assert not np.allclose(train.logits, first.logits)
  assert not np.allclose(train.logits, other.logits)


def test_bad_arguments_raise_one_line_errors():
  tokens = jnp.zeros((1, 4), jnp.int32)
  with pytest.raises(ValueError, match="size must be one of"):
    jax.eval_shape(Encoder(vocab_size=VOCAB, size="huge").init, jax.random.PRNGKey(0), tokens)
  with pytest.raises(ValueError, match="not divisible by num_heads"):
    jax.eval_shape(Decoder(num_heads=3, **TINY).init, jax.random.PRNGKey(0), tokens)
  with pytest.raises(ValueError, match="exceeds max_length"):
    jax.eval_shape(Decoder(**TINY).init, jax.random.PRNGKey(0), jnp.zeros((1, 17), jnp.int32))
  with pytest.raises(ValueError, match=r"token ids \[batch, length\]"):
    jax.eval_shape(Encoder(**TINY).init, jax.random.PRNGKey(0), jnp.zeros((4,), jnp.int32))
