"""CLIP: the symmetric InfoNCE against a NumPy reading of the paper's Fig. 3 (with the logit
scale clipped at 100), zero-shot classification and retrieval recall on hand-made embeddings,
the text tower's padding invariance, sharded = single-device steps, the image–caption
pipeline's exact resumption, one step of coco_captions on mock TFDS data, and a run end to end
with its zero-shot and retrieval rows. SigLIP, which shares CLIP's towers and evaluation
(`methods.clip.image_text_method`), takes the mock coco_captions step here too."""
import dataclasses
import functools
import itertools
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import clip as clip_config
from configs import siglip as siglip_config
from ssl_jax import config_lib, evaluate, evaluators, losses, train
from ssl_jax.data import inputs as inputs_lib
from ssl_jax.eval import cross_modal
from ssl_jax.evaluators import retrieval
from ssl_jax.methods import clip
from tests.tiny_configs import assert_sharded_equals_single_device, override, steps_on_meshes


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def _tiny(data_dir, variant="digits,runlocal=True", module=clip_config, **dotted):
  """The variant's runlocal config of `module` (configs/clip.py, or SigLIP's), tinier."""
  config = module.get_config(variant)
  config.unlock()
  return override(config, **{
      "data.data_dir": data_dir, "batch_size": 16, "total_steps": 3, "evaluate_at_end": False,
      "mesh": "data:1", "evals.probes.protocols": ("linear", "knn"), "evals.probes.labels_per_class": (5,),
      "evals.probes.seeds": 1, "evals.plots.enabled": False, **dotted})


