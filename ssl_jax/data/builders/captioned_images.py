"""TFDS builder for image-caption pairs made offline from the embedded digits and photos.

Importing this module registers the dataset under the TFDS name `captioned_images`, the
embedded default dataset for image-text contrastive learning (CLIP). Its features have the
structure of TFDS `coco_captions` (an `image`, and `captions` as a sequence of `{"text"}`), so
one input pipeline reads both; it adds a `label` so that zero-shot classification and the
probes can be scored. Everything is made from files inside installed packages and a fixed
seed, so preparing it needs no network and the data is a pure function of this code.

Two configs (BuilderConfigs), each with `train` and `test` splits and CAPTIONS_PER_IMAGE = 3
captions per image, each from a different template (drawn without replacement):

`captioned_images/digits` (16x16x3). Each UCI digit (scikit-learn's copy, see
`ssl_jax.data.builders.digits`) is rendered RENDERS times (train 4, test 2), each render with
independently drawn attributes: a background (black, white or gray), a foreground colour
(red, green, blue, yellow, magenta or cyan; on white only red, green, blue and magenta, since
yellow and cyan are light and wash out on white: FOREGROUNDS_ON), and a position (the 8x8
digit at row and column offsets {0, 4, 8} of the 16x16 canvas: top left ... bottom right).
A pixel is background + (digit intensity / 255) * (foreground - background). Label: the digit
(names "zero".."nine"). Every caption names the digit, as a word or a numeral, and the
templates vary which other attributes they name (DIGIT_TEMPLATES): the digit then, not the
colour or position, is what every caption of an image agrees on. The train/test split is the
`digits` builder's, so no source digit is in both: train 5,028 (1,257 x 4), test 1,080
(540 x 2) images.

`captioned_images/photos` (32x32x3). The `photos` builder's patches of ten photographs
(`photos.cut_patches`: train 4,000, test 800, spatially disjoint). Label: the photograph, with
a short natural-language class name (PHOTO_CLASS_NAMES: "temple", "flower", ... ). Every
caption names the scene with one of 3 descriptions of its photograph (SCENES, drawn per
caption) and, depending on the template (PHOTO_TEMPLATES), attributes computed from the
patch's pixels: its colour (`color_name` of its mean colour, by hue, saturation and value)
and its tone ("dark" or "bright" by the mean colour's luma, or nothing in between).

Every random draw comes from `numpy.random.default_rng((_SEED, split id, index...))`.
"""
from collections.abc import Iterator, Sequence
import colorsys
from typing import NamedTuple

import numpy as np
import tensorflow_datasets as tfds

from ssl_jax.data.builders import digits
from ssl_jax.data.builders import photos

CAPTIONS_PER_IMAGE = 3
RENDERS = {"train": 4, "test": 2}  # renders of each source digit
DIGIT_CANVAS = 16
DIGIT_OFFSETS = (0, 4, 8)  # the 8x8 digit's row/column offsets on the canvas
_SEED = 11
_SPLIT_IDS = {"train": 0, "test": 1}

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# Foregrounds and backgrounds far apart in RGB: every allowed pair is at least 150 apart.
FOREGROUNDS = {
    "red": (220, 20, 20), "green": (20, 180, 20), "blue": (30, 60, 230),
    "yellow": (240, 220, 20), "magenta": (210, 30, 210), "cyan": (20, 210, 210),
}
BACKGROUNDS = {"black": (0, 0, 0), "white": (255, 255, 255), "gray": (128, 128, 128)}
# Yellow and cyan are far from white in RGB but too light to read on it.
FOREGROUNDS_ON = {
    "black": tuple(FOREGROUNDS),
    "gray": tuple(FOREGROUNDS),
    "white": ("red", "green", "blue", "magenta"),
}

