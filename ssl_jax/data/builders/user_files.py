"""The user's own files as a TFDS dataset (`--config.dataset=folder:PATH`): which files are
read, the layouts that give splits and labels, the fixed train/test split, and preparing each
version of a folder once.

What the modality reads (images, texts) is its own builder's business (`image_folder`,
`text_folder`); this module holds what they share, so that both read a folder the same way:

  - Splits: when PATH holds both `train` and `test` (folders, or for texts files such as
    `train.jsonl`), they are the splits. Otherwise every class's examples are split by a fixed
    rule, the same on every machine and every run: in the order of the SHA-1 of each
    example's key (an image's path relative to PATH, a text's content), the first 20% (at
    least one of a class of two or more) are `test`, the rest `train`.
  - Names: a folder is prepared once into `data_dir/<builder>/<name>_<digest>/1.0.0`, where
    the digest hashes PATH's absolute path, the builder's own settings and the relative path,
    size and modification time of every file it reads: a folder whose files change is
    prepared again, under a new name, and an unchanged one is read from disk.
  - Hidden files and folders (a leading '.') and files of other extensions are ignored.
"""
from collections.abc import Callable, Iterable
import dataclasses
import hashlib
import os
import re

from absl import logging
from etils import epath
import tensorflow_datasets as tfds

from ssl_jax.errors import UserError

PREFIX = "folder:"
TEST_FRACTION = 0.2
VERSION = "1.0.0"
SPLITS = ("train", "test")


def folder_path(dataset: str) -> str | None:
  """The absolute path that a `folder:PATH` dataset name names; None for any other name."""
  if not isinstance(dataset, str) or not dataset.startswith(PREFIX):
    return None
  path = dataset[len(PREFIX):]
  if not path:
    raise UserError(f"dataset '{dataset}' names no path: use folder:PATH")
  return os.path.abspath(os.path.expanduser(path))


@dataclasses.dataclass(frozen=True)
class UserFile:
  """One file to read: its absolute `path`, its path relative to the dataset's root (with
  '/'), the split its layout puts it in (None: the fixed split decides) and its class folder
  (None: unlabelled)."""
  path: str
  relpath: str
  split: str | None
  label: str | None


def find_files(root: str, extensions: tuple[str, ...], what: str, class_folders: bool
               ) -> list[UserFile]:
  """The files of `root` with one of `extensions` (lower case, with the dot), sorted.

  `root` may be one such file. With `class_folders`, two or more subfolders holding such
  files are classes (`label`, every file below each); files directly beside them are skipped
  with a warning. One subfolder, or none, is an unlabelled folder: every file below it.
  A missing path, or no such file at all, is a UserError naming `root` and `what` it looks for.
  """
  if not os.path.exists(root):
    raise UserError(f"dataset 'folder:{root}': {root} does not exist")
  if os.path.isfile(root):
    if not root.lower().endswith(extensions):
      raise UserError(f"dataset 'folder:{root}': not a folder nor a file of {what} "
                      f"({', '.join(extensions)})")
    return [UserFile(root, os.path.basename(root), None, None)]
  found = []
  split_roots = _split_roots(root, extensions)
  for split, base in split_roots.items() if split_roots else [(None, root)]:
    found += _files_of(base, root, split, extensions, class_folders)
  if not found:
    raise UserError(f"dataset 'folder:{root}': no {what} ({', '.join(extensions)}) in {root}")
  if split_roots:
    _check_split_classes(root, found)
  return found


def _visible(names: Iterable[str]) -> list[str]:
  return sorted(name for name in names if not name.startswith("."))


def _walk(base: str, extensions: tuple[str, ...]) -> list[str]:
  """Absolute paths of the files below `base` with one of `extensions`, sorted."""
  paths = []
  for folder, subfolders, names in os.walk(base):
    subfolders[:] = _visible(subfolders)
    paths += [os.path.join(folder, name) for name in _visible(names)
              if name.lower().endswith(extensions)]
  return sorted(paths)


def _split_roots(root: str, extensions: tuple[str, ...]) -> dict[str, str]:
  """{"train": path, "test": path} when `root` holds both, as folders or as files of
  `extensions` named train.* and test.*; {} when it holds neither."""
  entries = {}
  for name in _visible(os.listdir(root)):
    path = os.path.join(root, name)
    stem = name if os.path.isdir(path) else (
        os.path.splitext(name)[0] if name.lower().endswith(extensions) else "")
    if stem in SPLITS:
      if stem in entries:
        raise UserError(f"dataset 'folder:{root}': both {entries[stem]} and {path} look like "
                        f"the {stem} split; keep one")
      entries[stem] = path
  if len(entries) == 1:
    [(given, path)] = entries.items()
    missing = SPLITS[1 - SPLITS.index(given)]
    raise UserError(f"dataset 'folder:{root}': {path} has no '{missing}' beside it: give both "
                    "train and test (they are the splits), or neither (a fixed 80/20 split)")
  return entries


