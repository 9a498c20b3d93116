"""Tiny published-format models for the tests, built offline with `transformers`: random
weights (N(0, 0.2), so that no LayerNorm is the identity and no bias is zero) and real
tokenizers (WordPiece over a small vocabulary, byte-level BPE trained on a few sentences),
written by `save_pretrained` in safetensors with tokenizer.json, as the hub cache holds them.
Needs torch and transformers (requirements-parity.txt).
"""
import json
import os

import torch
import transformers
from tokenizers import ByteLevelBPETokenizer

WIDTH, HEADS = 32, 4
CORPUS = ["The capital of France is Paris. Lyon is a city, and the Seine is a river.",
          "Café au lait, résumé, naïve: accents and punctuation! Hello world?",
          "Paris and Lyon are cities of France; the Rhône is a river too."]
_WORDS = sorted(set("the capital of france is paris lyon city a an and river seine cafe "
                    "resume naive hello world cities are too accents punctuation".split()))
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
# A BERT vocabulary as the published ones lay it out: [PAD], unused rows, then the specials.
WORDPIECE_VOCAB = list(dict.fromkeys(
    ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(",.!?;:")
    + _WORDS + list(_LETTERS) + [f"##{c}" for c in _LETTERS]))


def randomised(model, seed):
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for parameter in model.parameters():
      parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
  return model.eval()


def wordpiece_tokenizer(cls=transformers.BertTokenizer):
  return cls(vocab={token: i for i, token in enumerate(WORDPIECE_VOCAB)}, do_lower_case=True)


def byte_level_bpe(cls, **kwargs):
  trainer = ByteLevelBPETokenizer()
  trainer.train_from_iterator(CORPUS * 2, vocab_size=320, min_frequency=1,
                              special_tokens=kwargs.pop("special_tokens"))
  merges = [tuple(pair) for pair in json.loads(trainer.to_str())["model"]["merges"]]
  return cls(vocab=trainer.get_vocab(), merges=merges, **kwargs)


def _bert_like(cls, config_cls, tokenizer, **sizes):
  config = config_cls(vocab_size=len(tokenizer), max_position_embeddings=64, **sizes)
  return cls(config), tokenizer


def build(kind: str, seed: int = 0):
  """(model, tokenizer) of `kind`: bert_pretraining, bert_mlm, bert_base_model, distilbert_mlm,
  distilbert_base_model, roberta_mlm, gpt2."""
  bert_sizes = dict(hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=HEADS,
                    intermediate_size=64)
  distil_sizes = dict(dim=WIDTH, n_layers=2, n_heads=HEADS, hidden_dim=64)
  if kind.startswith("bert"):
    cls = {"bert_pretraining": transformers.BertForPreTraining,
           "bert_mlm": transformers.BertForMaskedLM, "bert_base_model": transformers.BertModel}[kind]
    model, tokenizer = _bert_like(cls, transformers.BertConfig, wordpiece_tokenizer(),
                                  **bert_sizes)
  elif kind.startswith("distilbert"):
    cls = {"distilbert_mlm": transformers.DistilBertForMaskedLM,
           "distilbert_base_model": transformers.DistilBertModel}[kind]
    model, tokenizer = _bert_like(cls, transformers.DistilBertConfig,
                                  wordpiece_tokenizer(transformers.DistilBertTokenizer),
                                  **distil_sizes)
  elif kind == "roberta_mlm":
    tokenizer = byte_level_bpe(transformers.RobertaTokenizer,
                               special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    # As roberta-base: one segment type, LayerNorm epsilon 1e-5, positions from row 2.
    config = transformers.RobertaConfig(
        vocab_size=len(tokenizer), max_position_embeddings=66, type_vocab_size=1,
        layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2, **bert_sizes)
    model = transformers.RobertaForMaskedLM(config)
  elif kind == "gpt2":
    tokenizer = byte_level_bpe(transformers.GPT2Tokenizer, special_tokens=["<|endoftext|>"])
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = transformers.GPT2Config(vocab_size=len(tokenizer), n_embd=WIDTH, n_layer=2,
                                     n_head=HEADS, n_positions=64, bos_token_id=eos,
                                     eos_token_id=eos)
    model = transformers.GPT2LMHeadModel(config)
  else:
    raise ValueError(kind)
  return randomised(model, seed), tokenizer


def save(kind: str, folder: str, seed: int = 0):
  """Builds `kind` and writes it with its tokenizer into `folder`; returns (model, tokenizer)."""
  model, tokenizer = build(kind, seed)
  os.makedirs(folder, exist_ok=True)
  model.save_pretrained(folder)
  tokenizer.save_pretrained(folder)
  return model, tokenizer
