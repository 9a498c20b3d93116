"""The embedded `captioned_images` dataset: digits and photo patches with 3 templated captions."""
import re

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ssl_jax.data.builders import captioned_images as ci
from ssl_jax.data.builders import digits

SIZES = {("digits", "train"): 5028, ("digits", "test"): 1080,
         ("photos", "train"): 4000, ("photos", "test"): 800}
IMAGE_SIDE = {"digits": 16, "photos": 32}
MAKE = {"digits": ci.digit_examples, "photos": ci.photo_examples}


def words(caption: str) -> set[str]:
  return set(re.findall(r"[a-z0-9]+", caption))


@pytest.fixture(scope="module")
def examples():
  return {(config, split): MAKE[config](split) for config, split in SIZES}


@pytest.fixture(scope="module")
def renders():
  return {split: ci.digit_renders(split) for split in ("train", "test")}


def test_sizes_shapes_and_three_distinct_captions(examples):
  for (config, split), size in SIZES.items():
    images, labels, captions = examples[config, split]
    side = IMAGE_SIDE[config]
    assert images.shape == (size, side, side, 3) and images.dtype == np.uint8
    assert labels.shape == (size,) and set(np.unique(labels)) == set(range(10))
    assert len(captions) == size
    assert all(len(set(c)) == ci.CAPTIONS_PER_IMAGE == len(c) for c in captions)
    # The templates are drawn without replacement, so every template is used.
    assert len({caption.split()[0] for c in captions for caption in c}) >= 5


def test_generation_is_deterministic(examples):
  for config in ("digits", "photos"):
    again = MAKE[config]("test")
    np.testing.assert_array_equal(again.images, examples[config, "test"].images)
    np.testing.assert_array_equal(again.labels, examples[config, "test"].labels)
    assert again.captions == examples[config, "test"].captions


def test_digit_captions_name_their_digit_and_no_other(examples):
  for split in ("train", "test"):
    _, labels, captions = examples["digits", split]
    for label, image_captions in zip(labels, captions):
      for caption in image_captions:
        named = {d for d in range(10) if {ci.DIGIT_WORDS[d], str(d)} & words(caption)}
        assert named == {label}, caption
        assert not re.search(r"\ba (8|eight|11|18)\b", caption), caption  # "an 8"