def _files_of(base: str, root: str, split: str | None, extensions: tuple[str, ...],
              class_folders: bool) -> list[UserFile]:
  """The files below `base` (a file, or a folder with or without class subfolders)."""
  def found(path: str, label: str | None) -> UserFile:
    return UserFile(path, os.path.relpath(path, root).replace(os.sep, "/"), split, label)

  if os.path.isfile(base):
    return [found(base, None)]
  if class_folders:
    names = _visible(os.listdir(base))
    classes = {name: _walk(os.path.join(base, name), extensions) for name in names
               if os.path.isdir(os.path.join(base, name))}
    classes = {name: paths for name, paths in classes.items() if paths}
    if len(classes) >= 2:
      loose = [name for name in names if os.path.isfile(os.path.join(base, name))
               and name.lower().endswith(extensions)]
      if loose:
        logging.warning("%d files directly in %s are in no class folder beside %s: skipped",
                        len(loose), base, ", ".join(sorted(classes)))
      return [found(path, name) for name, paths in classes.items() for path in paths]
  return [found(path, None) for path in _walk(base, extensions)]


def _check_split_classes(root: str, found: list[UserFile]) -> None:
  """The train and test folders are both labelled or both not, with no test-only class."""
  labels = {split: {f.label for f in found if f.split == split} for split in SPLITS}
  for split in SPLITS:
    if not labels[split]:
      raise UserError(f"dataset 'folder:{root}': the {split} split holds no files")
  if (None in labels["train"]) != (None in labels["test"]):
    raise UserError(f"dataset 'folder:{root}': give train and test both class folders, or "
                    "neither")
  unknown = sorted(labels["test"] - labels["train"])
  if unknown:
    raise UserError(f"dataset 'folder:{root}': class folder(s) {', '.join(unknown)} of test "
                    "have none of that name in train")


def held_out(keys: list[str]) -> list[bool]:
  """Which of one class's examples are `test` under the fixed split: the first
  round(TEST_FRACTION * n) in the order of the SHA-1 of their keys (ties in the given order),
  at least one when the class has two or more examples."""
  count = len(keys)
  num_test = max(1, round(TEST_FRACTION * count)) if count >= 2 else 0
  order = sorted(range(count), key=lambda i: (hashlib.sha1(keys[i].encode()).hexdigest(), i))
  test = [False] * count
  for i in order[:num_test]:
    test[i] = True
  return test


def assign_splits(labels: list[str | int | None], keys: list[str],
                  given: list[str | None]) -> list[str]:
  """Each example's split: the one its layout gave it (`given`), or else the fixed split of
  its class (`labels`, None for all when unlabelled) by `keys`."""
  splits = list(given)
  by_class: dict = {}
  for i, (label, split) in enumerate(zip(labels, given)):
    if split is None:
      by_class.setdefault(label, []).append(i)
  for members in by_class.values():
    for i, test in zip(members, held_out([keys[i] for i in members])):
      splits[i] = "test" if test else "train"
  return splits


def check_both_splits(root: str, splits: Iterable[str], what: str) -> None:
  """A UserError when the train or the test split would hold no example."""
  counts = {split: 0 for split in SPLITS}
  for split in splits:
    counts[split] += 1
  for split, count in counts.items():
    if not count:
      raise UserError(
          f"dataset 'folder:{root}': the {split} split has no {what} ({counts['train']} "
          f"train, {counts['test']} test): a class needs two or more to hold 20% out, or give "
          "train and test folders")


def fingerprint(root: str, files: list[UserFile], *settings: object) -> str:
  """A digest of `root`, the builder's `settings` and every file's relative path, size and
  modification time: it changes when the folder's contents do."""
  digest = hashlib.sha1(f"{root}\n{settings!r}\n".encode())
  for f in files:
    stat = os.stat(f.path)
    digest.update(f"{f.relpath}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
  return digest.hexdigest()[:16]


def config_name(root: str, *parts: str) -> str:
  """A readable, unique TFDS config name: the folder's own name, then `parts` (the settings
  and the digest)."""
  base = os.path.splitext(os.path.basename(root.rstrip(os.sep)))[0] or "root"
  base = re.sub(r"[^a-z0-9]+", "_", base.lower()).strip("_")[:40] or "folder"
  return "_".join([base, *parts])


def prepared(builder_class: type[tfds.core.GeneratorBasedBuilder], name: str,
             make_config: Callable[[], tfds.core.BuilderConfig], data_dir: str | None
             ) -> tfds.core.DatasetBuilder:
  """The dataset `name` of `builder_class`, read from `data_dir` when prepared before; else
  `make_config()` (which reads the files, and raises a UserError for bad ones before anything
  is written) is prepared there first, offline."""
  data_dir = epath.Path(data_dir or tfds.core.constants.DATA_DIR).expanduser()
  path = data_dir / builder_class.name / name / VERSION
  if not (path / "dataset_info.json").exists():
    builder = builder_class(config=make_config(), data_dir=data_dir)
    try:
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
          try_download_gcs=False, compute_stats=tfds.download.ComputeStatsMode.SKIP))
    except FileExistsError:
      # Another process sharing this data_dir finished preparing first; TFDS writes to a
      # temporary folder, so its copy is complete.
      if not (path / "dataset_info.json").exists():
        raise
  return tfds.builder_from_directory(path)
