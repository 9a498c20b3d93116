"""The embedded `python_docs` corpus and the WordPiece tokenizer trained on it."""
import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from ssl_jax.data import stream
from ssl_jax.data import tokenizer as tokenization
from ssl_jax.data.builders import python_docs

VOCAB_SIZE = 2000
SENTENCES = [
    "The parser reads a file and returns a tree.",
    "Return the number of items in a container, or raise an error.",
    "This module provides classes for reading and writing archives.",
]


def _config(data_dir, name: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "dataset": f"python_docs/{name}",
      "data": {"data_dir": str(data_dir), "train_split": "train", "test_split": "test"}})


def _read(builder) -> dict[str, dict[str, np.ndarray]]:
  return {split: tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
          for split in ("train", "test")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """Both configs prepared offline into a fresh data dir by `stream.load_builder`, read
  back as numpy: {config: (builder, {split: features})}."""
  data_dir = tmp_path_factory.mktemp("tfds")
  prepared = {}
  for name in ("plain", "labelled"):
    builder = stream.load_builder(_config(data_dir, name))
    prepared[name] = builder, _read(builder)
  return prepared


@pytest.fixture(scope="module")
def trained(corpus):
  """A tokenizer trained on the `plain` training split, and those training texts."""
  _, splits = corpus["plain"]
  texts = [text.decode("utf-8") for text in splits["train"]["text"]]
  return tokenization.train_tokenizer(texts, VOCAB_SIZE, lowercase=True), texts


# Corpus.

def test_builder_metadata_and_split_sizes(corpus):
  for name, (builder, splits) in corpus.items():
    assert builder.name == "python_docs" and builder.builder_config.name == name
    assert builder.info.metadata["python_version"] == python_docs.PYTHON_VERSION
    assert python_docs.PYTHON_VERSION in builder.info.description
    for split in ("train", "test"):
      count = builder.info.splits[split].num_examples
      assert count == len(splits[split]["text"]) > 0
    # About a fifth of the examples (by hash) is held out.
    total = sum(builder.info.splits[split].num_examples for split in ("train", "test"))
    assert 0.1 < builder.info.splits["test"].num_examples / total < 0.3
  assert corpus["plain"][0].info.splits["train"].num_examples > 5000
  assert corpus["labelled"][0].info.splits["train"].num_examples > 1000
  if python_docs.PYTHON_VERSION == "3.11.7":  # the sizes the builder docstring states
    assert {name: tuple(builder.info.splits[split].num_examples for split in ("train", "test"))
            for name, (builder, _) in corpus.items()} == {
                "plain": (8752, 2451), "labelled": (1960, 517)}


def test_no_text_in_both_splits_and_no_duplicates(corpus):
  for _, splits in corpus.values():
    train, test = (list(splits[split]["text"]) for split in ("train", "test"))
    assert len(set(train)) == len(train) and len(set(test)) == len(test)
    assert not set(train) & set(test)


def test_plain_split_is_by_document(corpus):
  """Every document lies wholly in one split, the one its name hashes to."""
  _, splits = corpus["plain"]
  for split in ("train", "test"):
    documents = {document.decode("utf-8") for document in splits[split]["document"]}
    assert all(python_docs.is_test(document) == (split == "test") for document in documents)
  documents = {d.decode("utf-8") for split in splits.values() for d in split["document"]}
  assert "topic:for" in documents and "json.dumps" in documents  # both sources are in
  # Paragraphs are single lines of prose of at least MIN_WORDS words.
  for text in splits["train"]["text"][:2000]:
    text = text.decode("utf-8")
    assert "\n" not in text and len(text.split()) >= python_docs.MIN_WORDS


def test_labels_valid_and_every_class_in_both_splits(corpus):
  builder, splits = corpus["labelled"]
  names = builder.info.features["label"].names
  assert names == list(python_docs.LABELLED_PACKAGES)
  for split in ("train", "test"):
    labels = splits[split]["label"]
    assert labels.min() >= 0 and labels.max() < len(names)
    assert np.bincount(labels, minlength=len(names)).min() >= (50 if split == "train" else 10)


def test_corpus_is_deterministic(corpus):
  """Reading the texts again, in another isolated interpreter, gives the stored corpus, text
  for text and split for split."""
  again = python_docs.pristine_corpora()
  _, splits = corpus["plain"]
  stored = sorted(t for split in ("train", "test") for t in splits[split]["text"])
  assert stored == sorted(p["text"].encode("utf-8") for p in again["plain"])
  _, splits = corpus["labelled"]
  test = sorted(d["text"].encode("utf-8") for d in again["labelled"]
                if python_docs.is_test(d["text"]))
  assert sorted(splits["test"]["text"]) == test


def test_corpus_ignores_what_the_preparing_process_patched(monkeypatch):
  """A package that replaces a standard function (torch replaces `inspect.getfile`) changes
  the live docstrings, but not the corpus, which an isolated interpreter reads."""
  import inspect  # pylint: disable=g-import-not-at-top
  def patched_getfile(obj):
    """Not CPython's documentation."""
    return obj
  patched_getfile.__module__ = "some_package"
  monkeypatch.setattr(inspect, "getfile", patched_getfile)
  live = {p.text for p in python_docs.plain_corpus()}
  pristine = {p["text"] for p in python_docs.pristine_corpora()["plain"]}
  getfile_doc = "Work out which source or compiled file an object was defined in."
  assert getfile_doc in pristine and getfile_doc not in live


def test_paragraph_rule():
  text = "Title\n\nThe first paragraph\n  spans two lines.\n\n>>> print(1)\n1\n\nToo short."
  assert python_docs.paragraphs(text) == ["The first paragraph spans two lines."]


# Tokenizer.

def test_special_token_ids_fixed(trained):
  tokenizer, _ = trained
  for token_id, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]):
    assert tokenizer.token_to_id(token) == token_id
  assert tokenization.PAD_ID == 0 and tokenization.MASK_ID == 4
  assert tokenizer.get_vocab_size() == VOCAB_SIZE