def test_digit_pixels_match_the_attributes_the_captions_name(examples, renders):
  """The brightest pixel of the source digit is (nearly) the foreground colour, the canvas
  outside the digit is the background, and every colour, background and position a caption
  names is the render's."""
  source_images, _, _ = digits.load_split_indices()
  for split in ("train", "test"):
    images, _, captions = examples["digits", split]
    drawn = renders[split]
    for image, image_captions, source, fg, bg, position in zip(
        images, captions, drawn.sources, drawn.foregrounds, drawn.backgrounds,
        drawn.positions):
      assert fg in ci.FOREGROUNDS_ON[bg]
      row, column = ci.DIGIT_OFFSETS[position // 3], ci.DIGIT_OFFSETS[position % 3]
      digit = source_images[source][..., 0]
      brightest = np.unravel_index(np.argmax(digit), digit.shape)
      pixel = image[row + brightest[0], column + brightest[1]].astype(float)
      fraction = digit[brightest] / 255
      np.testing.assert_allclose(
          pixel, (1 - fraction) * np.array(ci.BACKGROUNDS[bg]) + fraction *
          np.array(ci.FOREGROUNDS[fg]), atol=0.5)
      # And of the palette, that pixel is nearest the foreground the captions name.
      nearest = min(ci.FOREGROUNDS,
                    key=lambda name: np.linalg.norm(pixel - ci.FOREGROUNDS[name]))
      assert nearest == fg
      outside = image.copy()
      outside[row:row + 8, column:column + 8] = ci.BACKGROUNDS[bg]
      assert (outside == np.array(ci.BACKGROUNDS[bg], np.uint8)).all()
      for caption in image_captions:
        assert words(caption) & set(ci.FOREGROUNDS) <= {fg}, caption
        assert words(caption) & set(ci.BACKGROUNDS) <= {bg}, caption
        named = {i for i, (name, phrase) in enumerate(ci.POSITIONS)
                 if phrase in caption or caption.endswith(", " + name)}
        assert named <= {position}, caption


def test_foreground_and_background_always_contrast():
  for bg, allowed in ci.FOREGROUNDS_ON.items():
    for fg in allowed:
      distance = np.linalg.norm(np.subtract(ci.FOREGROUNDS[fg], ci.BACKGROUNDS[bg]))
      assert distance >= 150, (fg, bg)
  assert set(ci.FOREGROUNDS_ON["white"]).isdisjoint({"yellow", "cyan"})


def test_digit_renders_keep_train_and_test_source_digits_apart(renders):
  _, _, indices = digits.load_split_indices()
  for split in ("train", "test"):
    sources, counts = np.unique(renders[split].sources, return_counts=True)
    np.testing.assert_array_equal(sources, np.sort(indices[split]))
    assert (counts == ci.RENDERS[split]).all()
  assert not set(renders["train"].sources) & set(renders["test"].sources)
  # The attributes vary: every colour, background and position occurs.
  assert set(renders["train"].foregrounds) == set(ci.FOREGROUNDS)
  assert set(renders["train"].backgrounds) == set(ci.BACKGROUNDS)
  assert set(renders["train"].positions) == set(range(9))


def test_colour_and_tone_names():
  assert ci.color_name((220, 20, 20)) == "red"
  assert ci.color_name((150, 10, 10)) == "red"  # dark but vivid
  assert ci.color_name((147, 106, 75)) == "brown"
  assert ci.color_name((240, 150, 30)) == "orange"
  assert ci.color_name((20, 180, 20)) == "green"
  assert ci.color_name((63, 75, 100)) == "blue"
  assert ci.color_name((19, 20, 20)) == "black"
  assert ci.color_name((240, 240, 235)) == "white"
  assert ci.color_name((128, 120, 125)) == "gray"
  assert ci.tone_name((20, 20, 20)) == "dark" and ci.tone_name((230, 230, 230)) == "bright"
  assert ci.tone_name((128, 128, 128)) == ""


def test_photo_captions_name_the_scene_and_the_patch_colour(examples):
  colours = {"black", "gray", "white", "red", "orange", "brown", "yellow", "green", "blue",
             "purple", "pink"}
  for split in ("train", "test"):
    images, labels, captions = examples["photos", split]
    for image, label, image_captions in zip(images, labels, captions):
      mean = image.reshape(-1, 3).mean(axis=0)
      luma = 0.299 * mean[0] + 0.587 * mean[1] + 0.114 * mean[2]
      for caption in image_captions:
        scenes = [i for i, descriptions in enumerate(ci.SCENES)
                  if any(d in caption for d in descriptions)]
        assert scenes == [label], caption
        assert words(caption) & colours <= {ci.color_name(mean)}, caption
        if "dark" in words(caption):
          assert luma < ci.DARK_LUMA
        if "bright" in words(caption):
          assert luma > ci.BRIGHT_LUMA
  # The galaxies are black; the retina is red.
  images, labels, captions = examples["photos", "test"]
  galaxies = np.flatnonzero(labels == ci.PHOTO_CLASS_NAMES.index("galaxies"))
  assert all(ci.color_name(images[i].reshape(-1, 3).mean(0)) == "black" for i in galaxies)


@pytest.mark.parametrize("config", ["digits", "photos"])
def test_tfds_builds_and_reads_back(config, tmp_path, examples):
  builder = tfds.builder(f"captioned_images/{config}", data_dir=str(tmp_path))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  assert str(builder.version) == "1.0.0"
  names = builder.info.features["label"].names
  assert names == list(ci.DIGIT_WORDS if config == "digits" else ci.PHOTO_CLASS_NAMES)
  side = IMAGE_SIDE[config]
  for split in ("train", "test"):
    assert builder.info.splits[split].num_examples == SIZES[config, split]
    example = next(iter(tfds.as_numpy(builder.as_dataset(split=split).take(1))))
    assert example["image"].shape == (side, side, 3) and example["image"].dtype == np.uint8
    assert 0 <= example["label"] < 10
    texts = [t.decode() for t in example["captions"]["text"]]
    assert len(texts) == ci.CAPTIONS_PER_IMAGE
    # The stored example is one of the generated ones.
    expected = examples[config, split]
    matches = [i for i, c in enumerate(expected.captions) if c == texts]
    assert any(np.array_equal(expected.images[i], example["image"]) for i in matches)
