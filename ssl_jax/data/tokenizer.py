"""A BERT-style WordPiece tokenizer, trained offline on the run's own corpus.

Text objectives (masked LM, causal LM, text-classification probes) need a vocabulary; one
learned from the training split of the embedded `python_docs` corpus needs no download and
covers its technical words. A run trains it once, saves it as one JSON file in its workdir,
and evaluation or inference reload exactly that vocabulary with `load`. Hugging Face
`tokenizers` does the normalising, pre-tokenising, encoding and the JSON format; the
vocabulary is learned here (`_learn_vocabulary`) because its own trainer is not
deterministic.

The special tokens have fixed ids, the same for every vocabulary size, so methods can name
them without looking them up: [PAD]=0 (padding, masked out of attention), [UNK]=1,
[CLS]=2 (start of a sequence, its pooled representation), [SEP]=3 (end of a segment),
[MASK]=4 (the masked-LM corruption token).
"""

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
import dataclasses
import heapq
import os

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(len(SPECIAL_TOKENS))
FIRST_WORD_ID = len(SPECIAL_TOKENS)  # ids from here on are words and subwords
_SUBWORD_PREFIX = "##"


@dataclasses.dataclass(frozen=True)
class SpecialIds:
  """The ids a text pipeline and the language objectives give a meaning to: `pad` fills rows,
  `cls` starts a text (BERT's [CLS], RoBERTa's <s>, GPT-2's <|endoftext|>), `sep` ends one or
  separates a pair, `mask` is the masked-LM corruption, and `excluded` are never selected for
  masking, drawn as random replacements, counted in the bag of words, or proposed by
  fill-mask. The defaults are this module's fixed ids; a run that starts from a published
  model (`config.init_from`) has that model's, in `config.tokenizer.special_ids`.
  """
  pad: int = PAD_ID
  cls: int = CLS_ID
  sep: int = SEP_ID
  mask: int | None = MASK_ID
  excluded: tuple[int, ...] = tuple(range(len(SPECIAL_TOKENS)))


def special_ids(config) -> SpecialIds:
  """The run's `SpecialIds`: `config.tokenizer.special_ids` when set (a published model's
  vocabulary), else the fixed ids of the vocabularies learned here."""
  section: Mapping | None = config.tokenizer.get("special_ids") if "tokenizer" in config else None
  if not section:
    return SpecialIds()
  values = dict(section)
  return SpecialIds(**{**values, "excluded": tuple(sorted(values["excluded"]))})


def _new_tokenizer(vocabulary: dict[str, int], lowercase: bool) -> Tokenizer:
  """A BERT-style WordPiece tokenizer over `vocabulary` (token -> id).

  As in BERT (Devlin et al., 2019, section 3): the text is normalised (control characters
  removed, whitespace unified, accents stripped and lowercased when `lowercase`), split on
  whitespace and around every punctuation character, and each word is cut greedily into the
  longest vocabulary pieces, continuations prefixed with "##".
  """
  tokenizer = Tokenizer(models.WordPiece(
      vocabulary, unk_token=UNK, continuing_subword_prefix=_SUBWORD_PREFIX))
  tokenizer.normalizer = normalizers.BertNormalizer(
      clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase)
  tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tokenizer.decoder = decoders.WordPiece(prefix=_SUBWORD_PREFIX)
  # Registered as special (their ids are unchanged): never split, dropped by `decode`.
  tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
  return tokenizer


def _merged(first: str, second: str) -> str:
  """The token that joins two adjacent pieces of a word (the second is a "##" piece)."""
  return first + second[len(_SUBWORD_PREFIX):]


def _merge_pair(pieces: list[str], pair: tuple[str, str], token: str) -> list[str]:
  """`pieces` with every occurrence of `pair`, left to right, replaced by `token`."""
  merged, i = [], 0
  while i < len(pieces):
    if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == pair:
      merged.append(token)
      i += 2
    else:
      merged.append(pieces[i])
      i += 1
  return merged


