"""Text transformers: a BERT encoder and a GPT-2 decoder (the language objectives' networks).

`Encoder` is BERT (Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers
for Language Understanding"): token + learned position + segment (token-type, 2 types)
embeddings, summed, then LayerNorm and dropout; post-LN blocks (x = LN(x + attn(x)),
x = LN(x + mlp(x))) as in the original Transformer (Vaswani et al. 2017), which BERT keeps;
exact (erf) GELU; a masked-LM head (dense + GELU + LayerNorm, then the tied token embedding
plus a bias) and the pooler (dense + tanh on the [CLS] token) that next-sentence prediction
classifies.

`Decoder` is GPT-2 (Radford et al. 2019, "Language Models are Unsupervised Multitask
Learners", section 2.3; the decoder-only design of Radford et al. 2018, "Improving Language
Understanding by Generative Pre-Training"): token + learned position embeddings and dropout;
pre-LN blocks (x = x + attn(LN(x)), x = x + mlp(LN(x))) under a causal mask; a final
LayerNorm, which GPT-2 added because pre-LN leaves the residual stream unnormalised; the tanh
approximation of GELU, as in OpenAI's code; and a language-model head that is the tied token
embedding without a bias. Each family keeps its own block order so that published weights,
once converted, compute the published function.

Both share one `Block` (pre- or post-LN by a flag) and one `dropout` rate, used where BERT and
GPT-2 put theirs (0.1 in both papers): on the embeddings, on the attention probabilities and on
each residual branch before it is added. With `train=True` and `dropout > 0` a call needs a
"dropout" RNG (`rngs={"dropout": key}`); with `train=False` it is deterministic. Computation
runs in `dtype` (float32 or bfloat16); parameters are float32; outputs are float32. Weights
start as in both papers' code: normal (std 0.02) for embeddings and dense kernels, zero biases,
LayerNorm scale one.

Padding: `attention_mask` [batch, length] (1 = real token, 0 = padding) hides padded keys from
every query, so real tokens' outputs do not depend on what the padding holds. The decoder always
applies the causal mask (query t sees keys <= t) and adds the padding mask when given.

Parameter names map one-to-one onto Hugging Face checkpoints (`hf_convert.py` converts them;
kernels are the transposed torch `weight`s, and attention kernels are reshaped to [width,
heads, head_dim] (query/key/value) or [heads, head_dim, width] (out)):
  BERT (`BertForPreTraining`, prefix `bert.`):
    embeddings/token_embed/embedding <- embeddings.word_embeddings (tied cls.predictions.decoder)
    embeddings/position_embed <- embeddings.position_embeddings
    segment_embed/embedding   <- embeddings.token_type_embeddings
    embed_norm/{scale,bias}   <- embeddings.LayerNorm.{weight,bias}
    block_i/attention/{query,key,value} <- encoder.layer.i.attention.self.{query,key,value}
    block_i/attention/out     <- encoder.layer.i.attention.output.dense
    block_i/attention_norm    <- encoder.layer.i.attention.output.LayerNorm
    block_i/mlp/{fc1,fc2}     <- encoder.layer.i.{intermediate,output}.dense
    block_i/mlp_norm          <- encoder.layer.i.output.LayerNorm
    pooler                    <- pooler.dense
    mlm_transform, mlm_norm, mlm_bias <- cls.predictions.transform.{dense,LayerNorm}, .bias
  GPT-2 (`GPT2LMHeadModel`, prefix `transformer.`; its Conv1D weights are already [in, out]):
    embeddings/token_embed/embedding <- wte (also the tied lm_head)
    embeddings/position_embed <- wpe
    block_i/attention_norm <- h.i.ln_1, block_i/mlp_norm <- h.i.ln_2
    block_i/attention/{query,key,value} <- h.i.attn.c_attn split in three along its outputs
    block_i/attention/out <- h.i.attn.c_proj, block_i/mlp/{fc1,fc2} <- h.i.mlp.{c_fc,c_proj}
    final_norm <- ln_f
"""
import dataclasses
from typing import Any, Optional

import flax
import flax.linen as nn
import jax.numpy as jnp

from ssl_jax.models import policy

# width, depth, heads, MLP hidden size, positions. BERT: Devlin et al. 2019 section 3; GPT-2:
# Radford et al. 2019 Table 2 (the 117M/345M models, 124M/355M as counted with embeddings).
_SIZES = {
    "tiny": (64, 2, 2, 128, 128),
    "bert_base": (768, 12, 12, 3072, 512),
    "bert_large": (1024, 24, 16, 4096, 512),
    "gpt2": (768, 12, 12, 3072, 1024),
    "gpt2_medium": (1024, 24, 16, 4096, 1024),
}
_SEGMENT_TYPES = 2
_INIT = nn.initializers.normal(stddev=0.02)