def test_round_trip_of_ordinary_sentences(trained):
  tokenizer, _ = trained
  ids, mask = tokenization.encode_batch(tokenizer, SENTENCES, max_length=64)
  for row, row_mask, sentence in zip(ids, mask, SENTENCES):
    assert row_mask.sum() < 64  # nothing was truncated
    assert tokenization.decode(tokenizer, row) == tokenization.normalize(tokenizer, sentence)
    assert tokenization.normalize(tokenizer, sentence) == sentence.lower()
  assert tokenization.UNK_ID not in ids


def test_case_kept_without_lowercase(trained):
  _, texts = trained
  tokenizer = tokenization.train_tokenizer(texts[:500], 800, lowercase=False)
  ids, _ = tokenization.encode_batch(tokenizer, ["Return the Value."], max_length=16)
  assert tokenization.decode(tokenizer, ids[0]) == "Return the Value."


def test_padding_mask_and_truncation(trained):
  tokenizer, _ = trained
  bare = tokenizer.encode(SENTENCES[0], add_special_tokens=False).ids
  ids, mask = tokenization.encode_batch(tokenizer, [SENTENCES[0], ""], max_length=len(bare) + 3)
  assert ids.dtype == np.int32 and mask.dtype == np.int32 and ids.shape == (2, len(bare) + 3)
  np.testing.assert_array_equal(ids[0], bare + [0, 0, 0])
  np.testing.assert_array_equal(mask[0], [1] * len(bare) + [0, 0, 0])
  np.testing.assert_array_equal(ids[1], 0)
  np.testing.assert_array_equal(mask[1], 0)
  ids, mask = tokenization.encode_batch(tokenizer, [SENTENCES[0]], max_length=4)
  np.testing.assert_array_equal(ids[0], bare[:4])
  np.testing.assert_array_equal(mask[0], 1)
  ids, mask = tokenization.encode_batch(tokenizer, [SENTENCES[0]], max_length=5, frame=True)
  np.testing.assert_array_equal(ids[0], [2] + bare[:3] + [3])
  ids, _ = tokenization.encode_batch(tokenizer, ["a tree."], max_length=6, frame=True)
  np.testing.assert_array_equal(
      ids[0], [2] + tokenizer.encode("a tree.", add_special_tokens=False).ids + [3, 0])