# (name, phrase) of the 9 positions, row-major over (row offset, column offset).
POSITIONS = (
    ("top left", "in the top left corner"), ("top", "at the top"),
    ("top right", "in the top right corner"), ("left", "on the left"),
    ("centre", "in the centre"), ("right", "on the right"),
    ("bottom left", "in the bottom left corner"), ("bottom", "at the bottom"),
    ("bottom right", "in the bottom right corner"),
)

# Fields: {word} / {numeral} the digit, {colour} the foreground, {background}, {position} the
# position's name, {where} its phrase. Each names the digit; they differ in the rest.
DIGIT_TEMPLATES = (
    "a {colour} {word} on a {background} background",
    "the number {numeral} written in {colour}",
    "a handwritten {numeral} {where}",
    "{colour} ink, digit {word}, {background} paper, {position}",
    "the digit {word} {where}, drawn in {colour} on {background}",
    "a {colour} {numeral} {where} of a {background} square",
    "a picture of the number {word}",
    "a {background} tile showing the numeral {numeral}",
)

# One short class name per photograph of `photos.PHOTOS`, in its order.
PHOTO_CLASS_NAMES = ("temple", "flower", "astronaut", "cat", "coffee", "galaxies", "tissue",
                     "rocket", "retina", "motorcycle")
# Descriptions of each photograph's scene (see the `photos.Photos` docstring for the sources).
SCENES = (
    ("a chinese temple", "the summer palace in beijing", "an ornate pavilion among trees"),
    ("a dahlia in bloom", "a garden flower", "flower petals"),
    ("an astronaut", "eileen collins in her flight suit", "a nasa astronaut portrait"),
    ("a tabby cat", "chelsea the cat", "a cat's fur"),
    ("a cup of coffee", "an espresso cup on a saucer", "a coffee cup"),
    ("distant galaxies", "the hubble deep field", "faint galaxies in deep space"),
    ("stained tissue under a microscope", "a microscope slide of colon tissue",
     "stained cells"),
    ("a rocket launch", "a falcon 9 rocket lifting off", "a rocket on its launch pad"),
    ("a retina", "the back of an eye", "a fundus photograph"),
    ("a motorcycle", "a parked motorbike", "a motorcycle indoors"),
)
# Fields: {scene} a description, {colour} the patch's colour name, {tone} "dark ", "bright "
# or "" (so a template reads well without it).
PHOTO_TEMPLATES = (
    "a photo of {scene}",
    "a {tone}patch of {scene}",
    "mostly {colour}, part of a photo of {scene}",
    "a close-up of {scene}",
    "{scene}, in {tone}{colour} tones",
    "a small crop from a picture of {scene}",
    "{colour} detail from an image of {scene}",
    "a small {tone}{colour} square cut from a photograph of {scene}",
)
# (hue name, upper bound in degrees): the hue bins of `color_name`; above 345 is red again.
_HUE_STOPS = (("red", 15), ("orange", 45), ("yellow", 70), ("green", 165), ("blue", 260),
              ("purple", 320), ("pink", 345))
DARK_LUMA, BRIGHT_LUMA = 60.0, 180.0  # tone thresholds on the mean colour's luma (0..255)


class Examples(NamedTuple):
  """The examples of one split: images uint8 [N, S, S, 3], labels [N], and captions, a list of
  N lists of CAPTIONS_PER_IMAGE distinct strings."""
  images: np.ndarray
  labels: np.ndarray
  captions: list[list[str]]


class DigitRenders(NamedTuple):
  """The drawn attributes of each render of a split, [N] each: the source digit's index in
  `load_digits`, the foreground and background names, the position index (into POSITIONS) and
  the caption templates [N, CAPTIONS_PER_IMAGE] (indices into DIGIT_TEMPLATES)."""
  sources: np.ndarray
  foregrounds: list[str]
  backgrounds: list[str]
  positions: np.ndarray
  templates: np.ndarray


