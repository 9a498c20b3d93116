"""Hugging Face BERT, RoBERTa, DistilBERT and GPT-2 checkpoints as `transformer.Encoder` /
`Decoder` parameters.

Why: the published weights of BERT (Devlin et al. 2019), RoBERTa (Liu et al. 2019),
DistilBERT (Sanh et al. 2019) and GPT-2 (Radford et al. 2019) are distributed as state dicts in
Hugging Face's layout. Converting them lets a language objective start from, or be compared
with, the published models, and parity with the torch outputs shows that `transformer.py`
computes the published function.

The input is a plain mapping from name to array (what `safetensors.numpy.load_file` returns,
or `{k: v.numpy() for k, v in model.state_dict().items()}`), so this module needs no torch. The
output is the Flax parameter tree that `Encoder.init` / `Decoder.init` return under "params",
as float32 NumPy arrays. Every shape is checked and every checkpoint key must be used (apart
from non-parameter buffers and the tied copies of the token embedding); a missing, misshapen
or unknown key raises a ValueError that names it.

Mapping (the table in `transformer.py`'s docstring, in full):
  torch `nn.Linear` weights are [out, in], so kernels are their transposes; GPT-2's `Conv1D`
  weights are already [in, out]. Attention kernels become [width, heads, head_dim]
  (query/key/value; biases [heads, head_dim]) and [heads, head_dim, width] (out), the layout of
  `nn.MultiHeadDotProductAttention`; heads are contiguous slices of the width in both libraries.
  BERT (prefix `bert.`): embeddings, blocks and pooler as in `transformer.py`;
  `cls.predictions.decoder` must equal the word embeddings (tied); the next-sentence
  classifier `cls.seq_relationship` is returned apart, since it belongs to the method, not the
  network. RoBERTa (prefix `roberta.`): BERT's names, the head under `lm_head`, one segment
  row, LayerNorm epsilon 1e-5 and positions from row 2. DistilBERT (prefix `distilbert.`):
  `transformer.layer.i.attention.{q,k,v,out}_lin`, `sa_layer_norm`, `ffn.lin{1,2}`,
  `output_layer_norm`; no segment table and no pooler; the head is `vocab_transform`,
  `vocab_layer_norm`, `vocab_projector` (tied). `*Model` checkpoints lack the masked-LM head
  and `*ForMaskedLM` ones the pooler: `encoder_params` converts what is there.
  GPT-2 (`GPT2LMHeadModel`, prefix `transformer.`, or bare `GPT2Model` keys): `c_attn` is split
  in three along its outputs into query, key and value; `lm_head` must equal `wte` (tied).

`encoder_from_hf_config` / `decoder_from_hf_config` build the matching modules from a Hugging
Face config dict (`config.to_dict()` or config.json), refusing settings the modules cannot
express (another activation, LayerNorm epsilon or position scheme).
"""
import dataclasses
import re
from typing import Any, Mapping, Optional

import numpy as np

from ssl_jax.models import transformer

# Buffers that some library versions save beside the parameters; they hold no weights.
_BERT_BUFFERS = (r"(bert\.)?embeddings\.(position_ids|token_type_ids)",)
_GPT2_BUFFERS = (r"(transformer\.)?h\.\d+\.attn\.(bias|masked_bias)",)
# A block's attention norm, fc1, fc2 and MLP norm, below `encoder.layer.i` / `h.i`.
_BERT_BLOCK_NAMES = ("attention.output.LayerNorm", "intermediate.dense", "output.dense",
                     "output.LayerNorm")
_GPT2_BLOCK_NAMES = ("ln_1", "mlp.c_fc", "mlp.c_proj", "ln_2")


