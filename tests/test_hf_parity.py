"""Hugging Face BERT / GPT-2 converted to ssl_jax: the same outputs as torch, and clear errors.

Tiny models are built offline from configs, their weights redrawn at random (so that no
LayerNorm is the identity and no bias is zero, and a misplaced weight shows), converted, and
run on the same tokens. Needs torch and transformers (requirements-parity.txt); skipped
without them.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402 (after the skips, so that a skipped run imports nothing heavy)
import jax.numpy as jnp  # noqa: E402

from ssl_jax.models import hf_convert  # noqa: E402

VOCAB, WIDTH, HEADS, LENGTH = 100, 32, 4, 12
TOLERANCE = 1e-4
BERT_CONFIG = dict(vocab_size=VOCAB, hidden_size=WIDTH, num_hidden_layers=2,
                   num_attention_heads=HEADS, intermediate_size=64, max_position_embeddings=64,
                   attn_implementation="eager")
GPT2_CONFIG = dict(vocab_size=VOCAB, n_embd=WIDTH, n_layer=2, n_head=HEADS, n_positions=64,
                   bos_token_id=0, eos_token_id=0, attn_implementation="eager")


def randomised(model, seed):
  """`model` in eval mode with every parameter redrawn from N(0, 0.2); tied weights stay tied
  because `parameters()` yields a shared tensor once."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for parameter in model.parameters():
      parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
  return model.eval()


def numpy_state_dict(model):
  return {key: value.detach().numpy() for key, value in model.state_dict().items()}


def batch(seed=0):
  """Token ids [2, LENGTH], and a mask whose second row has 4 right-padded positions."""
  tokens = np.random.default_rng(seed).integers(1, VOCAB, (2, LENGTH))
  mask = np.ones((2, LENGTH), np.int64)
  mask[1, -4:] = 0
  return tokens, mask


@pytest.fixture(scope="module")
def bert():
  model = randomised(transformers.BertForPreTraining(transformers.BertConfig(**BERT_CONFIG)), 0)
  return model, numpy_state_dict(model)


@pytest.fixture(scope="module")
def gpt2():
  model = randomised(transformers.GPT2LMHeadModel(transformers.GPT2Config(**GPT2_CONFIG)), 1)
  return model, numpy_state_dict(model)


def max_diff_at_real_tokens(ours, theirs, mask):
  """Largest |ours - theirs| over positions with mask 1 (padded outputs are never read)."""
  real = mask.astype(bool)
  return float(np.abs(np.asarray(ours)[real] - theirs[real]).max())


def test_bert_outputs_match_torch(bert):
  model, state_dict = bert
  encoder_params, nsp_params = hf_convert.bert_params(state_dict, num_heads=HEADS)
  encoder = hf_convert.encoder_from_hf_config(model.config.to_dict())
  tokens, mask = batch()
  segments = (np.arange(LENGTH) >= 5).astype(np.int64)[None].repeat(2, 0)
  expected_tree = jax.eval_shape(encoder.init, jax.random.PRNGKey(0),
                                 jnp.zeros((1, 4), jnp.int32))["params"]
  assert jax.tree.structure(encoder_params) == jax.tree.structure(expected_tree)
  assert jax.tree.map(np.shape, encoder_params) == jax.tree.map(np.shape, expected_tree)

  out = encoder.apply({"params": encoder_params}, jnp.asarray(tokens), jnp.asarray(segments),
                      jnp.asarray(mask))
  with torch.no_grad():
    theirs = model(input_ids=torch.tensor(tokens), token_type_ids=torch.tensor(segments),
                   attention_mask=torch.tensor(mask), output_hidden_states=True)
  nsp_logits = np.asarray(out.pooled) @ nsp_params["kernel"] + nsp_params["bias"]
  diffs = {
      "mlm_logits": max_diff_at_real_tokens(out.logits, theirs.prediction_logits.numpy(), mask),
      "hidden": max_diff_at_real_tokens(out.hidden, theirs.hidden_states[-1].numpy(), mask),
      "pooled": float(np.abs(out.pooled - model.bert.pooler(
          theirs.hidden_states[-1]).detach().numpy()).max()),
      "nsp_logits": float(np.abs(nsp_logits - theirs.seq_relationship_logits.numpy()).max()),
  }
  print("BERT max abs diffs:", diffs)
  assert max(diffs.values()) < TOLERANCE, diffs


