"""A folder of the user's own images as a TFDS dataset: `--config.dataset=folder:PATH` for the
image modality.

Images of any size and of the formats Pillow reads (PNG, JPEG, GIF, BMP, TIFF, WebP, PPM;
grayscale, RGBA and palette images included) are stored as `side` x `side` RGB PNGs: turned
upright by their EXIF orientation, converted to RGB (alpha dropped), the shorter side
resized to `side` (bicubic, antialiased) and the centre cropped. `side` is what the run's
views need, max(config.data.image_size, config.data.eval_resize), so every recipe's crops
(none, random resized, resize-and-centre-crop) read a fixed-size image and batch. A file
Pillow cannot read (truncated, or not an image under an image's name) is one warning line
naming it, and is left out.

Class folders (`PATH/cat/*.jpg`, `PATH/dog/*.png`) give a `label` (a ClassLabel of the sorted
folder names); a folder without them has no label (`metadata["labelled"]` False). Splits and
names follow `user_files`. The training split's per-channel pixel mean and std (on the [0, 1]
scale, over every pixel of the stored images) are computed while it is written and kept in
`metadata["mean"]`, `["std"]`: what `config.data.statistics = "dataset"` normalises with.
Each example also keeps its `file`, the path relative to PATH it came from.
"""
from collections.abc import Iterator
import concurrent.futures
import dataclasses
import os
from typing import Any

from absl import logging
import numpy as np
from PIL import Image, ImageOps
import tensorflow_datasets as tfds

from ssl_jax.data.builders import user_files
from ssl_jax.errors import UserError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm",
              ".pgm", ".pbm")
_WORKERS = min(8, os.cpu_count() or 1)  # Pillow decodes and resizes without holding the GIL


@dataclasses.dataclass(eq=False)
class FolderConfig(tfds.core.BuilderConfig):
  """One version of one folder at one stored size: its root, the side of the stored squares
  and the files found there (not part of the name: the digest in it covers them)."""
  root: str = ""
  side: int = 0
  files: tuple = dataclasses.field(default=(), repr=False)


def stored_side(data: Any) -> int:
  """The side of the stored squares: the largest the run's crops read."""
  side = max(int(data.image_size), int(data.get("eval_resize") or 0))
  if side < 1:
    raise UserError(f"config.data.image_size must be >= 1, got {data.image_size}")
  return side


def folder_builder(root: str, config: Any) -> tfds.core.DatasetBuilder:
  """The prepared dataset of the images in `root` for `config`'s views (see the module)."""
  side = stored_side(config.data)
  files = user_files.find_files(root, EXTENSIONS, "images", class_folders=True)
  digest = user_files.fingerprint(root, files, "image", side)
  name = user_files.config_name(root, f"{side}px", digest)

  def make_config() -> FolderConfig:
    splits = user_files.assign_splits([f.label for f in files], [f.relpath for f in files],
                                      [f.split for f in files])
    user_files.check_both_splits(root, splits, "images")
    return FolderConfig(
        name=name, version=user_files.VERSION, root=root, side=side,
        files=tuple(dataclasses.replace(f, split=split) for f, split in zip(files, splits)),
        description=f"The images of {root}, stored as {side}x{side} RGB.")
  return user_files.prepared(ImageFolder, name, make_config, config.data.get("data_dir"))


def load_image(path: str, side: int) -> np.ndarray | str:
  """uint8 [side, side, 3]: the image at `path` upright, in RGB, its shorter side resized to
  `side` and its centre cropped; or why it cannot be read (one line)."""
  try:
    with Image.open(path) as image:
      image.draft("RGB", (side, side))  # a JPEG decodes at a reduced scale still >= side
      image = ImageOps.exif_transpose(image)
      if image.mode in ("P", "PA", "LA"):  # palette transparency is alpha, which is dropped
        image = image.convert("RGBA")
      image = ImageOps.fit(image.convert("RGB"), (side, side),
                           method=Image.Resampling.BICUBIC)
      return np.asarray(image, np.uint8)
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    return (str(e).splitlines() or [type(e).__name__])[0]


def _decoded(pool: concurrent.futures.Executor, files: list[user_files.UserFile], side: int
             ) -> Iterator[np.ndarray | str]:
  """`load_image` of each file, in order, decoded by `pool` a bounded chunk ahead."""
  chunk = 16 * _WORKERS
  for start in range(0, len(files), chunk):
    yield from pool.map(lambda f: load_image(f.path, side), files[start:start + chunk])


class ImageFolder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """The images of one folder (`FolderConfig`); never found by TFDS name, only through
  `folder_builder`."""

  VERSION = tfds.core.Version(user_files.VERSION)

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    features = {"image": tfds.features.Image(shape=(config.side, config.side, 3),
                                             encoding_format="png"),
                "file": tfds.features.Text()}
    classes = sorted({f.label for f in config.files} - {None})
    if classes:
      features["label"] = tfds.features.ClassLabel(names=classes)
    return tfds.core.DatasetInfo(
        builder=self, description=config.description,
        features=tfds.features.FeaturesDict(features),
        metadata=tfds.core.MetadataDict(root=config.root, side=config.side,
                                        labelled=bool(classes)))

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """Both splits from the config's files; `dl_manager` is unused (nothing is downloaded)."""
    del dl_manager
    return {split: self._generate_examples(split) for split in user_files.SPLITS}

  def _generate_examples(self, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The readable images of `split`, keyed by their relative path; for `train`, their pixel
    statistics go into the metadata once all are written."""
    config = self.builder_config
    files = [f for f in config.files if f.split == split]
    labels = self.info.features["label"] if "label" in self.info.features else None
    # Exact integer sums of the pixels and their squares, per channel.
    sums, squares, pixels, written = np.zeros(3, object), np.zeros(3, object), 0, 0
    with concurrent.futures.ThreadPoolExecutor(_WORKERS) as pool:
      for f, image in zip(files, _decoded(pool, files, config.side)):
        if isinstance(image, str):
          logging.warning("skipped %s: not a readable image (%s)", f.path, image)
          continue
        example = {"image": image, "file": f.relpath}
        if labels is not None:
          example["label"] = labels.str2int(f.label)
        if split == "train":
          flat = image.reshape(-1, 3).astype(np.int64)
          sums += flat.sum(axis=0).astype(object)
          squares += (flat * flat).sum(axis=0).astype(object)
          pixels += len(flat)
        written += 1
        yield f.relpath, example
    if not written:
      raise UserError(f"dataset 'folder:{config.root}': no readable image in the {split} split")
    if split == "train":
      mean = (sums / (255 * pixels)).astype(np.float64)
      variance = ((squares * pixels - sums * sums) / (255**2 * pixels**2)).astype(np.float64)
      std = np.sqrt(np.maximum(variance, 0.0))
      self.info.metadata.update(mean=mean.tolist(), std=std.tolist())