def digit_renders(split: str) -> DigitRenders:
  """Draws the attributes of every render of `split`: RENDERS[split] per source digit of the
  `digits` split, in the order of its indices, each from its own generator seeded by
  (seed, split, source index, render)."""
  _, _, indices = digits.load_split_indices()
  sources, foregrounds, backgrounds, positions, templates = [], [], [], [], []
  for source in indices[split]:
    for render in range(RENDERS[split]):
      rng = np.random.default_rng((_SEED, _SPLIT_IDS[split], int(source), render))
      background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
      allowed = FOREGROUNDS_ON[background]
      sources.append(int(source))
      backgrounds.append(background)
      foregrounds.append(allowed[rng.integers(len(allowed))])
      positions.append(int(rng.integers(len(POSITIONS))))
      templates.append(rng.choice(len(DIGIT_TEMPLATES), CAPTIONS_PER_IMAGE, replace=False))
  return DigitRenders(np.array(sources), foregrounds, backgrounds, np.array(positions),
                      np.stack(templates))


def render_digit(digit: np.ndarray, foreground: str, background: str, position: int
                 ) -> np.ndarray:
  """uint8 [DIGIT_CANVAS, DIGIT_CANVAS, 3]: the digit [8, 8, 1] (0..255) in `foreground` on
  `background`, its top-left corner at POSITIONS[position]."""
  fg = np.array(FOREGROUNDS[foreground], np.float64)
  bg = np.array(BACKGROUNDS[background], np.float64)
  row, column = DIGIT_OFFSETS[position // 3], DIGIT_OFFSETS[position % 3]
  intensity = np.zeros((DIGIT_CANVAS, DIGIT_CANVAS, 1))
  intensity[row:row + 8, column:column + 8] = digit / 255.0
  return np.round(bg + intensity * (fg - bg)).astype(np.uint8)


def digit_caption(template: int, label: int, foreground: str, background: str,
                  position: int) -> str:
  """DIGIT_TEMPLATES[template] filled in for one render."""
  name, phrase = POSITIONS[position]
  return DIGIT_TEMPLATES[template].format(
      word=DIGIT_WORDS[label], numeral=str(label), colour=foreground, background=background,
      position=name, where=phrase)


def digit_examples(split: str) -> Examples:
  """The `digits` config's examples of `split` (see the module docstring), deterministically."""
  images, labels, _ = digits.load_split_indices()
  renders = digit_renders(split)
  out_images, out_labels, captions = [], [], []
  for source, foreground, background, position, templates in zip(*renders):
    label = int(labels[source])
    out_images.append(render_digit(images[source], foreground, background, position))
    out_labels.append(label)
    captions.append([digit_caption(int(t), label, foreground, background, position)
                     for t in templates])
  return Examples(np.stack(out_images), np.array(out_labels, np.int64), captions)


def color_name(rgb: Sequence[float]) -> str:
  """A basic colour name for a mean colour (0..255 per channel), from its HSV: value < 0.2 is
  black; else saturation < 0.15 is white (value > 0.85) or gray; else the hue decides: red
  (< 15 or >= 345 degrees), orange (< 45), yellow (< 70), green (< 165), blue (< 260), purple
  (< 320) or pink, except that a warm hue (red, orange, yellow) darker than value 0.6 is brown,
  unless it is a vivid red (saturation >= 0.7). Hue rather than the nearest of a palette,
  because a patch's mean colour is muted: naming the train patches by the nearest of an
  11-colour RGB palette called a third of them gray and none blue, not even the rocket's sky."""
  hue, saturation, value = colorsys.rgb_to_hsv(*(float(c) / 255.0 for c in rgb))
  if value < 0.2:
    return "black"
  if saturation < 0.15:
    return "white" if value > 0.85 else "gray"
  degrees = hue * 360.0
  name = next((name for name, stop in _HUE_STOPS if degrees < stop), "red")
  if name in ("red", "orange", "yellow") and value < 0.6:
    if not (name == "red" and saturation >= 0.7):
      return "brown"
  return name


def tone_name(rgb: Sequence[float]) -> str:
  """"dark", "bright" or "" (in between) by the Rec. 601 luma of a mean colour (0..255)."""
  luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
  if luma < DARK_LUMA:
    return "dark"
  return "bright" if luma > BRIGHT_LUMA else ""


def photo_captions(image: np.ndarray, label: int, rng: np.random.Generator) -> list[str]:
  """CAPTIONS_PER_IMAGE captions of a patch [32, 32, 3] of photograph `label`, each from a
  different template with an independently drawn scene description. No tone is given with
  black or white ("dark black" says nothing more)."""
  mean = image.reshape(-1, 3).mean(axis=0)
  colour, tone = color_name(mean), tone_name(mean)
  if colour in ("black", "white"):
    tone = ""
  templates = rng.choice(len(PHOTO_TEMPLATES), CAPTIONS_PER_IMAGE, replace=False)
  scenes = rng.integers(len(SCENES[label]), size=CAPTIONS_PER_IMAGE)
  return [PHOTO_TEMPLATES[t].format(scene=SCENES[label][s], colour=colour,
                                    tone=f"{tone} " if tone else "")
          for t, s in zip(templates, scenes)]


def photo_examples(split: str) -> Examples:
  """The `photos` config's examples of `split`: `photos.cut_patches(split)` with captions,
  each patch's draws seeded by (seed, split, patch index)."""
  patches = photos.cut_patches(split)
  captions = [
      photo_captions(image, int(label),
                     np.random.default_rng((_SEED, _SPLIT_IDS[split], index)))
      for index, (image, label) in enumerate(zip(patches.images, patches.labels))]
  return Examples(patches.images, patches.labels.astype(np.int64), captions)


class CaptionedImages(tfds.core.GeneratorBasedBuilder):
  """Images with 3 captions each, from the embedded digits or photos (see the module
  docstring): `digits` 5,028 train / 1,080 test 16x16 renders, `photos` 4,000 / 800 32x32
  patches."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release: digits (coloured, placed renders) and photos (patches), "
               "3 templated captions per image.",
  }
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(
          name="digits",
          description=("UCI digits rendered 16x16 in colour at 9 positions, 4 (train) or 2 "
                       "(test) renders per digit, captions naming digit, colour, "
                       "background, position.")),
      tfds.core.BuilderConfig(
          name="photos",
          description=("32x32 patches of ten photographs, captions naming the scene, the "
                       "patch's colour and tone.")),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    if self.builder_config.name == "digits":
      size, names = DIGIT_CANVAS, DIGIT_WORDS
      homepage = "https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits"
      citation = digits._CITATION  # pylint: disable=protected-access
    else:
      size, names = photos.PATCH_SIZE, PHOTO_CLASS_NAMES
      homepage = "https://scikit-image.org/docs/stable/api/skimage.data.html"
      citation = photos._CITATION  # pylint: disable=protected-access
    return self.dataset_info_from_configs(
        description=("Image-caption pairs made offline from the embedded digits or photos, "
                     "3 templated captions per image, in the feature layout of "
                     "coco_captions."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(size, size, 3), dtype=np.uint8,
                                         encoding_format="png"),
            "label": tfds.features.ClassLabel(names=list(names)),
            "captions": tfds.features.Sequence({"text": np.str_}),
        }),
        supervised_keys=("image", "label"),
        homepage=homepage,
        citation=citation,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """Makes both splits from the bundled data; `dl_manager` is unused (no download)."""
    del dl_manager
    make = digit_examples if self.builder_config.name == "digits" else photo_examples
    return {split: self._generate_examples(make(split)) for split in ("train", "test")}

  def _generate_examples(self, examples: Examples
                         ) -> Iterator[tuple[int, dict[str, object]]]:
    """Yields examples keyed by their index in the split's `Examples`, stable across runs."""
    for index, (image, label, captions) in enumerate(zip(*examples)):
      yield index, {"image": image, "label": int(label),
                    "captions": {"text": list(captions)}}