@flax.struct.dataclass
class TransformerOutput:
  """What a text transformer returns, all float32.

  hidden: final hidden states [batch, length, width] (after the last block; GPT-2's after its
    final LayerNorm). logits: token logits [batch, length, vocab] from the tied MLM / LM head;
    None for an encoder without its MLM head (a published `BertModel` / `DistilBertModel`).
  pooled: BERT's pooler output [batch, width] (tanh(dense([CLS]))), the NSP feature; None for
    the decoder and an encoder without a pooler (DistilBERT, `*ForMaskedLM` checkpoints).
  """
  hidden: jnp.ndarray
  logits: Optional[jnp.ndarray]
  pooled: Optional[jnp.ndarray] = None


def masked_mean_pool(hidden: jnp.ndarray, attention_mask: jnp.ndarray) -> jnp.ndarray:
  """Mean of hidden states [batch, length, width] over real tokens (attention_mask 1) ->
  [batch, width]: a sequence representation that padding does not dilute."""
  weights = attention_mask.astype(hidden.dtype)[..., None]
  return (hidden * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)


def last_token_pool(hidden: jnp.ndarray, attention_mask: jnp.ndarray) -> jnp.ndarray:
  """The hidden state [batch, width] of each row's last real token (right padding): under a
  causal mask it is the one position that has seen the whole text (GPT's classification
  token, Radford et al. 2018, Sec. 3.2; CLIP's [EOS] feature, Radford et al. 2021, Sec. 2.4)."""
  last = jnp.maximum(jnp.sum(attention_mask, axis=1) - 1, 0)
  return jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]


def cls_pool(hidden: jnp.ndarray) -> jnp.ndarray:
  """The first token's hidden state [batch, width]: [CLS], which BERT trains (through NSP) to
  summarise the sequence."""
  return hidden[:, 0]


def _resolve_size(kind: str, size: str, overrides) -> tuple:
  """(width, depth, heads, mlp_dim, max_length) from a preset and its non-None overrides."""
  if size not in _SIZES:
    raise ValueError(f"{kind} size must be one of {sorted(_SIZES)}, got {size!r}")
  resolved = tuple(p if o is None else o for p, o in zip(_SIZES[size], overrides))
  if resolved[0] % resolved[2]:
    raise ValueError(f"{kind} width {resolved[0]} is not divisible by num_heads {resolved[2]}")
  return resolved


def _check_tokens(kind: str, tokens, max_length: int):
  """Token ids must be [batch, length] and fit the learned position table."""
  if tokens.ndim != 2:
    raise ValueError(f"{kind} expects token ids [batch, length], got shape {tokens.shape}")
  if tokens.shape[1] > max_length:
    raise ValueError(f"{kind} length {tokens.shape[1]} exceeds max_length {max_length}")


class FeedForward(nn.Module):
  """width -> mlp_dim (GELU) -> width; dropout only on the output, as in BERT and GPT-2."""
  mlp_dim: int
  approximate_gelu: bool
  dropout: float
  dtype: Any

  @nn.compact
  def __call__(self, x, deterministic: bool):
    hidden = nn.Dense(self.mlp_dim, dtype=self.dtype, kernel_init=_INIT, name="fc1")(x)
    hidden = nn.gelu(hidden, approximate=self.approximate_gelu)
    out = nn.Dense(x.shape[-1], dtype=self.dtype, kernel_init=_INIT, name="fc2")(hidden)
    return nn.Dropout(self.dropout)(out, deterministic=deterministic)


class Block(nn.Module):
  """A transformer block: pre-LN (GPT-2: x + f(LN(x))) or post-LN (BERT: LN(x + f(x))) around
  masked multi-head self-attention and the GELU MLP."""
  num_heads: int
  mlp_dim: int
  dropout: float
  pre_norm: bool
  epsilon: float
  approximate_gelu: bool
  dtype: Any

  @nn.compact
  def __call__(self, x, mask, deterministic: bool):
    attention = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dtype=self.dtype, kernel_init=_INIT,
        dropout_rate=self.dropout, force_fp32_for_softmax=True, name="attention")
    mlp = FeedForward(self.mlp_dim, self.approximate_gelu, self.dropout, self.dtype, name="mlp")
    branches = (
        ("attention_norm", lambda y: nn.Dropout(self.dropout)(
            attention(y, mask=mask, deterministic=deterministic), deterministic=deterministic)),
        ("mlp_norm", lambda y: mlp(y, deterministic)),
    )
    for norm_name, branch in branches:
      norm = nn.LayerNorm(epsilon=self.epsilon, dtype=self.dtype, name=norm_name)
      x = x + branch(norm(x)) if self.pre_norm else norm(x + branch(x))
    return x


