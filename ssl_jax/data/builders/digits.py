"""TFDS builder for the 8x8 UCI handwritten digits that ship with scikit-learn.

Importing this module registers the dataset under the TFDS name `digits`, so the
rest of the codebase loads it exactly like `cifar10` or `imagenet2012`. The data
comes from `sklearn.datasets.load_digits`, which is bundled with scikit-learn:
preparing it needs no network, which makes it the dataset for offline smoke
runs and tests.
"""

from collections.abc import Iterator

import numpy as np
from sklearn import datasets as sk_datasets
from sklearn import model_selection
import tensorflow_datasets as tfds

_NUM_CLASSES = 10
_IMAGE_SHAPE = (8, 8, 1)
_MAX_PIXEL = 16  # The UCI digits count set pixels of a 4x4 block: 0..16.
_TEST_FRACTION = 0.3
_SPLIT_SEED = 0

_CITATION = """\
@misc{alpaydin1998optical,
  author = {Alpaydin, E. and Kaynak, C.},
  title = {{Optical Recognition of Handwritten Digits}},
  year = {1998},
  howpublished = {UCI Machine Learning Repository},
  doi = {10.24432/C50P49},
}
"""


def _to_uint8(images: np.ndarray) -> np.ndarray:
  """Rescales counts 0..16 to 0..255 (round(v * 255 / 16)), the range of a PNG."""
  return np.round(images * (255.0 / _MAX_PIXEL)).astype(np.uint8)


def load_split_indices() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
  """(uint8 images [1797, 8, 8, 1], labels [1797], {"train": indices, "test": indices}): the
  bundled digits and the builder's fixed stratified 70/30 split (also the split of the
  `moving_digits` videos)."""
  digits = sk_datasets.load_digits()
  images = _to_uint8(digits.images)[..., None]
  labels = digits.target.astype(np.int64)
  train_idx, test_idx = model_selection.train_test_split(
      np.arange(len(labels)), test_size=_TEST_FRACTION, stratify=labels,
      random_state=_SPLIT_SEED)
  return images, labels, {"train": train_idx, "test": test_idx}


class Digits(tfds.core.GeneratorBasedBuilder):
  """UCI handwritten digits (Alpaydin & Kaynak, 1998), 1,797 8x8 grayscale images.

  Source: "Optical Recognition of Handwritten Digits", UCI Machine Learning
  Repository, as bundled by scikit-learn (`sklearn.datasets.load_digits`, the
  test part of the UCI data). Each pixel counts the set pixels of a 4x4 block of
  a 32x32 bitmap (0..16); it is stored rescaled to uint8 0..255.

  The UCI data has no canonical split of this subset, so the builder fixes one:
  a stratified 70/30 split (`train_test_split(test_size=0.3, stratify=y,
  random_state=0)`), giving `train` 1,257 and `test` 540 examples with every
  class represented in proportion.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release: sklearn digits, stratified 70/30 train/test.",
  }

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=(
            "UCI handwritten digits (8x8, 10 classes) as shipped with "
            "scikit-learn, with a fixed stratified 70/30 train/test split."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(
                shape=_IMAGE_SHAPE, dtype=np.uint8, encoding_format="png"),
            "label": tfds.features.ClassLabel(num_classes=_NUM_CLASSES),
        }),
        supervised_keys=("image", "label"),
        homepage=(
            "https://archive.ics.uci.edu/dataset/80/"
            "optical+recognition+of+handwritten+digits"),
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """Splits the bundled data; `dl_manager` is unused because nothing is downloaded."""
    del dl_manager
    images, labels, indices = load_split_indices()
    return {split: self._generate_examples(images, labels, chosen)
            for split, chosen in indices.items()}

  def _generate_examples(
      self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray
  ) -> Iterator[tuple[int, dict[str, np.ndarray | int]]]:
    """Yields examples keyed by their index in `load_digits`, stable across runs."""
    for i in indices:
      yield int(i), {"image": images[i], "label": int(labels[i])}
