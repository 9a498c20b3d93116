"""wav2vec 2.0: the quantizer's Gumbel softmax with a fixed noise sample, the contrastive loss
(Eq. 3) and the diversity penalty (Eq. 4) against NumPy readings of the paper, span masking and
distractor sampling (only other masked steps of the same utterance), the sharded step against
the single-device one, one step of speech_commands on mock TFDS data, and a run end to end on
the embedded vowels."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import wav2vec2 as wav2vec2_config
from ssl_jax import config_lib, evaluate, losses, train
from ssl_jax.errors import UserError
from ssl_jax.methods import wav2vec2
from ssl_jax.models import wav2vec2 as wav2vec2_model
from tests.tiny_configs import assert_sharded_equals_single_device, override, steps_on_meshes

_TINY = {"wav2vec2.widths": (8, 8, 8), "wav2vec2.kernels": (10, 8, 4),
         "wav2vec2.strides": (5, 4, 2), "wav2vec2.model_dim": 16, "wav2vec2.num_heads": 2,
         "wav2vec2.mlp_dim": 32, "wav2vec2.depth": 1, "wav2vec2.position_kernel": 4,
         "wav2vec2.position_groups": 2, "wav2vec2.entries": 8, "wav2vec2.codevector_dim": 8,
         "wav2vec2.final_dim": 8, "wav2vec2.distractors": 5, "wav2vec2.mask_length": 4,
         "wav2vec2.mask_prob": 0.1}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def _tiny(data_dir, variant="vowels,runlocal=True", **dotted):
  config = wav2vec2_config.get_config(variant)
  config.unlock()
  return override(config, **{
      "data.data_dir": data_dir, "batch_size": 8, "total_steps": 3, "evaluate_at_end": False,
      "mesh": "data:1", "data.max_length": 800, "evals.probes.protocols": ("linear", "knn"),
      "evals.probes.labels_per_class": (5,), "evals.probes.seeds": 1, **_TINY, **dotted})


def test_quantizer_is_the_gumbel_softmax_argmax_with_soft_gradients():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 5, 2, 6)).astype(np.float32)
  noise = rng.gumbel(size=logits.shape).astype(np.float32)
  codebooks = rng.normal(size=(2, 6, 4)).astype(np.float32)
  tau = 0.7
  entries, choice = wav2vec2_model.product_quantize(jnp.asarray(logits), jnp.asarray(codebooks),
                                                    tau, jnp.asarray(noise))
  picked = np.argmax((logits + noise) / tau, axis=-1)  # [3, 5, 2]
  np.testing.assert_array_equal(np.argmax(choice, -1), picked)
  np.testing.assert_allclose(choice, np.eye(6)[picked], atol=1e-6)
  expected = np.concatenate([codebooks[0][picked[..., 0]], codebooks[1][picked[..., 1]]], -1)
  np.testing.assert_allclose(entries, expected, rtol=1e-5, atol=1e-6)

  # Straight-through: the gradient is the soft probabilities' (Jang et al. 2016).
  weights = rng.normal(size=(3, 5, 8)).astype(np.float32)
  grad = jax.grad(lambda l: jnp.sum(wav2vec2_model.product_quantize(
      l, jnp.asarray(codebooks), tau, jnp.asarray(noise))[0] * weights))(jnp.asarray(logits))
  def soft_objective(l):
    soft = jax.nn.softmax((l + noise) / tau, axis=-1)
    return jnp.sum(jnp.einsum("...gv,gvd->...gd", soft, codebooks).reshape(3, 5, 8) * weights)
  np.testing.assert_allclose(grad, jax.grad(soft_objective)(jnp.asarray(logits)), rtol=1e-5,
                             atol=1e-6)

  # Evaluation: the argmax of the logits, no noise.
  _, choice = wav2vec2_model.product_quantize(jnp.asarray(logits), jnp.asarray(codebooks), tau,
                                              None)
  np.testing.assert_array_equal(np.argmax(choice, -1), np.argmax(logits, -1))


def _reference_contrastive(context, quantized, masked, distractors, kappa):
  """Eq. 3 read literally, step by step."""
  def cos(a, b):
    return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
  terms, hits = [], 0
  for b, t in zip(*np.nonzero(masked)):
    scores = np.array([cos(context[b, t], quantized[b, t])]
                      + [cos(context[b, t], quantized[b, j]) for j in distractors[b, t]]) / kappa
    terms.append(-(scores[0] - np.log(np.sum(np.exp(scores)))))
    hits += int(scores[0] > scores[1:].max())
  return np.mean(terms), hits / len(terms), len(terms)


def test_contrastive_loss_matches_equation_3():
  rng = np.random.default_rng(1)
  context = rng.normal(size=(3, 9, 5)).astype(np.float32)
  quantized = context + 0.8 * rng.normal(size=(3, 9, 5)).astype(np.float32)
  masked = rng.random((3, 9)) < 0.5
  distractors = rng.integers(0, 9, size=(3, 9, 4))
  loss, accuracy, count = losses.wav2vec2_contrastive(
      jnp.asarray(context), jnp.asarray(quantized), jnp.asarray(masked),
      jnp.asarray(distractors), 0.1)
  expected_loss, expected_accuracy, expected_count = _reference_contrastive(
      context, quantized, masked, distractors, 0.1)
  np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
  np.testing.assert_allclose(accuracy, expected_accuracy, rtol=1e-6)
  assert int(count) == expected_count and 0 < expected_accuracy < 1


def test_diversity_penalty_matches_equation_4():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(2, 6, 3, 5)).astype(np.float32)
  valid = np.arange(6)[None, :] < np.array([6, 3])[:, None]
  penalty, perplexity = losses.codebook_diversity(jnp.asarray(logits), jnp.asarray(valid))
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  mean = probs[valid].mean(axis=0)  # [G, V] over the recorded steps
  entropy = -(mean * np.log(mean)).sum(-1)
  np.testing.assert_allclose(penalty, -entropy.sum() / (3 * 5), rtol=1e-5)
  np.testing.assert_allclose(perplexity, np.exp(entropy).sum(), rtol=1e-5)
  # Uniform use of every entry: the lowest penalty, -log V / V per group ... and perplexity G V.
  uniform, full = losses.codebook_diversity(jnp.zeros((1, 4, 3, 5)), jnp.ones((1, 4), bool))
  np.testing.assert_allclose(uniform, -np.log(5) / 5, rtol=1e-5)
  np.testing.assert_allclose(full, 15, rtol=1e-5)


def test_span_masks_start_p_times_length_spans_inside_the_recording():
  keys = jax.random.split(jax.random.PRNGKey(0), 400)
  lengths = jnp.asarray(np.random.default_rng(3).integers(5, 41, size=400))
  masks = np.asarray(jax.vmap(lambda k, n: wav2vec2.span_mask(k, n, 48, 0.05, 4))(keys, lengths))
  for mask, n in zip(masks, np.asarray(lengths)):
    assert not mask[n:].any()
    # A single start (round(0.05 * n) <= 1 for n < 30) masks one span of 4, cut at the end.
    if n < 30:
      steps = np.nonzero(mask)[0]
      assert len(steps) == min(4, n - steps[0]) and np.all(np.diff(steps) == 1)
  # Starts are uniform over the recorded steps: every step of a 10-step recording starts a
  # span about as often (400 draws, 40 expected each).
  short = np.asarray(jax.vmap(lambda k: wav2vec2.span_mask(k, 10, 48, 0.05, 1))(keys))
  counts = short[:, :10].sum(axis=0)
  assert short.sum() == 400 and counts.min() > 20 and counts.max() < 62
  # The paper's setting masks about 1 - (1 - p)^M of the steps.
  paper = np.asarray(jax.vmap(lambda k: wav2vec2.span_mask(k, 1000, 1000, 0.065, 10))(keys[:20]))
  assert abs(paper.mean() - (1 - (1 - 0.065) ** 10)) < 0.06


def test_distractors_are_other_masked_steps_of_the_same_utterance():
  masked = jnp.asarray(np.arange(12) % 3 == 0)  # steps 0, 3, 6, 9
  draws = np.asarray(jax.vmap(lambda k: wav2vec2.sample_distractors(k, masked, 6))(
      jax.random.split(jax.random.PRNGKey(1), 300)))  # [300, 12, 6]
  for t in (0, 3, 6, 9):
    picked = draws[:, t].ravel()
    others = [s for s in (0, 3, 6, 9) if s != t]
    assert set(np.unique(picked)) == set(others)  # never the step itself nor unmasked steps
    frequencies = np.array([(picked == s).mean() for s in others])
    np.testing.assert_allclose(frequencies, 1 / 3, atol=0.04)  # uniform over the others
  assert np.all(draws[:, ~np.asarray(masked)] == 0)
  # With fewer than two masked steps there is nothing to contrast with.
  lone = wav2vec2.sample_distractors(jax.random.PRNGKey(2), jnp.arange(5) == 2, 3)
  assert np.all(np.asarray(lone) == 0)


def test_gumbel_temperature_anneals_geometrically_from_2_to_half():
  settings = _tiny(None).wav2vec2
  values = [float(wav2vec2.gumbel_temperature(settings, jnp.asarray(s), 100))
            for s in (0, 50, 100, 200)]
  np.testing.assert_allclose(values, [2.0, 1.0, 0.5, 0.5], rtol=1e-6)


def test_bad_settings_are_one_line_errors(data_dir):
  with pytest.raises(UserError, match="model_dim .* multiple of num_heads"):
    wav2vec2.network(_tiny(data_dir, **{"wav2vec2.num_heads": 3}))
  with pytest.raises(UserError, match="at least 2 steps"):
    wav2vec2.network(_tiny(data_dir, **{"data.max_length": 60}))
  with pytest.raises(UserError, match="mask_prob"):
    wav2vec2.network(_tiny(data_dir, **{"wav2vec2.mask_prob": 1.5}))


def test_sharded_step_equals_single_device(data_dir):
  config = _tiny(data_dir, mesh="data:-1", **{"wav2vec2.dropout": 0.0})
  rng = np.random.default_rng(0)
  batches = [{"signal": rng.normal(size=(8, 800, 1)).astype(np.float32) * 0.3,
              "length": rng.integers(300, 801, size=(8,)).astype(np.int32),
              "label": rng.integers(0, 10, size=(8,)).astype(np.int32)} for _ in range(2)]
  length = config_lib.training_length(config, 1440)
  results = steps_on_meshes(config, batches, (800, 1), length)
  assert_sharded_equals_single_device(results)


@pytest.mark.parametrize("variant", ["speech_commands", "librispeech"])
def test_one_step_on_mock_tfds(tmp_path, variant):
  config = _tiny(None, f"{variant},runlocal=True", total_steps=1, batch_size=4,
                 **{"data.max_length": 1600})
  with tfds.testing.mock_data(num_examples=8):
    state = train.run(config, str(tmp_path))
  assert int(state["step"]) == 1
  row = json.loads(open(tmp_path / "metrics.jsonl").readline())
  assert row["step"] == 1 and np.isfinite(row["loss"])
  assert 1 <= row["codebook_perplexity"] <= 2 * 8 and row["gumbel_temperature"] == 2.0


@pytest.mark.slow
def test_train_then_evaluate_on_vowels(data_dir, tmp_path):
  # kNN with all labels, the row asserted below: a linear probe of the 1,920-dimensional
  # log-mel baseline alone took about 8 s, and the probes are tested on digits.
  config = _tiny(data_dir, total_steps=4, **{"data.max_length": 4000,
                                             "evals.probes.protocols": ("knn",),
                                             "evals.probes.labels_per_class": (0,)})
  train.run(config, str(tmp_path))
  report = evaluate.run(str(tmp_path))
  assert {row["features"] for row in report["results"]} == {"ssl", "random_init", "raw"}
  assert all(0.0 <= row["accuracy"] <= 1.0 for row in report["results"])
  held_out = report["held_out"]
  assert 0.0 <= held_out["contrastive_accuracy"] <= 1.0
  assert 1.0 <= held_out["codebook_perplexity"] <= 16.0
  raw = [r for r in report["results"] if r["features"] == "raw" and r["protocol"] == "knn"
         and r["labels_per_class"] is None]
  assert raw[0]["accuracy"] > 0.3  # the log-mel baseline tells the vowels apart (chance 0.1)