class _Embeddings(nn.Module):
  """Token + learned position embeddings, the part BERT and GPT-2 share; the token table is
  also the tied output projection (`attend`)."""
  vocab_size: int
  width: int
  max_length: int
  dtype: Any

  def setup(self):
    self.token_embed = nn.Embed(self.vocab_size, self.width, dtype=self.dtype,
                                embedding_init=_INIT)
    self.position_embed = self.param("position_embed", _INIT, (self.max_length, self.width))

  def __call__(self, tokens, position_offset: int = 0):
    positions = self.position_embed[position_offset:position_offset + tokens.shape[1]]
    return self.token_embed(tokens) + positions.astype(self.dtype)[None]

  def attend(self, hidden):
    """hidden [..., width] @ token_embedding.T -> [..., vocab] (weight tying, Press & Wolf
    2017), so input and output share one vocabulary matrix."""
    return self.token_embed.attend(hidden)


class _TextTransformer(nn.Module):
  """Fields and trunk shared by `Encoder` and `Decoder`: embeddings, embedding dropout, blocks.

  Attributes:
    vocab_size: number of token ids (the tokenizer's vocabulary size).
    size: a preset of `_SIZES` ("tiny", "bert_base", "bert_large", "gpt2", "gpt2_medium").
    dropout: rate on embeddings, attention probabilities and residual branches (training only).
    dtype: computation dtype, "float32" or "bfloat16"; parameters stay float32.
    remat: recompute each block's activations in the backward pass instead of keeping them
      (`nn.remat`, Chen et al. 2016): the same numbers, activation memory of one block plus
      the blocks' inputs, about one more forward pass of compute.
    width, depth, num_heads, mlp_dim, max_length: overrides of the preset (None keeps it).
  """
  vocab_size: int
  size: str = "tiny"
  dropout: float = 0.1
  dtype: Any = dataclasses.field(default_factory=policy.compute_dtype)
  remat: bool = dataclasses.field(default_factory=policy.remat_blocks)
  width: Optional[int] = None
  depth: Optional[int] = None
  num_heads: Optional[int] = None
  mlp_dim: Optional[int] = None
  max_length: Optional[int] = None

  def _setup_trunk(self, pre_norm: bool, epsilon: float, approximate_gelu: bool) -> int:
    """Builds the shared submodules (called from `setup`); returns the width."""
    kind = type(self).__name__
    width, depth, num_heads, mlp_dim, self._max_length = _resolve_size(
        kind, self.size, (self.width, self.depth, self.num_heads, self.mlp_dim, self.max_length))
    self._dtype = jnp.dtype(self.dtype)
    self.embed = _Embeddings(self.vocab_size, width, self._max_length, self._dtype,
                             name="embeddings")
    self.embed_dropout = nn.Dropout(self.dropout)
    block = nn.remat(Block, static_argnums=(3,)) if self.remat else Block  # deterministic
    self.blocks = [block(num_heads, mlp_dim, self.dropout, pre_norm, epsilon, approximate_gelu,
                         self._dtype, name=f"block_{i}") for i in range(depth)]
    return width

  def _run_blocks(self, x, mask, train: bool):
    """The blocks in order on embeddings [batch, length, width] under `mask`."""
    for block in self.blocks:
      x = block(x, mask, not train)
    return x


