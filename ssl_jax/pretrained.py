"""Published Hugging Face language models read from disk: no network, no torch.

Why: the two examples every SSL introduction starts from (a pretrained BERT filling in
"The capital of France is [MASK].", and frozen DistilBERT embeddings with label propagation)
need the published weights, and researchers compare their runs against them. A model folder
as `save_pretrained` or the hub cache writes it holds `config.json`, the weights
(`model.safetensors`, possibly sharded with an index, or the older `pytorch_model.bin`) and
`tokenizer.json`; `load` turns it into our `transformer.Encoder` / `Decoder` with converted
parameters (`models.hf_convert`, parity with `transformers` to ~3e-7) and the model's own
tokenizer, run by Hugging Face `tokenizers` from `tokenizer.json`, so tokenisation is the
model's (lower-casing and accent stripping for uncased models, WordPiece or byte-level BPE,
the special tokens its post-processor adds).

`--pretrained` / `hf:` take a folder path or a model name. A name is looked up in the local
Hugging Face cache only (`HF_HUB_CACHE`, else `HF_HOME/hub`, else ~/.cache/huggingface/hub,
through `huggingface_hub.snapshot_download(local_files_only=True)`), also under the
organisations the hub moved the original models to (bert-base-uncased is cached as
google-bert/bert-base-uncased by newer clients). Safetensors weights are read with the
`safetensors` NumPy API; `pytorch_model.bin` needs torch and is refused in one line without it.

Architectures (config.json's `model_type`): bert (`BertForPreTraining`, `BertForMaskedLM`,
`BertModel`), distilbert (`DistilBertForMaskedLM`, `DistilBertModel`), roberta
(`RobertaForMaskedLM`, `RobertaModel`) and gpt2 (`GPT2LMHeadModel`, `GPT2Model`). The heads a
checkpoint lacks are absent from the module (a `*Model` cannot fill masks), never invented.
"""
import dataclasses
import json
import os
from typing import Any

import numpy as np

from ssl_jax.errors import UserError

ENCODER_TYPES = ("bert", "distilbert", "roberta")
DECODER_TYPES = ("gpt2",)
# Organisations that host the original checkpoints under their old bare names today.
_HUB_ORGANISATIONS = ("google-bert", "distilbert", "FacebookAI", "openai-community")
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


@dataclasses.dataclass(frozen=True)
class SpecialTokens:
  """The ids of the model's special tokens (None where it has none), from tokenizer_config.json.

  BERT: [PAD] [UNK] [CLS] [SEP] [MASK]; RoBERTa: <pad> <unk> <s> </s> <mask>; GPT-2 has only
  <|endoftext|>, its bos, eos and unk.
  """
  pad: int | None
  unk: int | None
  mask: int | None
  bos: int | None  # [CLS] / <s>: what starts a text
  eos: int | None  # [SEP] / </s> / <|endoftext|>: what ends one
  mask_token: str | None
  all_ids: frozenset


