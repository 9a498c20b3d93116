"""The text input pipeline: rows, sentence pairs, exact resumption, evaluation batches, the
run's tokenizer, and real TFDS text datasets by name under mock data."""
import itertools
import os

import numpy as np
import pytest

from configs import causal_lm, mlm
from ssl_jax import evaluate
from ssl_jax.data import inputs as inputs_lib
from ssl_jax.data import text_pipeline, tokenizer as tokenizer_lib
from ssl_jax.errors import UserError
from tests.tiny_configs import override


def _config(module, variant="python_docs,runlocal=True", **dotted):
  config = module.get_config(variant)
  config.unlock()
  return override(config, **{"batch_size": 32, **dotted})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """An MLM config with sentence pairs, its workdir and inputs (tokenizer learned here)."""
  workdir = str(tmp_path_factory.mktemp("run"))
  config = _config(mlm)
  inputs = inputs_lib.Inputs(config, workdir, create_tokenizer=True)
  _ = inputs.tokenizer  # learned and saved now, whichever test of this module runs first
  return config, workdir, inputs


def _batches(inputs, start, count):
  return list(itertools.islice(
      inputs.train_batches(start_step=start, process_index=0, process_count=1), count))


def test_sentence_pair_rows_follow_berts_layout(run):
  config, _, inputs = run
  batches = _batches(inputs, 0, 8)
  length = config.data.max_length
  for batch in batches:
    tokens, mask, segments = batch["tokens"], batch["attention_mask"], batch["segment_ids"]
    assert tokens.shape == mask.shape == segments.shape == (32, length)
    for row, row_mask, row_segments in zip(tokens, mask, segments):
      real = int(row_mask.sum())
      assert np.all(row_mask[:real] == 1) and np.all(row_mask[real:] == 0)
      assert np.all(row[real:] == tokenizer_lib.PAD_ID)
      assert row[0] == tokenizer_lib.CLS_ID and row[real - 1] == tokenizer_lib.SEP_ID
      # [CLS] A [SEP] B [SEP]: segment 0 up to the first [SEP], 1 after it, 0 on padding.
      first_sep = int(np.flatnonzero(row == tokenizer_lib.SEP_ID)[0])
      np.testing.assert_array_equal(row_segments[:first_sep + 1], 0)
      np.testing.assert_array_equal(row_segments[first_sep + 1:real], 1)
      np.testing.assert_array_equal(row_segments[real:], 0)
      assert np.sum(row == tokenizer_lib.SEP_ID) == 2
  labels = np.concatenate([b["next_sentence"] for b in batches])
  assert set(np.unique(labels)) == {0, 1}
  assert abs(labels.mean() - 0.5) < 0.1  # 256 draws: 0.5 +- 3.2 standard deviations


def test_true_next_sentence_is_the_texts_continuation():
  tokenizer = tokenizer_lib.train_tokenizer(
      ["Alpha beta gamma. Delta epsilon zeta. Eta theta iota."] * 3, vocab_size=60)
  texts = ["Alpha beta gamma. Delta epsilon zeta.", "Eta theta iota. Alpha beta."]
  rows = text_pipeline.encode_pairs(tokenizer, texts, np.array([0.0, 0.0]),
                                    np.array([False, True]), max_length=32)

  def segment(i, s):
    keep = (rows["segment_ids"][i] == s) & (rows["attention_mask"][i] == 1)
    return tokenizer_lib.decode(tokenizer, rows["tokens"][i][keep])

  assert (segment(0, 0), segment(0, 1)) == ("alpha beta gamma.", "delta epsilon zeta.")
  assert rows["next_sentence"].tolist() == [1, 0]
  # The swapped pair takes the other text's continuation.
  assert (segment(1, 0), segment(1, 1)) == ("eta theta iota.", "delta epsilon zeta.")


