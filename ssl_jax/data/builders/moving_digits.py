"""TFDS builder for videos of one UCI digit bouncing in a larger canvas, offline.

Importing this module registers the dataset under the TFDS name `moving_digits`, the embedded
video dataset for next-frame prediction: a small, offline cousin of Moving MNIST (Srivastava,
Mansimov & Salakhutdinov 2015, Sec. 3), made from the 8x8 digits bundled with scikit-learn
(`ssl_jax.data.builders.digits`), so preparing it needs no network.

Each video shows one digit, enlarged 2x by pixel repetition to 16x16, moving with a constant
integer velocity in a 32x32 black canvas and bouncing off the walls (a coordinate that would
leave [0, 16] is reflected back and its velocity component flips sign) for 10 frames. The
start position is uniform over the 17 x 17 positions where the digit lies wholly inside the
canvas; each velocity component is drawn from {-3, -2, -1, 1, 2, 3} pixels per frame. All
draws come from `numpy.random.default_rng((_SEED, split, digit index))`, so a video is a
pure function of its digit and split.

Features: `frames` uint8 [10, 32, 32, 1] (0..255, the digit's grey levels), `label`
ClassLabel(10), the digit (for the probes). Splits follow the `digits` builder's fixed
stratified 70/30 split, one video per digit: train 1,257 videos (12.9 MB of frames), test 540.
"""
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from ssl_jax.data.builders import digits

NUM_FRAMES = 10
CANVAS = 32
SCALE = 2  # 8x8 digits -> 16x16
SPEEDS = (-3, -2, -1, 1, 2, 3)
_SEED = 7
_SPLIT_IDS = {"train": 0, "test": 1}


def trajectory(rng: np.random.Generator, num_frames: int, room: int,
               with_velocities: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
  """Top-left corners [num_frames, 2] (row, column) of a sprite moving with constant velocity
  in [0, room]^2, reflected at the walls (elastic bounces).

  With `with_velocities`, also the velocities [num_frames, 2] that each corner sets off with
  towards the next one (before any bounce on the way): with the corners they give the
  continuous path and the instants of the bounces (`sounding_digits` times its sound by them).
  The draws, and so the corners, are the same either way.
  """
  position = rng.integers(0, room + 1, size=2)
  velocity = rng.choice(SPEEDS, size=2)
  corners, velocities = [], []
  for _ in range(num_frames):
    corners.append(position.copy())
    velocities.append(velocity.copy())
    position = position + velocity
    for axis in range(2):
      if position[axis] < 0:
        position[axis], velocity[axis] = -position[axis], -velocity[axis]
      elif position[axis] > room:
        position[axis], velocity[axis] = 2 * room - position[axis], -velocity[axis]
  if with_velocities:
    return np.stack(corners), np.stack(velocities)
  return np.stack(corners)


def render(sprite: np.ndarray, corners: np.ndarray, canvas: int) -> np.ndarray:
  """uint8 frames [T, canvas, canvas, C]: the sprite [h, w, C] pasted at each corner on black."""
  height, width, channels = sprite.shape
  frames = np.zeros((len(corners), canvas, canvas, channels), np.uint8)
  for frame, (top, left) in zip(frames, corners):
    frame[top:top + height, left:left + width] = sprite
  return frames


def moving_digit(image: np.ndarray, split: str, index: int) -> np.ndarray:
  """The video of digit `image` [8, 8, 1] at `index` of the digits for `split` (see the
  module docstring): uint8 [NUM_FRAMES, CANVAS, CANVAS, 1]."""
  sprite = image.repeat(SCALE, axis=0).repeat(SCALE, axis=1)
  rng = np.random.default_rng((_SEED, _SPLIT_IDS[split], int(index)))
  corners = trajectory(rng, NUM_FRAMES, CANVAS - sprite.shape[0])
  return render(sprite, corners, CANVAS)


class MovingDigits(tfds.core.GeneratorBasedBuilder):
  """One bouncing UCI digit per video (see the module docstring): 1,257 train / 540 test
  videos of 10 frames of 32x32x1."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: one digit per video, 10 frames of 32x32."}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=("UCI handwritten digits (scikit-learn's copy), enlarged to 16x16 and "
                     "bouncing in a 32x32 canvas for 10 frames; label = the digit."),
        features=tfds.features.FeaturesDict({
            "frames": tfds.features.Tensor(shape=(NUM_FRAMES, CANVAS, CANVAS, 1),
                                           dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("frames", "label"),
        homepage="https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits",
        citation=digits._CITATION,  # pylint: disable=protected-access
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """Renders the videos from the bundled digits; nothing is downloaded."""
    del dl_manager
    images, labels, indices = digits.load_split_indices()
    return {split: self._generate_examples(images, labels, split, chosen)
            for split, chosen in indices.items()}

  def _generate_examples(self, images: np.ndarray, labels: np.ndarray, split: str,
                         indices: np.ndarray
                         ) -> Iterator[tuple[int, dict[str, np.ndarray | int]]]:
    """Yields videos keyed by their digit's index in `load_digits`, stable across runs."""
    for index in indices:
      yield int(index), {"frames": moving_digit(images[index], split, index),
                         "label": int(labels[index])}