@dataclasses.dataclass(frozen=True)
class Pretrained:
  """A published model: our network, its converted parameters and its own tokenizer.

  network is a `transformer.Encoder` (bert, distilbert, roberta) or `Decoder` (gpt2) built
  with the checkpoint's sizes and settings; params its "params" tree; nsp_params BERT's
  next-sentence classifier when the checkpoint has one; hf_config the parsed config.json.
  """
  folder: str
  model_type: str
  hf_config: dict
  network: Any
  params: dict
  nsp_params: dict | None
  tokenizer: Any  # tokenizers.Tokenizer
  special: SpecialTokens

  @property
  def is_decoder(self) -> bool:
    return self.model_type in DECODER_TYPES

  @property
  def max_length(self) -> int:
    """Tokens the model reads: rows of its position table not skipped by an offset."""
    rows = self.params["embeddings"]["position_embed"].shape[0]
    return rows - getattr(self.network, "position_offset", 0)

  def encode(self, texts: list[str], max_length: int | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, attention_mask) int32 [n, L], right-padded, L the longest row (at most
    `max_length`, default the model's): the model's tokenizer with its special tokens, as
    `AutoTokenizer(texts, truncation=True)` gives them. Padding rows hold the pad id (0 for
    GPT-2, which has none); nothing reads them."""
    limit = min(max_length or self.max_length, self.max_length)
    encoded = [self.tokenizer.encode(text) for text in texts]
    rows = [_truncated(e.ids, limit, self.tokenizer, text) for e, text in zip(encoded, texts)]
    width = max(len(row) for row in rows)
    tokens = np.full((len(rows), width), self.special.pad or 0, np.int32)
    mask = np.zeros((len(rows), width), np.int32)
    for i, row in enumerate(rows):
      tokens[i, :len(row)], mask[i, :len(row)] = row, 1
    return tokens, mask

  def token_text(self, token_id: int) -> str:
    """How a token reads on its own: "paris" for WordPiece, " paris" -> "paris" for BPE."""
    return self.tokenizer.decode([int(token_id)], skip_special_tokens=False).strip()


def _truncated(ids: list[int], limit: int, tokenizer, text: str) -> list[int]:
  """`ids` cut to `limit` tokens, keeping the closing special token a post-processor added."""
  if len(ids) <= limit:
    return list(ids)
  ending = tokenizer.encode(text[:0]).ids  # what the post-processor adds to an empty text
  closing = ids[-1:] if len(ending) >= 2 and ids[-1] == ending[-1] else []
  return list(ids[:limit - len(closing)]) + closing


def hub_cache() -> str:
  """The local Hugging Face hub cache, as huggingface_hub resolves it (read at call time)."""
  if os.environ.get("HF_HUB_CACHE"):
    return os.environ["HF_HUB_CACHE"]
  home = os.environ.get("HF_HOME") or os.path.join(
      os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
  return os.path.join(home, "hub")


def find_folder(name_or_path: str) -> str:
  """The model folder that `name_or_path` names: the path itself when it is a folder, else
  the cached snapshot of that hub name's main revision (offline). A UserError names where it looked."""
  path = os.path.expanduser(name_or_path)
  if os.path.isdir(path):
    return path
  if os.path.exists(path) or path.startswith((".", "/")) or path.count("/") > 1:
    raise UserError(f"--pretrained: {name_or_path!r} is not a model folder")
  import huggingface_hub  # pylint: disable=g-import-not-at-top
  cache = hub_cache()
  names = [name_or_path] + ([f"{org}/{name_or_path}" for org in _HUB_ORGANISATIONS]
                            if "/" not in name_or_path else [])
  for name in names:
    try:
      return huggingface_hub.snapshot_download(name, cache_dir=cache, local_files_only=True)
    except (huggingface_hub.errors.LocalEntryNotFoundError, ValueError,
            huggingface_hub.errors.HFValidationError):
      continue
  raise UserError(
      f"--pretrained: no model {name_or_path!r}: not a folder, and not in the local Hugging "
      f"Face cache {cache} (looked for {', '.join(names)}; set HF_HUB_CACHE or HF_HOME, or "
      "give the folder that save_pretrained wrote; nothing is downloaded)")


def _read_json(folder: str, name: str) -> dict:
  path = os.path.join(folder, name)
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    return {}
  except json.JSONDecodeError as e:
    raise UserError(f"--pretrained: {path} is not valid JSON ({e})") from e


def read_state_dict(folder: str) -> dict[str, np.ndarray]:
  """The checkpoint's arrays by name: `model.safetensors`, its shards, or (with torch
  installed) `pytorch_model.bin`."""
  from safetensors import numpy as safetensors_numpy  # pylint: disable=g-import-not-at-top
  single = os.path.join(folder, "model.safetensors")
  if os.path.exists(single):
    return dict(safetensors_numpy.load_file(single))
  index = _read_json(folder, "model.safetensors.index.json")
  if index:
    arrays = {}
    for shard in sorted(set(index["weight_map"].values())):
      arrays.update(safetensors_numpy.load_file(os.path.join(folder, shard)))
    return arrays
  pickled = os.path.join(folder, "pytorch_model.bin")
  if os.path.exists(pickled):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise UserError(
          f"--pretrained: {folder} has only pytorch_model.bin, which needs torch: install torch "
          "(requirements-parity.txt) or convert it to model.safetensors") from None
    state = torch.load(pickled, map_location="cpu", weights_only=True)
    return {key: value.float().numpy() for key, value in state.items()}
  raise UserError(f"--pretrained: {folder} has no weights (one of {', '.join(_WEIGHT_FILES)})")


def _special_tokens(tokenizer, folder: str) -> SpecialTokens:
  settings = _read_json(folder, "tokenizer_config.json")
  settings.update(_read_json(folder, "special_tokens_map.json"))

  def token_id(*fields):
    for field in fields:
      token = settings.get(field)
      token = token.get("content") if isinstance(token, dict) else token
      if token is not None and tokenizer.token_to_id(token) is not None:
        return tokenizer.token_to_id(token)
    return None

  mask = token_id("mask_token")
  special_ids = {token.id if hasattr(token, "id") else index
                 for index, token in tokenizer.get_added_tokens_decoder().items()
                 if token.special}
  return SpecialTokens(
      pad=token_id("pad_token"), unk=token_id("unk_token"), mask=mask,
      bos=token_id("cls_token", "bos_token"), eos=token_id("sep_token", "eos_token"),
      mask_token=None if mask is None else tokenizer.id_to_token(mask),
      all_ids=frozenset(special_ids))


def load_tokenizer(folder: str):
  """(tokenizers.Tokenizer, SpecialTokens) from the folder's tokenizer.json."""
  from tokenizers import Tokenizer  # pylint: disable=g-import-not-at-top
  path = os.path.join(folder, "tokenizer.json")
  if not os.path.exists(path):
    raise UserError(
        f"--pretrained: {folder} has no tokenizer.json (write it with transformers: "
        "AutoTokenizer.from_pretrained(FOLDER).save_pretrained(FOLDER))")
  tokenizer = Tokenizer.from_file(path)
  tokenizer.no_padding()
  tokenizer.no_truncation()
  return tokenizer, _special_tokens(tokenizer, folder)


PREFIX = "hf:"


def published_name(init_from: str) -> str:
  """The model that `config.init_from` names ("hf:NAME_OR_PATH")."""
  if not isinstance(init_from, str) or not init_from.startswith(PREFIX) or not init_from[3:]:
    raise UserError(f"config.init_from must be {PREFIX}NAME_OR_PATH (a published Hugging Face "
                    f"model: a folder or a name in the local cache), got {init_from!r}")
  return init_from[len(PREFIX):]


@dataclasses.dataclass(frozen=True)
class Description:
  """What a run needs to know of a published model before training, read without its
  weights: where it is, its family, vocabulary, positions and special ids, and the
  `transformer.Encoder` / `Decoder` settings that hold its parameters."""
  folder: str
  model_type: str
  vocab_size: int
  max_length: int
  special_ids: Any  # data.tokenizer.SpecialIds
  network_settings: dict


def _weight_names(folder: str) -> set[str]:
  """The checkpoint's parameter names, reading no array where the format allows it."""
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  single = os.path.join(folder, "model.safetensors")
  if os.path.exists(single):
    with safe_open(single, framework="numpy") as f:
      return set(f.keys())
  index = _read_json(folder, "model.safetensors.index.json")
  if index:
    return set(index["weight_map"])
  return set(read_state_dict(folder))


def _network(hf_config: dict, model_type: str, names: set[str], dropout, dtype):
  from ssl_jax.models import hf_convert  # pylint: disable=g-import-not-at-top
  if model_type in DECODER_TYPES:
    return hf_convert.decoder_from_hf_config(hf_config, dropout, dtype)
  layout = hf_convert.ENCODER_LAYOUTS[model_type]
  has_pooler = bool(layout.pooler) and any(n.endswith(f"{layout.pooler}.weight") for n in names)
  return hf_convert.encoder_from_hf_config(hf_config, dropout, dtype, use_pooler=has_pooler,
                                           mlm_head=layout.head_bias in names)


def _model_type(folder: str, hf_config: dict) -> str:
  model_type = hf_config.get("model_type")
  if model_type not in ENCODER_TYPES + DECODER_TYPES:
    raise UserError(
        f"--pretrained: {folder} holds a {model_type or 'model without config.json'!r}; "
        f"supported: {', '.join(ENCODER_TYPES + DECODER_TYPES)}")
  return model_type


def describe(name_or_path: str) -> Description:
  """The `Description` of the published model in a folder or the local hub cache."""
  from ssl_jax.data import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
  folder = os.path.abspath(find_folder(name_or_path))
  hf_config = _read_json(folder, "config.json")
  model_type = _model_type(folder, hf_config)
  tokenizer, special = load_tokenizer(folder)
  try:
    network = _network(hf_config, model_type, _weight_names(folder), None, "float32")
  except ValueError as e:
    raise UserError(f"--pretrained: {folder} cannot be converted: {e}") from e
  settings = {field.name: getattr(network, field.name) for field in dataclasses.fields(network)
              if field.name not in ("parent", "name", "vocab_size", "size", "dtype", "remat")}
  offset = settings.get("position_offset", 0)
  ends = special.bos if special.bos is not None else special.eos
  ids = tokenizer_lib.SpecialIds(
      pad=special.pad if special.pad is not None else 0, cls=ends,
      sep=special.eos if special.eos is not None else ends, mask=special.mask,
      excluded=tuple(sorted(special.all_ids)))
  if ids.cls is None:
    raise UserError(f"--pretrained: {folder}'s tokenizer names no start or end token "
                    "(cls_token / bos_token in tokenizer_config.json)")
  return Description(folder=folder, model_type=model_type, vocab_size=hf_config["vocab_size"]
                     if "vocab_size" in hf_config else tokenizer.get_vocab_size(),
                     max_length=settings["max_length"] - offset, special_ids=ids,
                     network_settings=settings)


def load(name_or_path: str, dropout: float | None = None, dtype: Any = "float32") -> Pretrained:
  """The published model in a folder or the local hub cache (see the module docstring).
  `dropout` overrides the config's rates (0 for inference; None keeps them, for training)."""
  from ssl_jax.models import hf_convert  # pylint: disable=g-import-not-at-top
  folder = find_folder(name_or_path)
  hf_config = _read_json(folder, "config.json")
  model_type = _model_type(folder, hf_config)
  state_dict = read_state_dict(folder)
  tokenizer, special = load_tokenizer(folder)
  heads = hf_config.get("num_attention_heads", hf_config.get("n_heads", hf_config.get("n_head")))
  try:
    if model_type in DECODER_TYPES:
      params, nsp_params = hf_convert.gpt2_params(state_dict, heads), None
      network = hf_convert.decoder_from_hf_config(hf_config, dropout, dtype)
    else:
      params, nsp_params = hf_convert.encoder_params(state_dict, model_type, heads)
      network = hf_convert.encoder_from_hf_config(
          hf_config, dropout, dtype, use_pooler=hf_convert.has_pooler(params),
          mlm_head=hf_convert.has_mlm_head(params))
  except ValueError as e:
    raise UserError(f"--pretrained: {folder} cannot be converted: {e}") from e
  return Pretrained(folder=folder, model_type=model_type, hf_config=hf_config, network=network,
                    params=params, nsp_params=nsp_params, tokenizer=tokenizer, special=special)


_MEAN_POOLED = []


def _mean_pooled():
  """A module-level jitted (network static, params, tokens, mask) -> mean-pooled last hidden
  states: one compilation per network and batch shape across calls (propagate calls `embed`
  once per batch), not one per call. Built on first use, so importing this module needs no
  JAX."""
  if not _MEAN_POOLED:
    import functools  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    from ssl_jax.models import transformer  # pylint: disable=g-import-not-at-top

    @functools.partial(jax.jit, static_argnums=0)
    def pooled(network, params, tokens, mask):
      hidden = network.apply({"params": params}, tokens, attention_mask=mask,
                             method=type(network).encode)
      return transformer.masked_mean_pool(hidden.astype(jnp.float32), mask)
    _MEAN_POOLED.append(pooled)
  return _MEAN_POOLED[0]


def embed(model: Pretrained, texts: list[str], batch_size: int = 32,
          on_batch=None) -> np.ndarray:
  """Frozen features [n, width]: the last hidden states mean-pooled over each text's real
  tokens (special tokens included, as `AutoModel` + mean pooling does in the introductions).
  `on_batch(n)` is called after each batch (a progress bar)."""
  def pooled(params, tokens, mask):
    return _mean_pooled()(model.network, params, tokens, mask)

  rows = []
  for start in range(0, len(texts), batch_size):
    chunk = texts[start:start + batch_size]
    tokens, mask = model.encode(chunk)
    # Pad the batch to full size and a multiple of 16 tokens: a few compilations, not one each.
    length = -(-tokens.shape[1] // 16) * 16
    length = min(length, model.max_length)
    padded = np.zeros((batch_size, length), np.int32)
    padded_mask = np.zeros((batch_size, length), np.int32)
    padded[:len(chunk), :tokens.shape[1]] = tokens
    padded_mask[:len(chunk), :tokens.shape[1]] = mask
    padded_mask[len(chunk):, 0] = 1  # filler rows attend to one token; they are dropped
    rows.append(np.asarray(pooled(model.params, padded, padded_mask))[:len(chunk)])
    if on_batch:
      on_batch(len(chunk))
  return np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)


def merged(fresh: dict, published: dict) -> dict:
  """`fresh` (a network's initial parameters) with every subtree that `published` holds
  replaced by the published arrays, which must have the same structure and shapes; subtrees
  it lacks (None, or an absent key: a head the checkpoint does not have) stay fresh."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  out = {}
  for key, value in fresh.items():
    given = published.get(key)
    if given is None:
      out[key] = value
    elif isinstance(value, dict) and isinstance(given, dict) and set(given) != set(value):
      out[key] = merged(value, given)
    else:
      if jax.tree.structure(given) != jax.tree.structure(value) or any(
          np.shape(a) != np.shape(b)
          for a, b in zip(jax.tree.leaves(given), jax.tree.leaves(value))):
        raise UserError(f"published parameters '{key}' do not fit the network: "
                        f"{jax.tree.map(np.shape, given)} vs {jax.tree.map(np.shape, value)}")
      out[key] = jax.tree.map(lambda a, b: np.asarray(a, dtype=np.asarray(b).dtype), given,
                              value)
  unknown = {key for key, value in published.items() if value is not None} - set(fresh)
  if unknown:
    raise UserError(f"published parameters {sorted(unknown)} have no place in the network")
  return out
