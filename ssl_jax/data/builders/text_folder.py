"""The user's own texts as a TFDS dataset: `--config.dataset=folder:PATH` for the text
modality, PATH a folder of `.txt` and `.jsonl` files (read recursively) or one such file.

  - `.txt`: one example per paragraph (text between blank lines, its white space collapsed
    to single spaces), as the embedded `python_docs` corpus is cut. Language-model rows are
    short (`config.data.max_length` tokens, 64 in the offline recipe) and a long text is read
    through one window per epoch, so a paragraph per example uses all of a document every
    epoch where a file per example would read one window of it.
  - `.jsonl`: one example per line, a JSON object with a string `text` and optionally a
    `label` (strings or integers; a ClassLabel of their sorted distinct values). Either every
    example has a label or none has: a `.txt` paragraph has none.

Features: `text`, `file` (the path relative to PATH it came from) and, when labelled,
`label`. Splits and names follow `user_files`; the fixed split keys each example by its text,
so identical texts fall in one split. A file that is not UTF-8 is one warning line naming it,
and is left out; a JSONL line that is not an object with a string `text` is a UserError
naming the file and line.
"""
from collections.abc import Iterator
import dataclasses
import json
import re
from typing import Any

from absl import logging
import tensorflow_datasets as tfds

from ssl_jax.data.builders import user_files
from ssl_jax.errors import UserError

EXTENSIONS = (".txt", ".jsonl")
_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")


@dataclasses.dataclass(frozen=True)
class TextExample:
  """One text, where it came from (`file`, and its 1-based `line` in a JSONL file), the
  split its layout gives it (None: the fixed split decides) and its label (None: none)."""
  text: str
  file: str
  line: int
  split: str | None
  label: str | int | None


@dataclasses.dataclass(eq=False)
class FolderConfig(tfds.core.BuilderConfig):
  """One version of one folder of texts: its root, its examples with their splits and the
  class names (() when unlabelled)."""
  root: str = ""
  examples: tuple = dataclasses.field(default=(), repr=False)
  class_names: tuple = dataclasses.field(default=(), repr=False)


def folder_builder(root: str, config: Any) -> tfds.core.DatasetBuilder:
  """The prepared dataset of the texts in `root` (see the module); `config` gives data_dir."""
  files = user_files.find_files(root, EXTENSIONS, "text files", class_folders=False)
  digest = user_files.fingerprint(root, files, "text")
  name = user_files.config_name(root, digest)

  def make_config() -> FolderConfig:
    examples = [example for f in files for example in read_file(f)]
    if not examples:
      raise UserError(f"dataset 'folder:{root}': its text files hold no text")
    class_names = _class_names(examples)
    splits = user_files.assign_splits([e.label for e in examples], [e.text for e in examples],
                                      [e.split for e in examples])
    user_files.check_both_splits(root, splits, "texts")
    return FolderConfig(
        name=name, version=user_files.VERSION, root=root, class_names=class_names,
        examples=tuple(dataclasses.replace(e, split=s) for e, s in zip(examples, splits)),
        description=f"The texts of {root}.")
  return user_files.prepared(TextFolder, name, make_config, config.data.get("data_dir"))


def paragraphs(text: str) -> list[str]:
  """The non-empty paragraphs of `text` (split at blank lines), white space collapsed."""
  return [" ".join(p.split()) for p in _BLANK_LINE.split(text) if p.strip()]


def read_file(f: user_files.UserFile) -> list[TextExample]:
  """The examples of one `.txt` or `.jsonl` file; [] with a warning when it is not UTF-8."""
  try:
    with open(f.path, encoding="utf-8") as stream:
      content = stream.read()
  except (OSError, UnicodeDecodeError) as e:
    logging.warning("skipped %s: not a readable UTF-8 text file (%s)", f.path,
                    (str(e).splitlines() or [type(e).__name__])[0])
    return []
  if f.path.lower().endswith(".txt"):
    return [TextExample(p, f.relpath, 0, f.split, None) for p in paragraphs(content)]
  examples = []
  for number, line in enumerate(content.splitlines(), 1):
    example = _jsonl_example(f, number, line) if line.strip() else None
    if example is not None and example.text.strip():  # a blank text has nothing to learn
      examples.append(example)
  return examples


def _jsonl_example(f: user_files.UserFile, number: int, line: str) -> TextExample:
  where = f"{f.path}:{number}"
  try:
    row = json.loads(line)
  except json.JSONDecodeError as e:
    raise UserError(f"{where}: not a JSON line ({e.msg})") from None
  if not isinstance(row, dict):
    raise UserError(f"{where}: a JSONL row must be an object with a 'text' field")
  if not isinstance(row.get("text"), str):
    raise UserError(f"{where}: the row has no 'text' string (its fields: "
                    f"{', '.join(sorted(row)) or 'none'})")
  label = row.get("label")
  if label is not None and (isinstance(label, bool) or not isinstance(label, (str, int))):
    raise UserError(f"{where}: 'label' must be a string or an integer, got {label!r}")
  return TextExample(row["text"], f.relpath, number, f.split, label)


def _class_names(examples: list[TextExample]) -> tuple[str, ...]:
  """The sorted distinct labels as names, () when no example has one; a UserError when only
  some have one, or when strings and integers are mixed."""
  labelled = [e for e in examples if e.label is not None]
  if not labelled:
    return ()
  if len(labelled) < len(examples):
    bare = next(e for e in examples if e.label is None)
    raise UserError(f"{bare.file}{f':{bare.line}' if bare.line else ''} has no label while "
                    f"{labelled[0].file}:{labelled[0].line} has one: label every example or "
                    "none")
  kinds = {type(e.label) for e in labelled}
  if len(kinds) > 1:
    raise UserError(f"labels mix strings and integers ({labelled[0].file}): use one kind")
  return tuple(str(label) for label in sorted({e.label for e in labelled}))


class TextFolder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """The texts of one folder (`FolderConfig`); never found by TFDS name, only through
  `folder_builder`."""

  VERSION = tfds.core.Version(user_files.VERSION)

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    features = {"text": tfds.features.Text(), "file": tfds.features.Text()}
    if config.class_names:
      features["label"] = tfds.features.ClassLabel(names=list(config.class_names))
    return tfds.core.DatasetInfo(
        builder=self, description=config.description,
        features=tfds.features.FeaturesDict(features),
        metadata=tfds.core.MetadataDict(root=config.root, labelled=bool(config.class_names)))

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """Both splits from the config's examples; `dl_manager` is unused."""
    del dl_manager
    return {split: self._generate_examples(split) for split in user_files.SPLITS}

  def _generate_examples(self, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The examples of `split`, keyed by their index among the folder's examples."""
    names = {name: i for i, name in enumerate(self.builder_config.class_names)}
    for index, e in enumerate(self.builder_config.examples):
      if e.split == split:
        example = {"text": e.text, "file": e.file}
        if names:
          example["label"] = names[str(e.label)]
        yield str(index), example
