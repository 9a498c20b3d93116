"""Tests of the digits builder, the host pipeline and the on-device augmentation."""

import collections
import itertools
import os
import subprocess
import sys

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from sklearn import datasets as sk_datasets
import tensorflow_datasets as tfds

from ssl_jax.data import augment
from configs.recipes import augmentations
from ssl_jax.data import image_pipeline, stream
from ssl_jax.data.inputs import DatasetInfo
from ssl_jax.errors import UserError

NUM_TRAIN, NUM_TEST = 1257, 540


def make_config(data_dir, dataset: str = "digits", **data) -> ml_collections.ConfigDict:
  """The trainer's config layout, with `data` overriding `config.data` entries."""
  config = ml_collections.ConfigDict()
  config.dataset = dataset
  config.seed = 0
  config.batch_size = 256
  config.data = dict(
      data_dir=str(data_dir), train_split="train", test_split="test",
      image_key="image", label_key="label", num_views=2, crop="none", image_size=8,
      crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), flip=False,
      eval_crop="none", eval_resize=None, shuffle_buffer=10_000, prefetch=2,
      local_views=0, local_image_size=96, local_crop_scale=(0.05, 0.4))
  config.data.update(data)
  config.augment = augmentations.digits_augment()
  return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """A fresh TFDS data dir; the first `load_builder` prepares digits into it."""
  return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def digits_splits(data_dir):
  """The prepared digits splits as numpy: {split: (images, labels)}."""
  builder = stream.load_builder(make_config(data_dir))
  out = {}
  for split in ("train", "test"):
    data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
    out[split] = (data["image"], data["label"])
  return out


@pytest.fixture(params=["cached", "streamed"])
def read_mode(request, monkeypatch):
  """Runs a test on both training paths: decoded in-memory cache, and streamed records."""
  if request.param == "streamed":
    monkeypatch.setattr(image_pipeline, "_MAX_CACHED_BYTES", 0)
  return request.param


def _examples(images, labels) -> collections.Counter:
  """Multiset of (image bytes, label): identifies examples regardless of order."""
  return collections.Counter(
      (image.tobytes(), int(label)) for image, label in zip(images, labels))


def _train(config, start_step=0, num=1, process_index=0, process_count=1):
  return list(itertools.islice(image_pipeline.train_batches(
      config, start_step=start_step, process_index=process_index,
      process_count=process_count), num))


def _assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


# Digits builder.


def test_digits_builder(data_dir, digits_splits):
  builder = stream.load_builder(make_config(data_dir))
  assert builder.name == "digits" and str(builder.version) == "1.0.0"
  assert builder.info.splits["train"].num_examples == NUM_TRAIN
  assert builder.info.splits["test"].num_examples == NUM_TEST
  for split, size in (("train", NUM_TRAIN), ("test", NUM_TEST)):
    images, labels = digits_splits[split]
    assert images.shape == (size, 8, 8, 1) and images.dtype == np.uint8
    assert images.max() == 255
    assert set(labels.tolist()) == set(range(10))
  assert image_pipeline.dataset_info(make_config(data_dir)) == DatasetInfo(
      num_train_examples=NUM_TRAIN, num_test_examples=NUM_TEST, num_classes=10,
      input_shape=(8, 8, 1), class_names=tuple(str(digit) for digit in range(10)))


def test_digits_split_is_stratified_and_complete(digits_splits):
  y = sk_datasets.load_digits().target
  train_counts = np.bincount(digits_splits["train"][1], minlength=10)
  test_counts = np.bincount(digits_splits["test"][1], minlength=10)
  np.testing.assert_array_equal(train_counts + test_counts, np.bincount(y))
  assert np.all(np.abs(train_counts - 0.7 * np.bincount(y)) <= 1)


# Training stream.


def test_train_batches_shapes(data_dir):
  [batch] = _train(make_config(data_dir))
  assert batch["views"].shape == (256, 2, 8, 8, 1) and batch["views"].dtype == np.uint8
  assert batch["label"].shape == (256,) and batch["label"].dtype == np.int32
  assert set(batch["label"].tolist()) <= set(range(10))
  # Without crop or flip the views are the image itself.
  np.testing.assert_array_equal(batch["views"][:, 0], batch["views"][:, 1])
  [unlabelled] = _train(make_config(data_dir, label_key=None, num_views=3))
  assert set(unlabelled) == {"views"} and unlabelled["views"].shape == (256, 3, 8, 8, 1)