@pytest.mark.parametrize("padding", ["none", "right", "left"])
def test_gpt2_logits_match_torch(gpt2, padding):
  """Right padding is what the decoder sees in training; left padding also exercises the
  padding mask, since real tokens then come after padded keys."""
  model, state_dict = gpt2
  params = hf_convert.gpt2_params(state_dict, num_heads=HEADS)
  decoder = hf_convert.decoder_from_hf_config(model.config.to_dict())
  tokens, mask = batch(seed=1)
  mask = {"none": np.ones_like(mask), "right": mask, "left": mask[:, ::-1].copy()}[padding]
  out = decoder.apply({"params": params}, jnp.asarray(tokens), jnp.asarray(mask))
  with torch.no_grad():
    theirs = model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits
  diff = max_diff_at_real_tokens(out.logits, theirs.numpy(), mask)
  print(f"GPT-2 ({padding} padding) max abs logit diff: {diff:.2e}")
  assert diff < TOLERANCE


def test_bare_gpt2_model_keys_convert_like_the_lm_head_model(gpt2):
  model, state_dict = gpt2
  bare = numpy_state_dict(model.transformer)
  converted = hf_convert.gpt2_params(bare, num_heads=HEADS)
  expected = hf_convert.gpt2_params(state_dict, num_heads=HEADS)
  assert jax.tree.all(jax.tree.map(np.array_equal, converted, expected))


def test_bert_without_mlm_head_or_pooler_is_refused(bert):
  model, _ = bert
  with pytest.raises(ValueError, match=r"'cls\.predictions\.bias' is missing: the masked-LM"):
    hf_convert.bert_params(numpy_state_dict(model.bert), num_heads=HEADS)
  masked_lm = transformers.BertForMaskedLM(transformers.BertConfig(**BERT_CONFIG))
  with pytest.raises(ValueError, match=r"'bert\.pooler\.dense\.weight' is missing: the pooler"):
    hf_convert.bert_params(numpy_state_dict(masked_lm), num_heads=HEADS)


def test_missing_and_misshapen_keys_are_named(bert, gpt2):
  _, bert_state = bert
  _, gpt2_state = gpt2
  missing = {k: v for k, v in bert_state.items() if k != "bert.encoder.layer.1.output.dense.bias"}
  with pytest.raises(ValueError, match=r"'bert\.encoder\.layer\.1\.output\.dense\.bias' is miss"):
    hf_convert.bert_params(missing, num_heads=HEADS)
  misshapen = dict(gpt2_state, **{"transformer.h.1.attn.c_proj.weight": np.zeros((WIDTH, 8))})
  with pytest.raises(ValueError, match=r"'transformer\.h\.1\.attn\.c_proj\.weight' has shape"):
    hf_convert.gpt2_params(misshapen, num_heads=HEADS)
  unknown = dict(gpt2_state, **{"transformer.h.0.attn.rotary": np.zeros(3)})
  with pytest.raises(ValueError, match=r"unknown checkpoint key 'transformer\.h\.0\.attn\.rotary'"):
    hf_convert.gpt2_params(unknown, num_heads=HEADS)


def test_configs_the_modules_cannot_express_are_refused(bert, gpt2):
  with pytest.raises(ValueError, match="hidden_act='relu'"):
    hf_convert.encoder_from_hf_config(dict(bert[0].config.to_dict(), hidden_act="relu"))
  with pytest.raises(ValueError, match="layer_norm_epsilon"):
    hf_convert.decoder_from_hf_config(dict(gpt2[0].config.to_dict(), layer_norm_epsilon=1e-6))