class Encoder(_TextTransformer):
  """BERT (Devlin et al. 2019): bidirectional post-LN encoder with MLM head and pooler.

  Attributes are those of `_TextTransformer` (the default size is "bert_base"), and the
  settings where the published BERT-family checkpoints differ (BERT's are the defaults):
    segment_types: rows of the segment (token-type) table: 2 for BERT, 1 for RoBERTa (Liu et
      al. 2019, which drops next-sentence prediction), 0 for none (DistilBERT, Sanh et al.
      2019, which drops the table).
    use_pooler: the dense + tanh pooler on [CLS]; `*ForMaskedLM` and DistilBERT have none.
    mlm_head: the masked-LM head; `BertModel` / `DistilBertModel` checkpoints have none.
    epsilon: LayerNorm epsilon: 1e-12 in BERT's and DistilBERT's code, 1e-5 in RoBERTa's.
    position_offset: index of the first position's row: RoBERTa counts positions from
      padding_idx + 1 = 2 (fairseq's convention), so its table has 2 unused rows.
  """
  size: str = "bert_base"
  segment_types: int = _SEGMENT_TYPES
  use_pooler: bool = True
  mlm_head: bool = True
  epsilon: float = 1e-12
  position_offset: int = 0

  def setup(self):
    width = self._setup_trunk(pre_norm=False, epsilon=self.epsilon, approximate_gelu=False)
    if self.segment_types:
      self.segment_embed = nn.Embed(self.segment_types, width, dtype=self._dtype,
                                    embedding_init=_INIT)
    self.embed_norm = nn.LayerNorm(epsilon=self.epsilon, dtype=self._dtype)
    if self.use_pooler:
      self.pooler = nn.Dense(width, dtype=self._dtype, kernel_init=_INIT)
    if self.mlm_head:
      self.mlm_transform = nn.Dense(width, dtype=self._dtype, kernel_init=_INIT)
      self.mlm_norm = nn.LayerNorm(epsilon=self.epsilon, dtype=self._dtype)
      self.mlm_bias = self.param("mlm_bias", nn.initializers.zeros, (self.vocab_size,))

  def encode(self, tokens, segment_ids=None, attention_mask=None, train: bool = False):
    """Final hidden states [batch, length, width] in the computation dtype.

    segment_ids: [batch, length] in {0, 1} (sentence A / B); zeros when None; ignored without
      a segment table.
    attention_mask: [batch, length], 1 for real tokens; all real when None.
    """
    _check_tokens("Encoder", tokens, self._max_length - self.position_offset)
    x = self.embed(tokens, self.position_offset)
    if self.segment_types:
      x = x + self.segment_embed(jnp.zeros_like(tokens) if segment_ids is None else segment_ids)
    x = self.embed_dropout(self.embed_norm(x), deterministic=not train)
    # Keys only: a padded query still gets an output, which nothing downstream reads.
    mask = None if attention_mask is None else attention_mask[:, None, None, :].astype(bool)
    return self._run_blocks(x, mask, train)

  def __call__(self, tokens, segment_ids=None, attention_mask=None,
               train: bool = False, positions=None) -> TransformerOutput:
    """Hidden states, MLM logits and the pooled [CLS] feature (float32).

    The logits are [batch, length, vocab] at every position, or [batch, P, vocab] at
    `positions` [batch, P] only: masked-LM training scores ~15% of the positions, and the
    vocabulary projection is most of a small model's cost (BERT's pre-training code gathers
    its `max_predictions_per_seq` positions the same way).
    """
    hidden = self.encode(tokens, segment_ids, attention_mask, train)
    logits = pooled = None
    if self.mlm_head:
      scored = hidden if positions is None else jnp.take_along_axis(
          hidden, positions[..., None], axis=1)
      transformed = self.mlm_norm(nn.gelu(self.mlm_transform(scored), approximate=False))
      logits = (self.embed.attend(transformed)
                + self.mlm_bias.astype(self._dtype)).astype(jnp.float32)
    if self.use_pooler:
      pooled = jnp.tanh(self.pooler(cls_pool(hidden))).astype(jnp.float32)
    return TransformerOutput(hidden=hidden.astype(jnp.float32), logits=logits, pooled=pooled)


class Decoder(_TextTransformer):
  """GPT-2 (Radford et al. 2019): causal pre-LN decoder with a final LayerNorm and tied LM head.

  Attributes are those of `_TextTransformer`; the default size is "gpt2".
  """
  size: str = "gpt2"

  def setup(self):
    self._setup_trunk(pre_norm=True, epsilon=1e-5, approximate_gelu=True)
    self.final_norm = nn.LayerNorm(epsilon=1e-5, dtype=self._dtype)

  def encode(self, tokens, attention_mask=None, train: bool = False):
    """Final hidden states [batch, length, width] (after the final LayerNorm), computation
    dtype; position t depends only on tokens <= t."""
    _check_tokens("Decoder", tokens, self._max_length)
    x = self.embed_dropout(self.embed(tokens), deterministic=not train)
    mask = nn.make_causal_mask(tokens)
    if attention_mask is not None:
      mask = nn.combine_masks(mask, attention_mask[:, None, None, :].astype(bool))
    return self.final_norm(self._run_blocks(x, mask, train))

  def __call__(self, tokens, attention_mask=None, train: bool = False) -> TransformerOutput:
    """Hidden states and next-token logits at every position (float32); GPT-2's LM head has no
    bias."""
    hidden = self.encode(tokens, attention_mask, train)
    return TransformerOutput(hidden=hidden.astype(jnp.float32),
                             logits=self.embed.attend(hidden).astype(jnp.float32))