class _Checkpoint:
  """A state dict read key by key: each read checks the shape, and `check_all_read` reports
  keys that no read used, so that a checkpoint of another architecture cannot half-convert."""

  def __init__(self, state_dict: Mapping[str, Any], ignored_patterns: tuple):
    self._arrays = state_dict
    self._unread = {key for key in state_dict
                    if not any(re.fullmatch(pattern, key) for pattern in ignored_patterns)}

  def has(self, key: str) -> bool:
    return key in self._arrays

  def shape(self, key: str) -> tuple:
    self._require(key)
    return tuple(np.shape(self._arrays[key]))

  def read(self, key: str, shape: tuple) -> np.ndarray:
    """The array under `key` as float32, which must have `shape`."""
    self._require(key)
    array = np.asarray(self._arrays[key], dtype=np.float32)
    if array.shape != tuple(shape):
      raise ValueError(f"checkpoint key {key!r} has shape {array.shape}, expected {tuple(shape)}")
    self._unread.discard(key)
    return array

  def read_tied(self, key: str, tied_to: np.ndarray, tied_name: str):
    """Consumes a copy of a tied weight; the modules tie it, so it must equal `tied_to`."""
    if self.has(key) and not np.array_equal(self.read(key, tied_to.shape), tied_to):
      raise ValueError(f"checkpoint key {key!r} differs from {tied_name!r}; the converted model "
                       "ties them and cannot hold an untied head")

  def layer_count(self, pattern: str) -> int:
    """Number of layers: one more than the largest index captured by `pattern`."""
    indices = {int(match.group(1)) for key in self._arrays
               for match in [re.fullmatch(pattern, key)] if match}
    return max(indices) + 1 if indices else 0

  def check_all_read(self):
    if self._unread:
      raise ValueError(f"unknown checkpoint key {sorted(self._unread)[0]!r} "
                       f"({len(self._unread)} unused in all)")

  def _require(self, key: str):
    if key not in self._arrays:
      raise ValueError(f"checkpoint key {key!r} is missing")


def _linear(checkpoint: _Checkpoint, name: str, in_dim: int, out_dim: int) -> dict:
  """A torch `nn.Linear` (weight [out, in]) as a Flax `Dense` (kernel [in, out])."""
  return {"kernel": checkpoint.read(f"{name}.weight", (out_dim, in_dim)).T,
          "bias": checkpoint.read(f"{name}.bias", (out_dim,))}


def _conv1d(checkpoint: _Checkpoint, name: str, in_dim: int, out_dim: int) -> dict:
  """A GPT-2 `Conv1D` (weight already [in, out]) as a Flax `Dense`."""
  return {"kernel": checkpoint.read(f"{name}.weight", (in_dim, out_dim)),
          "bias": checkpoint.read(f"{name}.bias", (out_dim,))}


def _layer_norm(checkpoint: _Checkpoint, name: str, width: int) -> dict:
  return {"scale": checkpoint.read(f"{name}.weight", (width,)),
          "bias": checkpoint.read(f"{name}.bias", (width,))}


def _attention(query: dict, key: dict, value: dict, out: dict, num_heads: int) -> dict:
  """Four [in, out] dense layers as `nn.MultiHeadDotProductAttention` parameters: the
  projections' outputs and the output layer's inputs split into heads."""
  width = out["kernel"].shape[1]
  head_dim = width // num_heads

  def split_outputs(dense):
    return {"kernel": dense["kernel"].reshape(width, num_heads, head_dim),
            "bias": dense["bias"].reshape(num_heads, head_dim)}

  return {"query": split_outputs(query), "key": split_outputs(key),
          "value": split_outputs(value),
          "out": {"kernel": out["kernel"].reshape(num_heads, head_dim, width),
                  "bias": out["bias"]}}


def _check_heads(width: int, num_heads: int):
  if num_heads < 1 or width % num_heads:
    raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")