def test_long_pairs_keep_where_a_and_b_meet():
  a, b = list(range(10, 50)), list(range(50, 90))
  first, second = text_pipeline._fit_pair(a, b, 20)  # pylint: disable=protected-access
  assert first == a[-10:] and second == b[:10]
  first, second = text_pipeline._fit_pair(a[:4], b, 20)  # pylint: disable=protected-access
  assert first == a[:4] and second == b[:16]


def test_resumed_stream_equals_uninterrupted(run):
  _, _, inputs = run
  whole = _batches(inputs, 0, 6)
  resumed = _batches(inputs, 4, 2)
  for expected, got in zip(whole[4:], resumed):
    for key in expected:
      np.testing.assert_array_equal(expected[key], got[key], err_msg=key)
  assert not np.array_equal(whole[0]["tokens"], whole[1]["tokens"])


def test_tokenizer_is_saved_with_the_run_and_reloaded(run):
  config, workdir, inputs = run
  path = os.path.join(workdir, text_pipeline.TOKENIZER_FILE)
  assert os.path.exists(inputs.tokenizer and path)
  reloaded = inputs_lib.Inputs(config, workdir).tokenizer
  assert reloaded.get_vocab() == inputs.tokenizer.get_vocab()
  assert reloaded.get_vocab_size() <= config.tokenizer.vocab_size
  with pytest.raises(UserError, match="no tokenizer in"):
    _ = inputs_lib.Inputs(config, workdir + "_elsewhere").tokenizer


def test_causal_rows_are_single_texts_with_windows(run):
  _, workdir, _ = run
  config = _config(causal_lm, **{"data.max_length": 16})
  batch = _batches(inputs_lib.Inputs(config, workdir), 0, 1)[0]
  assert np.all(batch["segment_ids"] == 0) and np.all(batch["next_sentence"] == 0)
  for row, row_mask in zip(batch["tokens"], batch["attention_mask"]):
    real = int(row_mask.sum())
    assert row[0] == tokenizer_lib.CLS_ID and row[real - 1] == tokenizer_lib.SEP_ID
    assert np.sum(row == tokenizer_lib.SEP_ID) == 1


def test_probe_batches_are_the_labelled_split_in_order(run):
  config, workdir, _ = run
  probed = evaluate.probe_config(config)
  assert probed.dataset == "python_docs/labelled" and config.dataset == "python_docs/plain"
  inputs = inputs_lib.Inputs(probed, workdir)
  info = inputs.info()
  assert (info.num_train_examples, info.num_test_examples, info.num_classes) == (1960, 517, 15)
  batches = list(inputs.eval_batches("test", batch_size=200))
  assert len(batches) == 3 and [int(b["mask"].sum()) for b in batches] == [200, 200, 117]
  last = batches[-1]
  assert np.all(last["tokens"][117:] == 0) and np.all(last["attention_mask"][117:] == 0)
  # Two passes read the same rows in the same order, in two process shards too.
  again = list(inputs.eval_batches("test", batch_size=200))
  np.testing.assert_array_equal(batches[1]["tokens"], again[1]["tokens"])
  shards = [list(inputs.eval_batches("test", batch_size=100, process_index=p, process_count=2))
            for p in range(2)]
  assert len(shards[0]) == len(shards[1])
  labels = np.concatenate([b["label"][b["mask"]] for s in shards for b in s])
  np.testing.assert_array_equal(labels, np.concatenate([b["label"][b["mask"]] for b in batches]))


def test_bad_text_settings_are_user_errors(run):
  _, workdir, _ = run
  with pytest.raises(UserError, match="max_length must be >= 4"):
    inputs_lib.Inputs(_config(mlm, **{"data.max_length": 3}), workdir).info()
  with pytest.raises(UserError, match="has no feature 'body'"):
    inputs_lib.Inputs(_config(mlm, **{"data.text_key": "body"}), workdir).info()
  with pytest.raises(UserError, match="modality must be one of"):
    inputs_lib.Inputs(_config(mlm, **{"data.modality": "audio"}), workdir)
