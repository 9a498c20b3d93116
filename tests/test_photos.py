"""The embedded `photos` dataset: 32x32 colour patches of ten photographs, spatially split."""
import collections

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import colorization
from ssl_jax.data import image_pipeline, stream
from ssl_jax.data.inputs import DatasetInfo
from ssl_jax.data.builders import photos

NUM_CLASSES, TRAIN_PER_CLASS, TEST_PER_CLASS = 10, 400, 80


@pytest.fixture(scope="module")
def patches():
  return {split: photos.cut_patches(split) for split in ("train", "test")}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  """The TFDS splits prepared into a fresh data dir, as numpy."""
  config = colorization.get_config("photos")
  config.unlock()
  config.data.data_dir = str(tmp_path_factory.mktemp("tfds"))
  builder = stream.load_builder(config)
  splits = {split: tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
            for split in ("train", "test")}
  return config, builder, splits


def test_builder_shapes_counts_and_labels(prepared):
  config, builder, splits = prepared
  assert builder.name == "photos" and str(builder.version) == "1.0.0"
  assert builder.info.features["label"].names[:3] == ["china", "flower", "astronaut"]
  for split, per_class in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
    images, labels = splits[split]["image"], splits[split]["label"]
    assert images.shape == (NUM_CLASSES * per_class, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(labels, minlength=NUM_CLASSES),
                                  [per_class] * NUM_CLASSES)
    # Real colour photographs: the channels differ and the patches vary.
    assert np.abs(images[..., 0].astype(int) - images[..., 2]).mean() > 10
    assert images.std() > 40
  assert image_pipeline.dataset_info(config) == DatasetInfo(
      num_train_examples=4000, num_test_examples=800, num_classes=10, input_shape=(32, 32, 3),
      class_names=tuple(photo.name for photo in photos.PHOTOS))


def test_prepared_data_is_the_deterministic_cut(prepared, patches):
  """TFDS holds exactly `cut_patches`' examples, and cutting again gives the same patches."""
  _, _, splits = prepared
  for split in ("train", "test"):
    stored = collections.Counter(
        (image.tobytes(), int(label))
        for image, label in zip(splits[split]["image"], splits[split]["label"]))
    cut = collections.Counter(
        (image.tobytes(), int(label))
        for image, label in zip(patches[split].images, patches[split].labels))
    assert stored == cut
  again = photos.cut_patches("test")
  np.testing.assert_array_equal(again.images, patches["test"].images)
  np.testing.assert_array_equal(again.corners, patches["test"].corners)


def test_splits_are_spatially_disjoint(patches):
  """Every train patch lies left of its photograph's test band by at least the gap; the
  patches are the photograph's pixels at their recorded corners."""
  for label, photo in enumerate(photos.PHOTOS):
    image = photos.resized_photo(photo)
    assert min(image.shape[:2]) == photos.SHORT_SIDE
    train = patches["train"].corners[patches["train"].labels == label]
    test = patches["test"].corners[patches["test"].labels == label]
    test_start = image.shape[1] - round(photos.TEST_FRACTION * image.shape[1])
    assert train[:, 1].max() + photos.PATCH_SIZE <= test_start - photos.GAP
    assert test[:, 1].min() >= test_start
    assert test[:, 1].max() + photos.PATCH_SIZE <= image.shape[1]
    assert len(np.unique(train, axis=0)) == TRAIN_PER_CLASS  # distinct positions
    for split, corners in (("train", train), ("test", test)):
      top, left = corners[0]
      first = patches[split].images[np.flatnonzero(patches[split].labels == label)[0]]
      np.testing.assert_array_equal(
          first, image[top:top + photos.PATCH_SIZE, left:left + photos.PATCH_SIZE])