def _block(checkpoint: _Checkpoint, read_dense, name: str, hf_names: tuple, attention: dict,
           width: int, mlp_dim: int) -> dict:
  """A `transformer.Block`'s parameters: converted `attention`, and the two LayerNorms and MLP
  layers under `name` + `hf_names` (attention norm, fc1, fc2, mlp norm), dense layers read by
  `read_dense` (`_linear` or `_conv1d`)."""
  attention_norm, fc1, fc2, mlp_norm = (f"{name}.{suffix}" for suffix in hf_names)
  return {
      "attention": attention,
      "attention_norm": _layer_norm(checkpoint, attention_norm, width),
      "mlp": {"fc1": read_dense(checkpoint, fc1, width, mlp_dim),
              "fc2": read_dense(checkpoint, fc2, mlp_dim, width)},
      "mlp_norm": _layer_norm(checkpoint, mlp_norm, width),
  }


def _separate_attention(checkpoint: _Checkpoint, names: tuple, width: int,
                        num_heads: int) -> dict:
  """Self-attention with separate query, key, value and output layers (BERT, RoBERTa,
  DistilBERT), named by `names` in that order."""
  query, key, value, out = (_linear(checkpoint, name, width, width) for name in names)
  return _attention(query, key, value, out, num_heads)


@dataclasses.dataclass(frozen=True)
class _EncoderLayout:
  """Where a BERT-family checkpoint keeps each part of `transformer.Encoder`.

  Names below `prefix` (the base model's, e.g. "bert.", absent from bare `*Model` keys);
  `layer` is a block's name with "{i}"; the attention names are query, key, value, output;
  segments / pooler / head parts are None where the family has none.
  """
  prefix: str
  layer: str
  attention: tuple
  block: tuple  # attention norm, fc1, fc2, MLP norm
  segments: Optional[str]
  pooler: Optional[str]
  head_transform: str  # the masked-LM head's dense layer, LayerNorm, bias and tied decoder
  head_norm: str
  head_bias: str
  head_decoder: str
  next_sentence: Optional[str] = None


_BERT_LAYOUT = _EncoderLayout(
    prefix="bert.", layer="encoder.layer.{i}",
    attention=tuple(f"attention.self.{part}" for part in ("query", "key", "value"))
    + ("attention.output.dense",),
    block=_BERT_BLOCK_NAMES, segments="embeddings.token_type_embeddings",
    pooler="pooler.dense", head_transform="cls.predictions.transform.dense",
    head_norm="cls.predictions.transform.LayerNorm", head_bias="cls.predictions.bias",
    head_decoder="cls.predictions.decoder", next_sentence="cls.seq_relationship")
# RoBERTa (Liu et al. 2019) keeps BERT's block names; its head is `lm_head`.
_ROBERTA_LAYOUT = dataclasses.replace(
    _BERT_LAYOUT, prefix="roberta.", head_transform="lm_head.dense",
    head_norm="lm_head.layer_norm", head_bias="lm_head.bias", head_decoder="lm_head.decoder",
    next_sentence=None)
_DISTILBERT_LAYOUT = _EncoderLayout(
    prefix="distilbert.", layer="transformer.layer.{i}",
    attention=tuple(f"attention.{part}_lin" for part in ("q", "k", "v", "out")),
    block=("sa_layer_norm", "ffn.lin1", "ffn.lin2", "output_layer_norm"), segments=None,
    pooler=None, head_transform="vocab_transform", head_norm="vocab_layer_norm",
    head_bias="vocab_projector.bias", head_decoder="vocab_projector")
ENCODER_LAYOUTS = {"bert": _BERT_LAYOUT, "roberta": _ROBERTA_LAYOUT,
                   "distilbert": _DISTILBERT_LAYOUT}