def test_resume_equals_uninterrupted_stream_across_epochs(data_dir, read_mode):
  # 1257 // 256 = 4 steps per epoch: steps 3..6 span the epoch boundary.
  config = make_config(data_dir, flip=True)
  full = _train(config, num=7)
  _assert_same_batches(full[3:], _train(config, start_step=3, num=4))
  # Flips are drawn per view, so some views differ from their sibling.
  assert not np.array_equal(full[0]["views"][:, 0], full[0]["views"][:, 1])


def test_epochs_are_permutations_and_seeds_change_order(
    data_dir, digits_splits, read_mode):
  config = make_config(data_dir)
  batches = _train(config, num=8)
  train = _examples(*digits_splits["train"])
  for epoch in (batches[:4], batches[4:]):
    seen = _examples(np.concatenate([b["views"][:, 0] for b in epoch]),
                     np.concatenate([b["label"] for b in epoch]))
    assert sum(seen.values()) == 4 * 256 and not seen - train
  assert not np.array_equal(batches[0]["label"], batches[4]["label"])
  config.seed = 1
  assert not np.array_equal(batches[0]["label"], _train(config)[0]["label"])


def test_process_shards_are_disjoint_and_cover_the_epoch(
    data_dir, digits_splits, read_mode):
  # Shards of 629 and 628 examples, b = 157: 4 steps, 628 examples per process.
  config = make_config(data_dir)
  config.batch_size = 314
  seen = collections.Counter()
  for index in range(2):
    batches = _train(config, num=4, process_index=index, process_count=2)
    assert batches[0]["views"].shape == (157, 2, 8, 8, 1)
    seen += _examples(np.concatenate([b["views"][:, 0] for b in batches]),
                      np.concatenate([b["label"] for b in batches]))
  assert sum(seen.values()) == 2 * 628
  assert not seen - _examples(*digits_splits["train"])  # Disjoint and within the split.


# Evaluation stream.