def test_sentence_pairs(trained):
  tokenizer, _ = trained
  a = tokenizer.encode("the file.", add_special_tokens=False).ids
  b = tokenizer.encode("a tree.", add_special_tokens=False).ids
  length = len(a) + len(b) + 5
  ids, mask, segments = tokenization.encode_pairs(tokenizer, ["the file."], ["a tree."], length)
  np.testing.assert_array_equal(ids[0], [2, *a, 3, *b, 3, 0, 0])
  np.testing.assert_array_equal(mask[0], [1] * (length - 2) + [0, 0])
  np.testing.assert_array_equal(segments[0], [0] * (len(a) + 2) + [1] * (len(b) + 1) + [0, 0])
  # Too long: the longer segment loses its end first, both keep their beginnings.
  long = tokenizer.encode(SENTENCES[1], add_special_tokens=False).ids
  ids, mask, segments = tokenization.encode_pairs(
      tokenizer, [SENTENCES[1]], ["a tree."], len(b) + 3 + 4)
  np.testing.assert_array_equal(ids[0], [2, *long[:4], 3, *b, 3])
  assert mask.all() and segments[0].sum() == len(b) + 1


def test_save_load_gives_identical_ids(trained, tmp_path):
  tokenizer, texts = trained
  path = tmp_path / "tokenizer.json"
  tokenization.save(tokenizer, path)
  reloaded = tokenization.load(path)
  for frame in (False, True):
    np.testing.assert_array_equal(
        tokenization.encode_batch(tokenizer, texts[:200], 48, frame=frame)[0],
        tokenization.encode_batch(reloaded, texts[:200], 48, frame=frame)[0])
  assert reloaded.get_vocab() == tokenizer.get_vocab()


def test_training_is_deterministic(trained):
  _, texts = trained
  first = tokenization.train_tokenizer(texts[:1500], 1000)
  second = tokenization.train_tokenizer(texts[:1500], 1000)
  assert first.get_vocab() == second.get_vocab()
  assert first.to_str() == second.to_str()


def test_training_is_deterministic_across_processes(trained, tmp_path):
  """Another interpreter, with another string-hash seed, learns the same tokenizer."""
  _, texts = trained
  (tmp_path / "texts.json").write_text(json.dumps(texts[:1500]))
  here = tokenization.train_tokenizer(texts[:1500], 1000).to_str()
  program = (
      "import json, sys; from ssl_jax.data import tokenizer as t; "
      "texts = json.load(open(sys.argv[1])); "
      "sys.stdout.write(t.train_tokenizer(texts, 1000).to_str())")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for seed in ("1", "2"):
    there = subprocess.run(
        [sys.executable, "-c", program, str(tmp_path / "texts.json")], check=True,
        capture_output=True, text=True, cwd=root,
        env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": root}).stdout
    assert there == here


def test_user_errors(trained, tmp_path):
  tokenizer, texts = trained
  with pytest.raises(ValueError, match="vocab_size 5"):
    tokenization.train_tokenizer(texts, 5)
  with pytest.raises(ValueError, match="smaller than"):
    tokenization.train_tokenizer(texts[:100], 20)
  with pytest.raises(ValueError, match="empty"):
    tokenization.train_tokenizer(["", " "], 100)
  with pytest.raises(ValueError, match="max_length 2"):
    tokenization.encode_batch(tokenizer, ["x"], 2, frame=True)
  with pytest.raises(ValueError, match="1 first sentences but 2"):
    tokenization.encode_pairs(tokenizer, ["a"], ["b", "c"], 8)
  with pytest.raises(ValueError, match="not one string"):
    tokenization.encode_batch(tokenizer, "a sentence", 8)
  with pytest.raises(ValueError, match="no tokenizer file"):
    tokenization.load(tmp_path / "missing.json")
  (tmp_path / "bad.json").write_text("{}")
  with pytest.raises(ValueError, match="not a tokenizer"):
    tokenization.load(tmp_path / "bad.json")