def encoder_params(state_dict: Mapping[str, Any], model_type: str, num_heads: int
                   ) -> tuple[dict, Optional[dict]]:
  """(encoder_params, nsp_params) from a BERT, RoBERTa or DistilBERT state dict.

  `model_type` is the Hugging Face config's ("bert", "roberta", "distilbert"). The pooler and
  the masked-LM head are converted when the checkpoint has them and left out otherwise (build
  the module with `encoder_from_hf_config(..., use_pooler=, mlm_head=)` as `has_pooler` /
  `has_mlm_head` say). nsp_params is BERT's next-sentence classifier when present, else None.
  Older checkpoints name LayerNorm parameters gamma / beta; they are read as weight / bias.
  """
  if model_type not in ENCODER_LAYOUTS:
    raise ValueError(f"model_type {model_type!r} is not an encoder this module converts "
                     f"({', '.join(sorted(ENCODER_LAYOUTS))})")
  layout = ENCODER_LAYOUTS[model_type]
  state_dict = {re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight",
                       re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)): value
                for key, value in state_dict.items()}
  checkpoint = _Checkpoint(state_dict, _BERT_BUFFERS + (
      r"(roberta\.)?embeddings\.(position_ids|token_type_ids)",
      r"(distilbert\.)?embeddings\.position_ids"))
  prefix = layout.prefix if any(k.startswith(layout.prefix) for k in state_dict) else ""
  embeddings = f"{prefix}embeddings"
  vocab_size, width = checkpoint.shape(f"{embeddings}.word_embeddings.weight")
  _check_heads(width, num_heads)
  max_length = checkpoint.shape(f"{embeddings}.position_embeddings.weight")[0]
  first_layer = prefix + layout.layer.format(i=0)
  mlp_dim = checkpoint.shape(f"{first_layer}.{layout.block[1]}.weight")[0]
  depth = checkpoint.layer_count(
      re.escape(prefix + layout.layer).replace(r"\{i\}", r"(\d+)") + r"\..*")
  token_embedding = checkpoint.read(f"{embeddings}.word_embeddings.weight", (vocab_size, width))
  params = {
      "embeddings": {
          "token_embed": {"embedding": token_embedding},
          "position_embed": checkpoint.read(f"{embeddings}.position_embeddings.weight",
                                            (max_length, width)),
      },
      "embed_norm": _layer_norm(checkpoint, f"{embeddings}.LayerNorm", width),
  }
  if layout.segments:
    segments = f"{prefix}{layout.segments}.weight"
    params["segment_embed"] = {"embedding": checkpoint.read(
        segments, (checkpoint.shape(segments)[0], width))}
  if layout.pooler and checkpoint.has(f"{prefix}{layout.pooler}.weight"):
    params["pooler"] = _linear(checkpoint, prefix + layout.pooler, width, width)
  if checkpoint.has(layout.head_bias):
    params["mlm_transform"] = _linear(checkpoint, layout.head_transform, width, width)
    params["mlm_norm"] = _layer_norm(checkpoint, layout.head_norm, width)
    params["mlm_bias"] = checkpoint.read(layout.head_bias, (vocab_size,))
    checkpoint.read_tied(f"{layout.head_decoder}.weight", token_embedding,
                         f"{embeddings}.word_embeddings.weight")
    if layout.head_decoder != layout.head_bias.rsplit(".", 1)[0]:
      checkpoint.read_tied(f"{layout.head_decoder}.bias", params["mlm_bias"], layout.head_bias)
  for i in range(depth):
    name = prefix + layout.layer.format(i=i)
    attention = _separate_attention(
        checkpoint, tuple(f"{name}.{part}" for part in layout.attention), width, num_heads)
    params[f"block_{i}"] = _block(checkpoint, _linear, name, layout.block, attention, width,
                                  mlp_dim)
  nsp_params = None
  if layout.next_sentence and checkpoint.has(f"{layout.next_sentence}.weight"):
    nsp_params = _linear(checkpoint, layout.next_sentence, width, 2)
  checkpoint.check_all_read()
  return params, nsp_params


def has_pooler(params: Mapping[str, Any]) -> bool:
  return "pooler" in params


def has_mlm_head(params: Mapping[str, Any]) -> bool:
  return "mlm_bias" in params