def test_eval_batches_cover_split_once_in_order(data_dir, digits_splits):
  batches = list(image_pipeline.eval_batches(make_config(data_dir), "test", batch_size=100))
  assert len(batches) == 6
  mask = np.concatenate([b["mask"] for b in batches])
  np.testing.assert_array_equal(mask, np.arange(600) < NUM_TEST)
  images = np.concatenate([b["image"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])
  assert images.dtype == np.uint8 and labels.dtype == np.int32
  np.testing.assert_array_equal(images[:NUM_TEST], digits_splits["test"][0])
  np.testing.assert_array_equal(labels[:NUM_TEST], digits_splits["test"][1])
  assert not images[NUM_TEST:].any() and not labels[NUM_TEST:].any()


def test_eval_batches_per_process(data_dir, digits_splits):
  config = make_config(data_dir)
  per_process = [list(image_pipeline.eval_batches(
      config, "test", batch_size=64, process_index=i, process_count=2)) for i in range(2)]
  assert len(per_process[0]) == len(per_process[1]) == 5  # ceil(270 / 64)
  seen = collections.Counter()
  for batches in per_process:
    mask = np.concatenate([b["mask"] for b in batches])
    seen += _examples(np.concatenate([b["image"] for b in batches])[mask],
                      np.concatenate([b["label"] for b in batches])[mask])
  assert seen == _examples(*digits_splits["test"])


# Mocked real datasets.


def test_mock_cifar10(data_dir):
  config = make_config(data_dir, "cifar10", crop="random_resized", image_size=32,
                       flip=True)
  config.batch_size = 8
  with tfds.testing.mock_data(num_examples=20):
    batches = _train(config, num=5)  # 2 steps per epoch.
    assert batches[0]["views"].shape == (8, 2, 32, 32, 3)
    assert batches[0]["views"].dtype == np.uint8
    assert not np.array_equal(batches[0]["views"][:, 0], batches[0]["views"][:, 1])
    _assert_same_batches(batches[1:], _train(config, start_step=1, num=4))
    evals = list(image_pipeline.eval_batches(config, "test", batch_size=8))
  assert [b["mask"].sum() for b in evals] == [8, 8, 4]
  assert evals[0]["image"].shape == (8, 32, 32, 3)


def test_mock_imagenet(data_dir):
  config = make_config(
      data_dir, "imagenet2012", test_split="validation", crop="random_resized",
      image_size=64, flip=True, eval_crop="center", eval_resize=73)
  config.batch_size = 8
  with tfds.testing.mock_data(num_examples=12):
    info = image_pipeline.dataset_info(config)
    assert info.num_classes == 1000 and info.input_shape == (64, 64, 3)
    [batch] = _train(config)
    assert batch["views"].shape == (8, 2, 64, 64, 3)
    assert batch["label"].dtype == np.int32
    evals = list(image_pipeline.eval_batches(config, "validation", batch_size=8))
  assert [b["image"].shape for b in evals] == [(8, 64, 64, 3)] * 2
  assert [b["mask"].sum() for b in evals] == [8, 4]


@pytest.mark.parametrize("crop", ["none", "random_resized"])
def test_multi_crop_local_views(data_dir, read_mode, crop):
  """2 global views + 4 local crops at another resolution; the global views are the same with
  or without local crops (their own random streams), and resume restores the local crops."""
  local = dict(local_views=4, local_image_size=6, local_crop_scale=(0.3, 0.7))
  config = make_config(data_dir, crop=crop, flip=True, **local)
  batches = _train(config, num=5)
  assert batches[0]["local_views"].shape == (256, 4, 6, 6, 1)
  assert batches[0]["local_views"].dtype == np.uint8
  without = _train(make_config(data_dir, crop=crop, flip=True), num=5)
  for a, b in zip(batches, without):
    np.testing.assert_array_equal(a["views"], b["views"])
  _assert_same_batches(batches[2:], _train(config, start_step=2, num=3))
  # Each local crop is drawn separately.
  assert not np.array_equal(batches[0]["local_views"][:, 0], batches[0]["local_views"][:, 1])
  with pytest.raises(UserError, match="local_crop_scale"):
    _train(make_config(data_dir, local_views=2, local_image_size=6, local_crop_scale=(0.5, 2.0)))


# User errors.


def test_unknown_dataset_is_a_user_error(data_dir):
  with pytest.raises(UserError, match="unknown dataset 'no_such_dataset'") as e:
    stream.load_builder(make_config(data_dir, "no_such_dataset"))
  assert "\n" not in str(e.value)


def test_unprepared_dataset_is_a_user_error(tmp_path):
  with pytest.raises(UserError, match="tfds build cifar10"):
    stream.load_builder(make_config(tmp_path, "cifar10"))


def test_bad_split_and_batch_size_are_user_errors(data_dir):
  with pytest.raises(UserError, match="'trian'"):
    stream.load_builder(make_config(data_dir, train_split="trian"))
  with pytest.raises(UserError, match="empty or invalid"):
    stream.load_builder(make_config(data_dir, train_split="train[:0]"))
  config = make_config(data_dir)
  config.batch_size = 2048
  with pytest.raises(UserError, match="batch_size 2048"):
    image_pipeline.train_batches(config, start_step=0, process_index=0, process_count=1)


# On-device augmentation.


def _augment_config(aug: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({"augment": aug})


def _random_views(shape, seed=0) -> jax.Array:
  return jnp.asarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8))


def test_augment_views_digits_preset():
  config = _augment_config(augmentations.digits_augment())
  fn = jax.jit(lambda rng, views: augment.augment_views(rng, views, config))
  views = jnp.repeat(_random_views((4, 1, 8, 8, 1)), 2, axis=1)
  out = fn(jax.random.key(0), views)
  assert out.shape == (4, 2, 8, 8, 1) and out.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(out)))
  np.testing.assert_array_equal(out, fn(jax.random.key(0), views))
  assert not np.allclose(out, fn(jax.random.key(1), views))
  assert not np.allclose(out[:, 0], out[:, 1])  # Identical inputs, independent views.
  assert not np.allclose(out[0], out[1])


