"""Audio-visual correspondence: the correspondence labels and loss against NumPy (and
scikit-learn's log loss), the negatives drawn from other clips only, AVE-Net's distance fusion,
paired feature sources checked before training, the sharded step against the single-device
one, and runs end to end on the embedded sounding_digits (per-tower probes, held-out
correspondence accuracy, clip <-> sound retrieval)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import log_loss

from configs import audio_visual as audio_visual_config
from ssl_jax import config_lib, evaluate, losses, train
from ssl_jax.errors import UserError
from ssl_jax.methods import audio_visual
from ssl_jax.models.audio_visual import CorrespondenceHead
from tests.tiny_configs import assert_sharded_equals_single_device, override, steps_on_meshes


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def _tiny(data_dir, variant="sounding_digits,runlocal=True", **dotted):
  config = audio_visual_config.get_config(variant)
  config.unlock()
  return override(config, **{
      "data.data_dir": data_dir, "batch_size": 16, "total_steps": 3, "evaluate_at_end": False,
      "mesh": "data:1", "audio_visual.video_widths": (4, 8), "audio_visual.audio_widths": (4, 8),
      "audio_visual.embed_dim": 8, "audio_visual.hidden_dim": 8,
      "evals.probes.protocols": ("knn",), "evals.probes.labels_per_class": (0,),
      "evals.probes.seeds": 1, **dotted})


def test_correspondence_loss_is_the_binary_cross_entropy_of_own_and_other_pairs():
  rng = np.random.default_rng(0)
  own, other = rng.normal(size=7), rng.normal(size=7)
  weights = np.array([1, 1, 1, 1, 1, 0, 0], np.float32)  # two padding clips
  value, accuracy = losses.correspondence_cross_entropy(jnp.asarray(own), jnp.asarray(other),
                                                        jnp.asarray(weights))
  logits = np.concatenate([own[:5], other[:5]])
  labels = np.concatenate([np.ones(5), np.zeros(5)])
  probability = 1 / (1 + np.exp(-logits))
  np.testing.assert_allclose(value, log_loss(labels, probability), rtol=1e-5)
  np.testing.assert_allclose(accuracy, np.mean((probability > 0.5) == labels), rtol=1e-6)


def test_negatives_are_other_real_clips_uniformly():
  keys = jax.random.split(jax.random.PRNGKey(0), 800)
  draws = np.asarray(jax.vmap(lambda key: audio_visual.other_clips(key, jnp.ones(5, bool)))(keys))
  assert np.all(draws != np.arange(5))
  for clip in range(5):
    counts = np.bincount(draws[:, clip], minlength=5)
    others = np.delete(counts, clip)
    np.testing.assert_allclose(others / 800, 0.25, atol=0.05)
  # An evaluation batch's padding rows (False) are never a real clip's negative.
  real = np.array([True, True, False, True, False, True])
  draws = np.asarray(jax.vmap(lambda key: audio_visual.other_clips(key, jnp.asarray(real)))(keys))
  for clip in np.nonzero(real)[0]:
    picked = draws[:, clip]
    assert set(np.unique(picked)) == set(np.nonzero(real)[0]) - {clip}
    np.testing.assert_allclose(np.bincount(picked, minlength=6)[real & (np.arange(6) != clip)]
                               / 800, 1 / 3, atol=0.06)


def test_held_out_contrastive_accuracy_ignores_padding_rows(data_dir):
  config = _tiny(data_dir, "sounding_digits_avid,runlocal=True")
  method = audio_visual.build(config, config_lib.training_length(config, 1257))
  rng = np.random.default_rng(2)
  batch = {"frames": jnp.asarray(rng.uniform(size=(6, 10, 32, 32, 1)), jnp.float32),
           "audio": jnp.asarray(rng.uniform(-1, 1, size=(6, 4000)), jnp.float32)}
  params, extra = method.init(jax.random.PRNGKey(0), batch)
  padded = {key: jnp.concatenate([value, jnp.zeros((4,) + value.shape[1:])])
            for key, value in batch.items()}
  padded["mask"] = jnp.arange(10) < 6
  sums = method.test_metrics(params, extra, padded, jax.random.PRNGKey(1))
  alone = method.test_metrics(params, extra, {**batch, "mask": jnp.ones(6, bool)},
                              jax.random.PRNGKey(1))
  for name in ("loss", "video_to_audio_accuracy", "audio_to_video_accuracy"):
    assert float(sums[name][1]) == 6.0
    np.testing.assert_allclose(sums[name][0], alone[name][0], rtol=1e-5, atol=1e-6)


def test_distance_fusion_is_an_affine_map_of_the_normalised_distance():
  rng = np.random.default_rng(1)
  video, audio = rng.normal(size=(6, 8)), rng.normal(size=(6, 8))
  head = CorrespondenceHead("distance", 4)
  params = head.init(jax.random.PRNGKey(0), video, audio)
  logits = head.apply(params, video, audio)
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  distance = np.linalg.norm(unit(video) - unit(audio), axis=1)
  affine = params["params"]["affine"]
  expected = distance * float(affine["kernel"][0, 0]) + float(affine["bias"][0])
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)


def test_paired_feature_sources_are_checked_before_training(data_dir):
  with pytest.raises(UserError, match="unknown feature source 'ssl:text'.*ssl:audio"):
    evaluate.check(_tiny(data_dir, **{"eval.feature_sources": ("ssl", "ssl:text")}))
  from configs import cpc as cpc_config  # a modality without paired inputs
  config = cpc_config.get_config("japanese_vowels,runlocal=True")
  config.unlock()
  config.eval.feature_sources = ("ssl", "raw:audio")
  with pytest.raises(UserError, match="unknown feature source 'raw:audio'"):
    evaluate.check(config)
  with pytest.raises(UserError, match="objective must be one of"):
    audio_visual.network(_tiny(data_dir, **{"audio_visual.objective": "l3"}))


@pytest.mark.parametrize("variant", ["sounding_digits_l3", "sounding_digits_avid"])
def test_sharded_step_equals_single_device(data_dir, variant):
  config = _tiny(data_dir, f"{variant},runlocal=True", mesh="data:-1")
  rng = np.random.default_rng(0)
  batches = [{"frames": rng.integers(0, 256, size=(16, 10, 32, 32, 1)).astype(np.uint8),
              "audio": rng.uniform(-1, 1, size=(16, 4000)).astype(np.float32),
              "label": rng.integers(0, 10, size=(16,)).astype(np.int32)} for _ in range(2)]
  length = config_lib.training_length(config, 1257)
  results = steps_on_meshes(config, batches, (10, 32, 32, 1), length)
  assert_sharded_equals_single_device(results)


def test_the_waveform_audio_tower_is_the_strided_encoder_pooled_over_time(data_dir):
  config = _tiny(data_dir, **{"audio_visual.audio_input": "waveform",
                              "audio_visual.audio_kernels": (10, 8),
                              "audio_visual.audio_strides": (5, 4)})
  model = audio_visual.network(config)
  frames, audio = jnp.zeros((2, 10, 32, 32, 1)), jnp.ones((2, 4000)) * 0.1
  params = model.init(jax.random.PRNGKey(0), frames, audio)["params"]
  kernels = params["audio_tower"]["FeatureEncoder_0"]
  assert kernels["Conv_0"]["kernel"].shape == (10, 1, 4)  # a 1-D conv over the waveform
  features, embedding = model.apply({"params": params}, audio,
                                    method=type(model).audio)
  assert features.shape == (2, 8) and embedding.shape == (2, 8)
  with pytest.raises(UserError, match="one entry per layer"):
    audio_visual.network(_tiny(data_dir, **{"audio_visual.audio_input": "waveform",
                                            "audio_visual.audio_kernels": (10,),
                                            "audio_visual.audio_strides": (5, 4)}))


def test_a_joint_space_only_where_the_objective_makes_one(data_dir):
  length = config_lib.training_length(_tiny(data_dir), 1257)
  for variant, joint in (("sounding_digits", True), ("sounding_digits_l3", False),
                         ("sounding_digits_avid", True)):
    method = audio_visual.build(_tiny(data_dir, f"{variant},runlocal=True"), length)
    assert (method.embed is not None) == joint, variant
    assert method.represent_paired is not None


@pytest.mark.slow
def test_train_then_evaluate_reports_both_towers_correspondence_and_retrieval(data_dir,
                                                                              tmp_path):
  config = _tiny(data_dir, total_steps=4)
  train.run(config, str(tmp_path))
  report = evaluate.run(str(tmp_path))
  sources = {row["features"] for row in report["results"]}
  assert sources == {"ssl", "random_init", "raw", "ssl:audio", "random_init:audio", "raw:audio"}
  raw_audio = [r for r in report["results"] if r["features"] == "raw:audio"][0]
  assert raw_audio["accuracy"] > 0.9  # the note's pitch names the digit
  assert 0.0 <= report["held_out"]["correspondence_accuracy"] <= 1.0
  retrieval = report["retrieval"]
  assert retrieval["kinds"] == ["video", "audio"]
  assert (retrieval["queries"], retrieval["items"]) == (540, 540)
  for row in retrieval["results"]:
    assert 0 <= row["video_to_audio_r1"] <= row["video_to_audio_r5"] <= 1
    assert 0 <= row["audio_to_video_r1"] <= row["audio_to_video_r5"] <= 1
  markdown = open(tmp_path / "eval" / "report.md").read()
  assert "video→audio R@1" in markdown and "| ssl:audio |" in markdown