def bert_params(state_dict: Mapping[str, Any],
                num_heads: int) -> tuple[dict, Optional[dict]]:
  """(encoder_params, nsp_params) from a `BertForPreTraining` state dict, for the pre-training
  network (`mlm.PreTrainingModel`), which needs both heads.

  encoder_params is the "params" tree of `transformer.Encoder` with the checkpoint's sizes;
  nsp_params is {"kernel": [width, 2], "bias": [2]} from `cls.seq_relationship`, or None when
  the checkpoint has no next-sentence head. The masked-LM head and the pooler are required:
  `BertModel` drops the first and `BertForMaskedLM` the second (`encoder_params` converts
  those, for an `Encoder` without them), while the published checkpoints hold both.
  """
  prefix = "bert." if any(key.startswith("bert.") for key in state_dict) else ""
  for key, part in [("cls.predictions.bias", "masked-LM head"),
                    (f"{prefix}pooler.dense.weight", "pooler")]:
    if key not in state_dict:
      raise ValueError(f"checkpoint key {key!r} is missing: the {part} is needed (convert a "
                       "BertForPreTraining state dict)")
  return encoder_params(state_dict, "bert", num_heads)


def _gpt2_attention(checkpoint: _Checkpoint, name: str, width: int, num_heads: int) -> dict:
  """A GPT-2 layer's (`h.i`) self-attention; the fused query/key/value projection split in
  three along its outputs."""
  fused = _conv1d(checkpoint, f"{name}.attn.c_attn", width, 3 * width)
  query, key, value = ({"kernel": kernel, "bias": bias} for kernel, bias in zip(
      np.split(fused["kernel"], 3, axis=1), np.split(fused["bias"], 3)))
  out = _conv1d(checkpoint, f"{name}.attn.c_proj", width, width)
  return _attention(query, key, value, out, num_heads)


def gpt2_params(state_dict: Mapping[str, Any], num_heads: int) -> dict:
  """The "params" tree of `transformer.Decoder` from a `GPT2LMHeadModel` or `GPT2Model` state
  dict; a present `lm_head.weight` must be the tied `wte`."""
  checkpoint = _Checkpoint(state_dict, _GPT2_BUFFERS)
  prefix = "transformer." if any(key.startswith("transformer.") for key in state_dict) else ""
  vocab_size, width = checkpoint.shape(f"{prefix}wte.weight")
  _check_heads(width, num_heads)
  max_length = checkpoint.shape(f"{prefix}wpe.weight")[0]
  mlp_dim = checkpoint.shape(f"{prefix}h.0.mlp.c_fc.weight")[1]
  depth = checkpoint.layer_count(re.escape(prefix) + r"h\.(\d+)\..*")

  token_embedding = checkpoint.read(f"{prefix}wte.weight", (vocab_size, width))
  params = {
      "embeddings": {
          "token_embed": {"embedding": token_embedding},
          "position_embed": checkpoint.read(f"{prefix}wpe.weight", (max_length, width)),
      },
      "final_norm": _layer_norm(checkpoint, f"{prefix}ln_f", width),
  }
  for i in range(depth):
    name = f"{prefix}h.{i}"
    params[f"block_{i}"] = _block(checkpoint, _conv1d, name, _GPT2_BLOCK_NAMES,
                                  _gpt2_attention(checkpoint, name, width, num_heads),
                                  width, mlp_dim)
  checkpoint.read_tied("lm_head.weight", token_embedding, f"{prefix}wte.weight")
  checkpoint.check_all_read()
  return params


def _require_setting(config: Mapping[str, Any], field: str, supported, default):
  """A config field the module fixes (activation, epsilon, ...) must have the fixed value."""
  value = config.get(field, default)
  if value != supported:
    raise ValueError(f"Hugging Face config {field}={value!r} is not supported "
                     f"(the module uses {supported!r})")