def test_each_op_changes_the_image_at_probability_one_only():
  # View k runs op k with probability 1; the last view runs every op at 0.
  ops = ("affine_prob", "jitter_prob", "grayscale_prob", "blur_prob", "solarize_prob")
  num_views = len(ops) + 1
  probs = {op: tuple(float(i == k) for i in range(num_views)) for k, op in enumerate(ops)}
  config = _augment_config(augmentations.augment_config(
      mean=(0.5,) * 3, std=(0.25,) * 3, brightness=0.4, contrast=0.4, saturation=0.4,
      hue=0.1, rotation=20.0, scale=(0.8, 1.2), translate=0.1, **probs))
  views = jnp.repeat(_random_views((4, 1, 32, 32, 3)), num_views, axis=1)
  out = jax.jit(lambda r, v: augment.augment_views(r, v, config))(jax.random.key(0), views)
  plain = augment.normalize_images(views, config)
  assert bool(jnp.all(jnp.isfinite(out)))
  for k, op in enumerate(ops):
    assert not np.allclose(out[:, k], plain[:, k], atol=1e-3), op
  np.testing.assert_allclose(out[:, -1], plain[:, -1], atol=1e-5)
  gray = out[:, ops.index("grayscale_prob")]
  np.testing.assert_allclose(gray[..., 0], gray[..., 1], atol=1e-5)
  np.testing.assert_allclose(gray[..., 0], gray[..., 2], atol=1e-5)


def test_single_channel_skips_colour_ops():
  # Saturation, hue and grayscale do not apply to 1 channel; brightness/contrast do.
  views = _random_views((4, 2, 8, 8, 1))
  config = _augment_config(augmentations.augment_config(
      mean=(0.5,), std=(0.5,), jitter_prob=(1.0, 0.0), brightness=0.4, contrast=0.4,
      saturation=0.4, hue=0.1, grayscale_prob=1.0))
  out = jax.jit(lambda r, v: augment.augment_views(r, v, config))(jax.random.key(0), views)
  plain = augment.normalize_images(views, config)
  assert not np.allclose(out[:, 0], plain[:, 0], atol=1e-3)
  np.testing.assert_allclose(out[:, 1], plain[:, 1], atol=1e-5)


def test_noise():
  views = _random_views((8, 2, 8, 8, 1))
  config = _augment_config(augmentations.augment_config(mean=(0.0,), std=(1.0,), noise_std=0.05))
  out = jax.jit(lambda r, v: augment.augment_views(r, v, config))(jax.random.key(0), views)
  noise = out - augment.normalize_images(views, config)
  assert bool(jnp.all((out >= 0.0) & (out <= 1.0)))  # Clipped to the [0, 1] range.
  assert 0.03 < float(jnp.std(noise)) < 0.06


def test_presets():
  cifar = augmentations.cifar_augment()
  assert (cifar.brightness, cifar.contrast, cifar.saturation, cifar.hue) == (0.4, 0.4, 0.2, 0.1)
  assert (cifar.jitter_prob, cifar.grayscale_prob, cifar.solarize_prob, cifar.blur_prob) == (
      0.8, 0.2, 0.1, 0.0)
  simclr = augmentations.simclr_augment(strength=0.5)
  assert (simclr.brightness, simclr.hue, simclr.blur_prob) == (0.4, 0.1, 0.5)
  # BYOL's asymmetric views through the whole RGB path.
  config = _augment_config(
      augmentations.simclr_augment(blur_prob=(1.0, 0.1), solarize_prob=(0.0, 0.2)))
  out = jax.jit(lambda r, v: augment.augment_views(r, v, config))(
      jax.random.key(0), _random_views((2, 2, 32, 32, 3)))
  assert out.shape == (2, 2, 32, 32, 3) and out.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(out)))


def test_normalize_images():
  config = _augment_config(augmentations.augment_config(mean=(0.5, 0.25), std=(0.5, 0.25)))
  images = jnp.array([[0, 255]], jnp.uint8)
  np.testing.assert_allclose(
      augment.normalize_images(images, config), [[-1.0, 3.0]], rtol=1e-6)


def test_bad_augment_configs_are_user_errors():
  views = _random_views((2, 2, 8, 8, 1))
  with pytest.raises(UserError, match="mean/std"):
    augment.augment_views(jax.random.key(0), views, _augment_config(augmentations.cifar_augment()))
  per_view = augmentations.digits_augment()
  per_view.blur_prob = (0.5, 0.5, 0.5)
  with pytest.raises(UserError, match="blur_prob has 3 entries for 2 views"):
    augment.augment_views(jax.random.key(0), views, _augment_config(per_view))
  with pytest.raises(UserError, match="unknown augmentation keys"):
    augmentations.augment_config(mean=(0.5,), std=(0.5,), blurr_prob=1.0)


def test_augment_imports_without_tensorflow():
  code = ("import sys; sys.modules['tensorflow'] = None; "
          "import ssl_jax.data.augment; assert 'tensorflow' not in {m.split('.')[0] "
          "for m, v in sys.modules.items() if v is not None}")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
