"""TFDS builder for colour patches cut from ten photographs shipped inside installed packages.

Importing this module registers the dataset under the TFDS name `photos`. It is the
embedded colour dataset: every source photograph is a file inside the scikit-learn or
scikit-image wheel (read with `sklearn.datasets.load_sample_image` and `skimage.data`, which
read those files without any download), so preparing it needs no network. Each example is
a 32x32 RGB patch; its label says which photograph it was cut from.
"""

from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
from PIL import Image
import skimage.data
from sklearn import datasets as sk_datasets
import tensorflow_datasets as tfds

PATCH_SIZE = 32
SHORT_SIDE = 160  # each photograph is resized so that its shorter side has this many pixels
TEST_FRACTION = 0.25  # the rightmost quarter of each resized photograph is the test band
GAP = 8  # pixels between the train region and the test band (no resampling leaks across)
TRAIN_PER_PHOTO, TEST_PER_PHOTO = 400, 80
_SEED = 0


class _Photo(NamedTuple):
  name: str
  load: Callable[[], np.ndarray]
  centre_fraction: float  # the side of the centred square kept, as a fraction (1.0 = all)


# (name, loader, crop). The retina photograph is a disc on black: its central 64% square
# keeps only the fundus, so no patch is the black background the Hubble field also has.
PHOTOS = (
    _Photo("china", lambda: sk_datasets.load_sample_image("china.jpg"), 1.0),
    _Photo("flower", lambda: sk_datasets.load_sample_image("flower.jpg"), 1.0),
    _Photo("astronaut", skimage.data.astronaut, 1.0),
    _Photo("chelsea", skimage.data.chelsea, 1.0),
    _Photo("coffee", skimage.data.coffee, 1.0),
    _Photo("hubble_deep_field", skimage.data.hubble_deep_field, 1.0),
    _Photo("immunohistochemistry", skimage.data.immunohistochemistry, 1.0),
    _Photo("rocket", skimage.data.rocket, 1.0),
    _Photo("retina", skimage.data.retina, 0.64),
    _Photo("motorcycle", lambda: skimage.data.stereo_motorcycle()[0], 1.0),
)

_CITATION = """\
@misc{photos_scikit,
  title = {Sample photographs bundled with scikit-learn 1.9 (china.jpg, flower.jpg) and
           scikit-image 0.26 (skimage.data)},
  note = {Credits and licences in the Photos builder docstring},
}
"""


class Patches(NamedTuple):
  """The patches of one split: images uint8 [N, 32, 32, 3], labels [N] (photograph index),
  and each patch's top-left corner (row, column) in its resized photograph [N, 2]."""
  images: np.ndarray
  labels: np.ndarray
  corners: np.ndarray


def resized_photo(photo: _Photo) -> np.ndarray:
  """The photograph centre-cropped to `centre_fraction` and resized (Lanczos) so that its
  shorter side is SHORT_SIDE pixels: uint8 [H, W, 3]."""
  image = np.asarray(photo.load())[..., :3]
  if photo.centre_fraction < 1.0:
    height, width = image.shape[:2]
    side = round(min(height, width) * photo.centre_fraction)
    top, left = (height - side) // 2, (width - side) // 2
    image = image[top:top + side, left:left + side]
  height, width = image.shape[:2]
  scale = SHORT_SIDE / min(height, width)
  size = (round(width * scale), round(height * scale))
  return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


def split_columns(width: int, split: str) -> tuple[int, int]:
  """[start, stop) of the columns a split's patches lie in: `test` is the rightmost
  TEST_FRACTION of the photograph, `train` everything left of it minus a GAP-pixel margin."""
  test_start = width - round(TEST_FRACTION * width)
  return (0, test_start - GAP) if split == "train" else (test_start, width)