def _learn_vocabulary(word_counts: Counter, vocab_size: int, min_frequency: int) -> list[str]:
  """Learns WordPiece tokens by greedy pair merging, the algorithm of `tokenizers`'
  WordPieceTrainer (byte-pair encoding, Sennrich et al., 2016, over characters, with
  "##" continuation pieces), with ties broken by the pairs' text.

  Not `WordPieceTrainer` itself: in tokenizers 0.23 it breaks ties between equally
  frequent pairs by hash-map order, so two runs on the same texts give different
  vocabularies (measured: up to 28 of 8,000 tokens differ); 91% of its 8,000 tokens on the
  `python_docs` training split are also learned here. Every word starts as its
  characters; the most frequent adjacent pair (counted over word occurrences, at least
  `min_frequency`) is merged everywhere and its join becomes a token, until the vocabulary
  (special tokens, every character seen, merged tokens) has `vocab_size` entries. Among
  equally frequent pairs the alphabetically first is merged.
  """
  words = [[word[0], *(_SUBWORD_PREFIX + c for c in word[1:])] for word in word_counts]
  counts = list(word_counts.values())
  tokens = set(piece for pieces in words for piece in pieces)
  vocabulary = [*SPECIAL_TOKENS, *sorted(tokens - set(SPECIAL_TOKENS))]
  pair_counts: Counter = Counter()
  pair_words: dict[tuple[str, str], set[int]] = {}
  for index, pieces in enumerate(words):
    for pair in zip(pieces, pieces[1:]):
      pair_counts[pair] += counts[index]
      pair_words.setdefault(pair, set()).add(index)
  # Max-heap of (-count, pair); an entry whose count is stale is skipped when popped.
  heap = [(-count, pair) for pair, count in pair_counts.items()]
  heapq.heapify(heap)
  while len(vocabulary) < vocab_size and heap:
    negative_count, pair = heapq.heappop(heap)
    if -negative_count != pair_counts.get(pair, 0):
      continue
    if -negative_count < min_frequency:
      break
    token = _merged(*pair)
    if token not in tokens:
      tokens.add(token)
      vocabulary.append(token)
    changed = set()
    for index in sorted(pair_words.pop(pair)):
      pieces = words[index]
      for old in zip(pieces, pieces[1:]):
        pair_counts[old] -= counts[index]
        changed.add(old)
      merged = words[index] = _merge_pair(pieces, pair, token)
      for new in zip(merged, merged[1:]):
        pair_counts[new] += counts[index]
        pair_words.setdefault(new, set()).add(index)
        changed.add(new)
    for changed_pair in changed:
      if changed_pair != pair and pair_counts[changed_pair] > 0:
        heapq.heappush(heap, (-pair_counts[changed_pair], changed_pair))
    del pair_counts[pair]
  return vocabulary


def train_tokenizer(texts: Iterable[str], vocab_size: int, lowercase: bool = True,
                    min_frequency: int = 2) -> Tokenizer:
  """Trains a WordPiece tokenizer of at most `vocab_size` tokens on `texts`.

  The texts are normalised and pre-tokenised exactly as the returned tokenizer will see
  them (`_new_tokenizer`), and the vocabulary is learned by `_learn_vocabulary`. Subwords
  must occur `min_frequency` times to become tokens, so one-off strings waste no entries.
  Training is deterministic: the same texts and arguments give the same tokens with the
  same ids (special tokens 0..4, then characters in code-point order, then merges in the
  order they were learned).
  """
  if vocab_size <= len(SPECIAL_TOKENS):
    raise ValueError(
        f"vocab_size {vocab_size} leaves no room beyond the {len(SPECIAL_TOKENS)} special tokens")
  if isinstance(texts, str):
    raise ValueError("texts must be an iterable of strings, not one string")
  reader = _new_tokenizer({token: i for i, token in enumerate(SPECIAL_TOKENS)}, lowercase)
  word_counts: Counter = Counter()
  for text in texts:
    normalised = reader.normalizer.normalize_str(text)
    word_counts.update(word for word, _ in reader.pre_tokenizer.pre_tokenize_str(normalised))
  if not word_counts:
    raise ValueError("cannot train a tokenizer on no text: every training text is empty")
  vocabulary = _learn_vocabulary(word_counts, vocab_size, min_frequency)
  if len(vocabulary) > vocab_size:
    raise ValueError(
        f"vocab_size {vocab_size} is smaller than the {len(vocabulary)} special tokens and "
        "single characters of the training texts")
  tokenizer = _new_tokenizer({token: i for i, token in enumerate(vocabulary)}, lowercase)
  _check_special_tokens(tokenizer)
  return tokenizer


def _check_special_tokens(tokenizer: Tokenizer) -> None:
  """Fails unless the special tokens have their fixed ids (a foreign or edited vocabulary)."""
  for expected, token in enumerate(SPECIAL_TOKENS):
    found = tokenizer.token_to_id(token)
    if found != expected:
      raise ValueError(f"tokenizer has {token} at id {found}, expected {expected}")


def save(tokenizer: Tokenizer, path: str | os.PathLike) -> None:
  """Writes the tokenizer (normaliser, pre-tokenizer, vocabulary) as one JSON file."""
  with open(path, "w", encoding="utf-8") as file:
    file.write(tokenizer.to_str(pretty=True))