def _log_softmax(x, axis):
  x = x - x.max(axis=axis, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def _reference_clip_loss(images, texts, log_scale):
  """Fig. 3's pseudo-code in NumPy: L2-normalise, logits = <I, T> * exp(t) with exp(t) at most
  100, cross-entropy over rows (image -> text) and columns (text -> image), averaged."""
  images = images / np.linalg.norm(images, axis=1, keepdims=True)
  texts = texts / np.linalg.norm(texts, axis=1, keepdims=True)
  logits = images @ texts.T * min(np.exp(log_scale), 100.0)
  n = len(images)
  loss_images = -np.mean(_log_softmax(logits, axis=1)[np.arange(n), np.arange(n)])
  loss_texts = -np.mean(_log_softmax(logits, axis=0)[np.arange(n), np.arange(n)])
  return (loss_images + loss_texts) / 2


@pytest.mark.parametrize("log_scale", [np.log(1 / 0.07), np.log(100.0), np.log(250.0), 0.0])
def test_symmetric_info_nce_matches_the_papers_pseudo_code(log_scale):
  rng = np.random.default_rng(0)
  images, texts = rng.normal(size=(2, 6, 5)).astype(np.float32) * [[[3.0]], [[0.5]]]
  loss, logits = losses.clip_info_nce(jnp.asarray(images), jnp.asarray(texts),
                                      jnp.float32(log_scale))
  np.testing.assert_allclose(loss, _reference_clip_loss(images, texts, log_scale), rtol=1e-5)
  assert logits.shape == (6, 6)
  if log_scale > np.log(100.0):  # clipped: the scale gets no gradient past the bound
    grad = jax.grad(lambda t: losses.clip_info_nce(images, texts, t)[0])(jnp.float32(log_scale))
    assert float(grad) == 0.0


def test_loss_is_symmetric_in_its_two_directions():
  rng = np.random.default_rng(1)
  images, texts = rng.normal(size=(2, 5, 4)).astype(np.float32)
  forward, _ = losses.clip_info_nce(images, texts, jnp.float32(2.0))
  swapped, _ = losses.clip_info_nce(texts, images, jnp.float32(2.0))
  np.testing.assert_allclose(forward, swapped, rtol=1e-6)


def test_zero_shot_classifier_on_hand_made_embeddings():
  names, templates = ("cat", "dog", "car"), ("a {}", "the {}")
  assert cross_modal.prompt_texts(names, templates) == [
      "a cat", "the cat", "a dog", "the dog", "a car", "the car"]
  with pytest.raises(ValueError, match="must each contain"):
    cross_modal.prompt_texts(names, ("no slot",))
  # Prompt embeddings: each class's two templates point near one axis (one of them off-axis).
  prompts = np.array([[1, 0, 0], [1, 0.5, 0], [0, 2, 0], [0, 1, 0.3], [0, 0, 1], [0.2, 0, 1]],
                     np.float32)
  classes = cross_modal.zero_shot_classifier(prompts, num_classes=3)
  np.testing.assert_allclose(np.linalg.norm(classes, axis=1), 1.0, rtol=1e-6)
  unit = prompts / np.linalg.norm(prompts, axis=1, keepdims=True)
  expected = unit.reshape(3, 2, 3).mean(1)
  np.testing.assert_allclose(classes, expected / np.linalg.norm(expected, axis=1, keepdims=True),
                             rtol=1e-6)
  images = np.array([[0.1, 0.9, 0.0], [5.0, 0.2, 0.1], [0.0, 0.1, -0.2], [0.3, 0.1, 2.0]])
  np.testing.assert_array_equal(cross_modal.zero_shot_predict(images, classes), [1, 0, 1, 2])
  with pytest.raises(ValueError, match="do not split"):
    cross_modal.zero_shot_classifier(prompts[:5], num_classes=3)


def _brute_force_recall(images, texts, owner, k):
  """Sorts every row's similarities; ties are broken against the true item."""
  similarity = images @ texts.T
  image_hits = []
  for i in range(len(images)):
    if not np.any(owner == i):
      continue
    own = owner == i
    best = similarity[i, own].max()
    rank = np.sum((similarity[i] >= best) & ~own)
    image_hits.append(rank < k)
  text_hits = []
  for j in range(len(texts)):
    order = np.argsort(-similarity[:, j], kind="stable")
    true = similarity[owner[j], j]
    rank = np.sum(similarity[:, j] >= true) - 1
    text_hits.append(rank < k)
    if np.sum(similarity[:, j] == true) == 1:  # no tie: the rank is the sorted position
      assert rank == int(np.flatnonzero(order == owner[j])[0])
  return np.mean(image_hits), np.mean(text_hits)


def test_retrieval_recall_matches_brute_force_and_is_zero_when_collapsed():
  rng = np.random.default_rng(2)
  images = rng.normal(size=(30, 8)).astype(np.float32)
  owner = np.repeat(np.arange(29), 2)  # image 29 has no caption: left out of image -> text
  texts = images[owner] + rng.normal(scale=1.2, size=(58, 8)).astype(np.float32)
  images /= np.linalg.norm(images, axis=1, keepdims=True)
  texts /= np.linalg.norm(texts, axis=1, keepdims=True)
  recalls = cross_modal.retrieval_recall(images, texts, owner, ks=(1, 5), chunk=7)
  for k in (1, 5):
    image_recall, text_recall = _brute_force_recall(images, texts, owner, k)
    assert recalls[f"image_to_text_r{k}"] == pytest.approx(image_recall)
    assert recalls[f"text_to_image_r{k}"] == pytest.approx(text_recall)
  assert 0 < recalls["text_to_image_r1"] < recalls["text_to_image_r5"] < 1
  collapsed = cross_modal.retrieval_recall(np.ones((30, 8)), np.ones((58, 8)), owner)
  assert all(value == 0.0 for value in collapsed.values())
  with pytest.raises(ValueError, match="index of an image"):
    cross_modal.retrieval_recall(images, texts, owner + 2)


def test_text_embedding_ignores_padding_and_reads_the_whole_caption(data_dir):
  config = _tiny(data_dir)
  model = clip.network(config)
  images = jnp.zeros((2, 16, 16, 3))
  tokens = jnp.array([[2, 7, 8, 9, 3, 0, 0, 0], [2, 7, 8, 9, 3, 0, 0, 0]], jnp.int32)
  mask = (tokens > 0).astype(jnp.int32)
  variables = model.init(jax.random.PRNGKey(0), images, tokens, mask)
  embed = lambda t, m: model.apply(variables, t, m, method=type(model).encode_text)
  base = embed(tokens, mask)
  padded = tokens.at[:, 5:].set(jnp.array([11, 12, 13]))  # other ids behind the mask
  np.testing.assert_allclose(embed(padded, mask), base, atol=1e-6)
  changed = tokens.at[0, 1].set(15)  # the first word changes the [SEP] state (causal)
  assert not np.allclose(embed(changed, mask)[0], base[0])
  np.testing.assert_allclose(embed(changed, mask)[1], base[1], atol=1e-6)


def test_sharded_step_equals_single_device(data_dir):
  """SGD rather than AdamW, as for the language models: the text tower's attention key bias
  has a true gradient of 0, and Adam would scale its rounding noise into full-size steps."""
  config = _tiny(data_dir, mesh="data:-1", **{"optimizer.name": "sgd", "optimizer.lr": 0.1})
  length = config_lib.training_length(config, 5028)
  results = steps_on_meshes(config, caption_batches(), (16, 16, 3), length)
  assert_sharded_equals_single_device(results)


def caption_batches(count=2, size=16, length=24):
  """Random 16x16 images with random token rows of random lengths (right padding)."""
  rng = np.random.default_rng(0)
  tokens = rng.integers(5, 300, size=(count, size, length)).astype(np.int32)
  lengths = rng.integers(3, length + 1, size=(count, size))
  attention = (np.arange(length)[None, None, :] < lengths[..., None]).astype(np.int32)
  return [{"views": rng.integers(0, 256, size=(size, 1, 16, 16, 3)).astype(np.uint8),
           "tokens": tokens[i] * attention[i], "attention_mask": attention[i],
           "label": rng.integers(0, 10, size=(size,)).astype(np.int32)} for i in range(count)]


def test_pipeline_pairs_captions_and_resumes_exactly(data_dir, tmp_path):
  config = _tiny(data_dir, batch_size=256)
  inputs = inputs_lib.Inputs(config, str(tmp_path), create_tokenizer=True)
  info = inputs.info()
  assert info.input_shape == (16, 16, 3) and info.num_classes == 10
  assert info.class_names[:3] == ("zero", "one", "two")
  stream = lambda start, count: list(itertools.islice(inputs.train_batches(
      start_step=start, process_index=0, process_count=1), count))
  whole, resumed = stream(0, 22), stream(18, 4)  # 19 steps per epoch: crosses an epoch
  for expected, got in zip(whole[18:], resumed):
    for key in ("views", "tokens", "attention_mask", "label"):
      np.testing.assert_array_equal(expected[key], got[key], err_msg=key)
  first = whole[0]
  assert first["views"].shape == (256, 1, 16, 16, 3) and first["views"].dtype == np.uint8
  assert first["tokens"].shape == (256, 24)
  assert np.all(first["tokens"][:, 0] == 2)  # [CLS] starts every caption row
  words = [inputs.tokenizer.decode([int(t) for t in row if t > 4]) for row in first["tokens"]]
  names = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
  for text, label in zip(words, first["label"]):  # every caption names its image's digit
    tokens = re.findall(r"\w+", text)
    assert names[label] in tokens or str(label) in tokens, text
  batches = list(inputs.eval_batches("test", batch_size=512))
  assert sum(int(b["mask"].sum()) for b in batches) == 1080
  assert batches[0]["caption_tokens"].shape == (512, 3, 24)
  assert int(sum(b["caption_mask"].sum() for b in batches)) == 3 * 1080


def _mock_coco_captions(self, split, decoders=None, read_config=None, shuffle_files=False,
                        **kwargs):
  """Eight COCO-like examples (JPEG images of varying size, five captions each) in
  `coco_captions`' serialized layout, decoded by its own features. TFDS's random mock cannot
  feed a Sequence of texts through `from_generator` when a decoder is given (it yields a
  list of 0-d object arrays), so the examples are made here."""
  del split, read_config, shuffle_files, kwargs
  if decoders is None:  # a size query (`cardinality`): any layout will do
    decoders = tfds.decode.PartialDecoding({"image": True, "captions": True})
  features = decoders.extract_features(self.info.features)
  rng = np.random.default_rng(0)

  def examples():
    for index in range(8):
      image = rng.integers(0, 256, size=(30 + index, 40 - index, 3), dtype=np.uint8)
      example = {"image": tf.io.encode_jpeg(image).numpy(),
                 "captions": {"text": np.array([f"a photo of thing {index} seen {j} times"
                                                .encode() for j in range(5)]),
                              "id": np.arange(5, dtype=np.int64)}}
      yield {key: example[key] for key in features.keys()}

  signature = tf.nest.map_structure(lambda info: tf.TensorSpec(info.shape, info.tf_dtype),
                                    features.get_serialized_info())
  ds = tf.data.Dataset.from_generator(examples, output_signature=signature)
  ds = ds.apply(tf.data.experimental.assert_cardinality(8))
  return ds.map(functools.partial(features.decode_example, decoders=decoders.decoders))


@pytest.mark.parametrize("module", [clip_config, siglip_config], ids=["clip", "siglip"])
def test_one_step_of_coco_captions_on_mock_tfds(module, tmp_path):
  config = _tiny(None, "coco_captions,runlocal=True", module, total_steps=1, batch_size=4,
                 **{"data.image_size": 32, "data.eval_resize": 32, "data.max_length": 16,
                    "transformer.max_length": 16})
  with tfds.testing.mock_data(as_dataset_fn=_mock_coco_captions):
    state = train.run(config, str(tmp_path))
  assert int(state["step"]) == 1
  row = json.loads(open(tmp_path / "metrics.jsonl").readline())
  assert row["step"] == 1 and np.isfinite(row["loss"])
  if module is clip_config:
    assert 0 < row["temperature"] <= 0.07 + 1e-3
  else:  # SigLIP's t' starts at log 10 and b at -10
    assert row["temperature"] == pytest.approx(0.1, rel=0.05)
    assert row["bias"] == pytest.approx(-10.0, abs=0.1)
  probed = evaluate.probe_config(config)  # zero-shot and probes on CIFAR-10's plain images
  assert (probed.dataset, probed.data.modality) == ("cifar10", "image")


def test_train_then_evaluate_reports_zero_shot_and_retrieval(data_dir, tmp_path):
  # The two network sources, which zero-shot and retrieval read (the `raw` pixel baseline has
  # neither: test_retrieval_is_skipped_without_a_network_feature_source).
  config = _tiny(data_dir, total_steps=4, **{"eval.feature_sources": ("ssl", "random_init")})
  train.run(config, str(tmp_path))
  report = evaluate.run(str(tmp_path))
  assert {(r["features"], r["protocol"]) for r in report["results"]} == {
      (f, p) for f in ("ssl", "random_init") for p in ("linear", "knn", "zero_shot")}
  zero_shot = {r["features"]: r for r in report["results"] if r["protocol"] == "zero_shot"}
  assert set(zero_shot) == {"ssl", "random_init"}
  assert all(0 <= r["accuracy"] <= 1 and r["labels_per_class"] == 0 for r in zero_shot.values())
  retrieval = report["retrieval"]
  assert (retrieval["queries"], retrieval["items"]) == (1080, 3240)
  assert retrieval["kinds"] == ["image", "text"]
  assert {r["features"] for r in retrieval["results"]} == {"ssl", "random_init"}
  for row in retrieval["results"]:
    assert 0 <= row["image_to_text_r1"] <= row["image_to_text_r5"] <= 1
  markdown = open(tmp_path / "eval" / "report.md").read()
  assert "| zero_shot | 0 |" in markdown and "## Retrieval" in markdown


def test_retrieval_is_skipped_without_a_network_feature_source(data_dir):
  config = _tiny(data_dir, **{"eval.feature_sources": ("raw",)})
  context = evaluators.Context(
      config=config, method=clip.build(config, None), trained={}, untrained={}, step=0,
      num_classes=10, mesh=None, probe_inputs=None, train_inputs=inputs_lib.Inputs(config))
  assert not retrieval.Evaluator("retrieval", config.evals.retrieval, config).applies(context)
  assert retrieval.Evaluator("retrieval", config.evals.retrieval, clip_config.get_config(
      "digits")).applies(dataclasses.replace(context, config=clip_config.get_config("digits")))