def cut_patches(split: str) -> Patches:
  """The patches of `split` ("train" or "test"), deterministically.

  From each photograph, TRAIN_PER_PHOTO (TEST_PER_PHOTO) distinct patch positions are drawn
  without replacement, uniformly over all positions whose patch lies wholly inside the
  split's columns, with a generator seeded by (seed, photograph index, split). Train patches
  may overlap each other; no train patch shares a pixel with a test patch.
  """
  count = TRAIN_PER_PHOTO if split == "train" else TEST_PER_PHOTO
  images, labels, corners = [], [], []
  for label, photo in enumerate(PHOTOS):
    image = resized_photo(photo)
    start, stop = split_columns(image.shape[1], split)
    rows = np.arange(image.shape[0] - PATCH_SIZE + 1)
    columns = np.arange(start, stop - PATCH_SIZE + 1)
    positions = np.stack(np.meshgrid(rows, columns, indexing="ij"), -1).reshape(-1, 2)
    rng = np.random.default_rng([_SEED, label, split == "test"])
    chosen = positions[np.sort(rng.choice(len(positions), count, replace=False))]
    for top, left in chosen:
      images.append(image[top:top + PATCH_SIZE, left:left + PATCH_SIZE])
    labels.append(np.full(count, label, np.int64))
    corners.append(chosen)
  return Patches(np.stack(images), np.concatenate(labels), np.concatenate(corners))


class Photos(tfds.core.GeneratorBasedBuilder):
  """32x32 colour patches of ten photographs; the label is the photograph (10 classes).

  Sources, as the packages document them (all files inside the installed wheels):
    0 china       sklearn `china.jpg` (427x640): Summer Palace, Beijing. CC BY 2.0, by
                  danielbuechele (Flickr), retrieved by Robert Layton for scikit-learn.
    1 flower      sklearn `flower.jpg` (427x640): a dahlia. CC BY 2.0, by vultilion (Flickr).
    2 astronaut   skimage `astronaut.png` (512x512): Eileen Collins, NASA Great Images
                  database; public domain.
    3 chelsea     skimage `chelsea.png` (300x451): Chelsea the cat; CC0, Stefan van der Walt.
    4 coffee      skimage `coffee.png` (400x600): a coffee cup, courtesy of Pikolo Espresso
                  Bar; CC0, Rachel Michetti.
    5 hubble_deep_field  skimage `hubble_deep_field.jpg` (872x1000): Hubble eXtreme Deep
                  Field, NASA (HubbleSite); public domain.
    6 immunohistochemistry  skimage `ihc.png` (512x512): IHC staining (DAB) with
                  hematoxylin counterstain of colonic glands, Center for Microscopy And
                  Molecular Imaging (CMMI); no known copyright restrictions.
    7 rocket      skimage `rocket.jpg` (427x640): DSCOVR launch on Falcon 9, SpaceX; public
                  domain.
    8 retina      skimage `retina.jpg` (1411x1411): fundus photograph of a normal left eye,
                  Mikael Haggstrom (Wikimedia Commons); CC0. Its central 64% square is used.
    9 motorcycle  skimage `motorcycle_left.png` (500x741, `stereo_motorcycle()[0]`): left
                  view of the Middlebury 2014 stereo benchmark's motorcycle (Scharstein et
                  al., Middlebury College), down-sampled 4x by scikit-image, which states no
                  licence for it.

  Each photograph is resized (Lanczos) to a shorter side of 160 px (e.g. 427x640 ->
  160x240), so a 32 px patch holds a recognisable part of the scene. The split is spatial:
  `test` patches come from the rightmost quarter of each resized photograph, `train`
  patches from the part left of it less an 8 px margin, so no test pixel is in any train
  patch. Per photograph 400 train and 80 test patch positions are drawn without replacement
  with a fixed seed: `train` has 4,000 and `test` 800 examples, classes balanced.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release: 10 photographs, 400/80 patches each, right-band test split.",
  }

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=(
            "32x32 colour patches cut from ten photographs shipped with scikit-learn and "
            "scikit-image, labelled by photograph, with a spatially disjoint test split."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(
                shape=(PATCH_SIZE, PATCH_SIZE, 3), dtype=np.uint8, encoding_format="png"),
            "label": tfds.features.ClassLabel(names=[photo.name for photo in PHOTOS]),
        }),
        supervised_keys=("image", "label"),
        homepage="https://scikit-image.org/docs/stable/api/skimage.data.html",
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """Cuts both splits from the bundled photographs; `dl_manager` is unused (no download)."""
    del dl_manager
    return {split: self._generate_examples(cut_patches(split)) for split in ("train", "test")}

  def _generate_examples(
      self, patches: Patches) -> Iterator[tuple[int, dict[str, np.ndarray | int]]]:
    """Yields patches keyed by their index in `cut_patches`, stable across runs."""
    for index, (image, label) in enumerate(zip(patches.images, patches.labels)):
      yield index, {"image": image, "label": int(label)}