def load(path: str | os.PathLike, fixed_special_ids: bool = True) -> Tokenizer:
  """Reads a tokenizer written by `save`, checking the fixed special-token ids (unless it is
  a published model's, `fixed_special_ids=False`)."""
  if not os.path.exists(path):
    raise ValueError(f"no tokenizer file at {path}")
  try:
    tokenizer = Tokenizer.from_file(os.fspath(path))
  except Exception as e:  # pylint: disable=broad-except  (tokenizers raises bare Exception)
    raise ValueError(f"{path} is not a tokenizer JSON file: {e}") from e
  if fixed_special_ids:
    _check_special_tokens(tokenizer)
  return tokenizer


def token_ids(tokenizer: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
  """The WordPiece ids of each text, without special tokens."""
  if isinstance(texts, str):
    raise ValueError("texts must be a sequence of strings, not one string")
  encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
  return [encoding.ids for encoding in encodings]


def _pad(rows: list[list[int]], max_length: int, pad_id: int = PAD_ID
         ) -> tuple[np.ndarray, np.ndarray]:
  """Rows (each at most `max_length` long) right-padded with `pad_id`, and their masks."""
  ids = np.full((len(rows), max_length), pad_id, np.int32)
  mask = np.zeros((len(rows), max_length), np.int32)
  for i, row in enumerate(rows):
    ids[i, :len(row)] = row
    mask[i, :len(row)] = 1
  return ids, mask


def encode_batch(tokenizer: Tokenizer, texts: Sequence[str], max_length: int,
                 frame: bool = False, specials: SpecialIds = SpecialIds()
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Encodes texts into fixed-length rows: (ids int32 [B, L], attention_mask int32 [B, L]).

  Each text's tokens are truncated to fit `max_length` (the end is cut) and right-padded
  with [PAD]; the mask is 1 on tokens and 0 on padding. With `frame`, a row is
  [CLS] tokens [SEP], as BERT's classifier and masked LM expect; without it, a row is the
  bare tokens a causal LM reads. `specials` are the vocabulary's ids of [CLS], [SEP], [PAD].
  """
  ids, reserved = specials, (2 if frame else 0)
  if max_length <= reserved:
    raise ValueError(f"max_length {max_length} leaves no room for tokens"
                     + (" between [CLS] and [SEP]" if frame else ""))
  rows = []
  for tokens in token_ids(tokenizer, texts):
    tokens = tokens[:max_length - reserved]
    rows.append([ids.cls, *tokens, ids.sep] if frame else tokens)
  return _pad(rows, max_length, ids.pad)


def encode_pairs(tokenizer: Tokenizer, first: Sequence[str], second: Sequence[str],
                 max_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Encodes sentence pairs as BERT does: [CLS] A [SEP] B [SEP], then [PAD].

  Returns (ids, attention_mask, segment_ids), each int32 [B, max_length]; segment ids are 0
  on [CLS], A and its [SEP], 1 on B and its [SEP], 0 on padding (next-sentence prediction
  and other pair tasks tell the segments apart by them). A pair too long loses tokens from
  the end of whichever segment is longer, one at a time, so both keep their beginnings.
  """
  if len(first) != len(second):
    raise ValueError(f"{len(first)} first sentences but {len(second)} second sentences")
  if max_length <= 3:
    raise ValueError(f"max_length {max_length} leaves no room for a pair between "
                     "[CLS] A [SEP] B [SEP]")
  rows, segments = [], []
  for tokens_a, tokens_b in zip(token_ids(tokenizer, first), token_ids(tokenizer, second)):
    while len(tokens_a) + len(tokens_b) > max_length - 3:
      if len(tokens_a) > len(tokens_b):
        tokens_a = tokens_a[:-1]
      else:
        tokens_b = tokens_b[:-1]
    rows.append([CLS_ID, *tokens_a, SEP_ID, *tokens_b, SEP_ID])
    segments.append([0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1))
  ids, mask = _pad(rows, max_length)
  segment_ids, _ = _pad(segments, max_length)
  return ids, mask, segment_ids


def decode(tokenizer: Tokenizer, ids: Sequence[int] | np.ndarray) -> str:
  """The text of one row of ids, without special tokens or padding; subwords are rejoined."""
  return tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)


def normalize(tokenizer: Tokenizer, text: str) -> str:
  """`text` as the tokenizer sees it (cleaned, lowercased if so trained): what `decode`
  gives back for ordinary words, with whitespace collapsed."""
  return " ".join(tokenizer.normalizer.normalize_str(text).split())