def _single_dropout(config: Mapping[str, Any], fields: tuple, default: float) -> float:
  """The modules have one dropout rate: the config's rates must agree."""
  rates = {field: config.get(field, default) for field in fields}
  if len(set(rates.values())) > 1:
    raise ValueError(f"Hugging Face config dropout rates {rates} differ; the module has one rate "
                     "(pass dropout= to choose it)")
  return rates[fields[0]]


def encoder_from_hf_config(hf_config: Mapping[str, Any], dropout: Optional[float] = None,
                           dtype: Any = "float32", use_pooler: bool = True,
                           mlm_head: bool = True) -> transformer.Encoder:
  """The `transformer.Encoder` with the sizes and settings of a BERT, RoBERTa or DistilBERT
  config (`config.to_dict()`); `use_pooler` / `mlm_head` as the checkpoint holds them."""
  model_type = hf_config.get("model_type", "bert")
  if model_type == "distilbert":
    _require_setting(hf_config, "activation", "gelu", "gelu")
    _require_setting(hf_config, "sinusoidal_pos_embds", False, False)
    if dropout is None:
      dropout = _single_dropout(hf_config, ("dropout", "attention_dropout"), 0.1)
    return transformer.Encoder(
        vocab_size=hf_config["vocab_size"], dropout=dropout, dtype=dtype,
        width=hf_config["dim"], depth=hf_config["n_layers"], num_heads=hf_config["n_heads"],
        mlp_dim=hf_config["hidden_dim"], max_length=hf_config["max_position_embeddings"],
        segment_types=0, use_pooler=False, mlm_head=mlm_head, epsilon=1e-12)
  if model_type not in ("bert", "roberta"):
    raise ValueError(f"model_type {model_type!r} is not an encoder this module converts "
                     f"({', '.join(sorted(ENCODER_LAYOUTS))})")
  _require_setting(hf_config, "hidden_act", "gelu", "gelu")
  _require_setting(hf_config, "position_embedding_type", "absolute", "absolute")
  if dropout is None:
    dropout = _single_dropout(
        hf_config, ("hidden_dropout_prob", "attention_probs_dropout_prob"), 0.1)
  # RoBERTa numbers positions from padding_idx + 1 (its `create_position_ids_from_input_ids`);
  # with right padding that is padding_idx + 1 + t at every real token t.
  offset = hf_config.get("pad_token_id", 1) + 1 if model_type == "roberta" else 0
  return transformer.Encoder(
      vocab_size=hf_config["vocab_size"], dropout=dropout, dtype=dtype,
      width=hf_config["hidden_size"], depth=hf_config["num_hidden_layers"],
      num_heads=hf_config["num_attention_heads"], mlp_dim=hf_config["intermediate_size"],
      max_length=hf_config["max_position_embeddings"],
      segment_types=hf_config.get("type_vocab_size", 2), use_pooler=use_pooler,
      mlm_head=mlm_head, epsilon=hf_config.get("layer_norm_eps", 1e-12),
      position_offset=offset)


def decoder_from_hf_config(hf_config: Mapping[str, Any], dropout: Optional[float] = None,
                           dtype: Any = "float32") -> transformer.Decoder:
  """The `transformer.Decoder` with the sizes of a `GPT2Config.to_dict()`."""
  _require_setting(hf_config, "activation_function", "gelu_new", "gelu_new")
  _require_setting(hf_config, "layer_norm_epsilon", 1e-5, 1e-5)
  _require_setting(hf_config, "scale_attn_by_inverse_layer_idx", False, False)
  if dropout is None:
    dropout = _single_dropout(hf_config, ("resid_pdrop", "embd_pdrop", "attn_pdrop"), 0.1)
  width = hf_config["n_embd"]
  return transformer.Decoder(
      vocab_size=hf_config["vocab_size"], dropout=dropout, dtype=dtype, width=width,
      depth=hf_config["n_layer"], num_heads=hf_config["n_head"],
      mlp_dim=hf_config.get("n_inner") or 4 * width, max_length=hf_config["n_positions"])
