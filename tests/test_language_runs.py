"""Language runs end to end: train, evaluate (probes on the labelled variant against a bag of
words, held-out masked-token accuracy and perplexity), fill-mask, generate, and one step of
each real TFDS text dataset under mock data."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import causal_lm, mlm
from ssl_jax import evaluate, fill_mask, generate, train
from ssl_jax.errors import UserError
from ssl_jax.modalities import text as text_modality
from tests.tiny_configs import override

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(module, variant="python_docs,runlocal=True", **dotted):
  config = module.get_config(variant)
  config.unlock()
  return override(config, **{"batch_size": 16, "total_steps": 3, "evaluate_at_end": False,
                             "mesh": "data:1", "evals.probes.protocols": ("linear", "knn"),
                             "evals.probes.labels_per_class": (5,), "evals.probes.seeds": 1, **dotted})


@pytest.fixture(scope="module")
def mlm_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("mlm"))
  config = _tiny(mlm)
  train.run(config, workdir)
  return config, workdir


@pytest.fixture(scope="module")
def causal_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("causal"))
  config = _tiny(causal_lm)
  train.run(config, workdir)
  return config, workdir


def test_mlm_report_has_probes_on_labelled_text_and_held_out_measures(mlm_run):
  config, workdir = mlm_run
  report = evaluate.run(workdir)
  assert report["dataset"] == "python_docs/labelled"
  cells = {(r["features"], r["protocol"]) for r in report["results"]}
  assert cells == {(s, p) for s in ("ssl", "random_init", "raw") for p in ("linear", "knn")}
  held_out = report["held_out"]
  assert held_out["dataset"] == "python_docs/plain" and held_out["split"] == "test"
  assert 0.0 <= held_out["masked_token_accuracy"] <= 1.0
  assert held_out["perplexity"] == pytest.approx(np.exp(held_out["nll"]), rel=1e-5)
  # An untrained model over a vocabulary of V is near log(V) nats per token.
  assert 0.5 * np.log(config.tokenizer.vocab_size) < held_out["nll"] < 2 * np.log(
      config.tokenizer.vocab_size)
  text = open(os.path.join(workdir, "eval", "report.md")).read()
  assert "## Held-out: python_docs/plain test" in text and "| perplexity |" in text
  assert json.load(open(os.path.join(workdir, "eval", "report.json"))) == report


def test_causal_report_has_held_out_perplexity(causal_run):
  _, workdir = causal_run
  held_out = evaluate.run(workdir)["held_out"]
  assert set(held_out) == {"dataset", "split", "nll", "perplexity", "next_token_accuracy"}


def test_bag_of_words_counts_words_only():
  tokens = np.array([[2, 7, 7, 9, 3, 0], [2, 4, 8, 3, 0, 0]], np.int32)
  mask = (tokens != 0).astype(np.int32)
  bag = np.asarray(text_modality.bag_of_words(12)({"tokens": tokens, "attention_mask": mask}))
  expected = np.zeros((2, 12))
  expected[0, 7], expected[0, 9], expected[1, 8] = np.log(3), np.log(2), np.log(2)
  expected /= np.linalg.norm(expected, axis=1, keepdims=True)
  np.testing.assert_allclose(bag, expected, rtol=1e-6)


def test_fill_mask_gives_top_k_tokens_with_probabilities(mlm_run):
  _, workdir = mlm_run
  masks = fill_mask.fill(workdir, ["the [MASK] statement is used for [MASK] execution."], 5)
  assert len(masks) == 1 and len(masks[0]) == 2
  for candidates in masks[0]:
    probs = [p for _, p in candidates]
    assert len(candidates) == 5 and probs == sorted(probs, reverse=True)
    assert all(0 < p < 1 for p in probs) and sum(probs) <= 1 + 1e-6
    assert not any(token.startswith("[") and token.endswith("]") for token, _ in candidates)
  with pytest.raises(UserError, match="no \\[MASK\\]"):
    fill_mask.fill(workdir, ["nothing to fill"], 5)


def test_generate_continues_the_prompt_reproducibly(causal_run):
  _, workdir = causal_run
  settings = dict(temperature=1.0, top_k=10, max_new_tokens=8, seed=3, num_samples=2)
  first = generate.generate(workdir, "return the", **settings)
  assert first == generate.generate(workdir, "return the", **settings)
  assert all(text.startswith("return the") for text in first)
  greedy = generate.generate(workdir, "return the", temperature=0.0, top_k=0,
                             max_new_tokens=8, seed=0, num_samples=2)
  assert greedy[0] == greedy[1]


def test_cli_errors_are_one_line(mlm_run, causal_run):
  env = {**os.environ, "PYTHONPATH": ROOT}
  for module, workdir in (("ssl_jax.generate", mlm_run[1]), ("ssl_jax.fill_mask", causal_run[1])):
    result = subprocess.run([sys.executable, "-m", module, f"--workdir={workdir}", "some text"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith("error: ") and "Traceback" not in result.stderr
    assert "run (configs/" in result.stderr


def test_fill_mask_prints_only_its_answer(mlm_run):
  """TensorFlow reads the run's dataset info here; its start-up notices (the oneDNN one is
  printed even at TF_CPP_MIN_LOG_LEVEL=3) stay off the output (`ssl_jax.tensorflow_quiet`)."""
  env = {key: value for key, value in os.environ.items()
         if key not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
  result = subprocess.run(
      [sys.executable, "-m", "ssl_jax.fill_mask", f"--workdir={mlm_run[1]}", "--top_k=2",
       "the [MASK] statement."], capture_output=True, text=True,
      env={**env, "PYTHONPATH": ROOT}, cwd=ROOT, timeout=300)
  assert result.returncode == 0, result.stderr
  assert result.stderr == ""
  lines = result.stdout.splitlines()
  assert lines[0] == "the [MASK] statement." and lines[1].startswith("  [MASK] 1: ")
  assert len(lines) == 2


@pytest.mark.parametrize("module,variant", [
    (causal_lm, "lm1b"), (mlm, "wikipedia"), (mlm, "imdb_reviews")])
def test_one_step_of_the_real_text_datasets_on_mock_tfds(tmp_path, module, variant):
  """Each real dataset's config, tiny: single sentences (lm1b, here for the causal LM, whose
  rows are single texts anyway) and sentence pairs from articles and reviews (MLM + NSP)."""
  config = _tiny(module, f"{variant},runlocal=True", total_steps=1, batch_size=8)
  with tfds.testing.mock_data(num_examples=24):
    state = train.run(config, str(tmp_path))
  assert int(state["step"]) == 1
  row = json.loads(open(tmp_path / "metrics.jsonl").readline())
  assert row["step"] == 1 and np.isfinite(row["loss"])
  assert os.path.exists(tmp_path / "tokenizer.json")
