"""TFDS builder for an English corpus taken from CPython's own documentation.

Importing this module registers the dataset under the TFDS name `python_docs`, the
embedded text dataset: every sentence in it ships with the Python interpreter (the
`pydoc_data.topics` help texts and the docstrings of standard-library modules), so
preparing it needs no network and no extra package. Two configs:

  python_docs/plain     unlabelled paragraphs for language-model pretraining (BERT MLM,
                        GPT causal LM); feature `text`, plus `document` so sentence-pair
                        objectives can pair consecutive paragraphs of one document.
  python_docs/labelled  docstrings labelled by the top-level package they document, a
                        small text-classification task for probing a representation.

The texts are read by `python_docs_corpus` in a fresh interpreter without site-packages, so
the corpus is a pure function of the Python version (recorded in the description), whatever
the preparing process has imported: every list is sorted and every choice is a hash of the
text or of a name, never of import order or a random seed.
"""
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import tensorflow_datasets as tfds

from ssl_jax.data.builders.python_docs_corpus import (  # pylint: disable=unused-import
    LABELLED_PACKAGES, MIN_WORDS, MODULES, PYTHON_VERSION, Docstring, Paragraph, is_test,
    labelled_corpus, paragraphs, plain_corpus)


def pristine_corpora() -> dict:
  """Both corpora as `python_docs_corpus` prints them, read by `python -I -S` (isolated, no
  site-packages) so that no imported package's patches reach the text."""
  script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "python_docs_corpus.py")
  result = subprocess.run([sys.executable, "-I", "-S", script], capture_output=True,
                          text=True, check=False)
  if result.returncode:
    raise RuntimeError(f"reading the python_docs corpus failed: {result.stderr.strip()}")
  return json.loads(result.stdout)


class PythonDocs(tfds.core.GeneratorBasedBuilder):
  """English text from CPython's documentation: pydoc help topics and stdlib docstrings.

  Sources (all inside the interpreter, Python Software Foundation License):
    - `pydoc_data.topics.topics`: the 79 help topics `help("FOR")` shows, plain-text
      renderings of the language reference (about 465 KB on Python 3.11).
    - the docstrings of the modules in MODULES and their submodules, and of the classes,
      functions, methods and properties they define.

  `plain` (features `text`, `document`): every source text is cut into paragraphs by
  `paragraphs` (blank-line separated, whitespace collapsed to one line, at least 4 words,
  no `>>>` examples); a paragraph seen before is dropped, so no text occurs twice. The
  split is by document: `test` holds the documents (a topic, or a module/class/function
  docstring) whose name hashes to bucket 0 of 5, so consecutive paragraphs stay together
  for sentence-pair objectives. On Python 3.11.7: train 8,752 and test 2,451 paragraphs,
  1,094,779 and 308,762 characters.

  `labelled` (features `text`, `label`): the docstrings of the 15 LABELLED_PACKAGES
  (ast, asyncio, ..., xml) on one line, at least 4 words, labelled by their top-level package;
  texts shared by two packages are dropped, duplicates kept once. The split is by a hash
  of the text (bucket 0 of 5 is `test`), so every class has test examples and identical
  texts cannot be in both splits. On Python 3.11.7: train 1,960 and test 517 docstrings
  (460,188 characters in all); classes have 95 (inspect) to 315 (asyncio) examples, and
  17 (inspect) to 65 (email) of them in `test`.

  The corpus depends on the Python version (docstrings change between releases); the
  version that built it is in the description. It is read from the live modules of the
  preparing process, so what imported third-party packages change is undone: a method
  patched onto a standard class is left out (its `__module__` is not the standard
  module's), and a Python function's docstring is read from its code object, which a
  rewritten `__doc__` does not change.
  """

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release: pydoc topics + stdlib docstrings; plain and labelled.",
      "1.1.0": "Read in an isolated interpreter without site-packages: 3 more paragraphs that "
               "packages imported by the preparing process had changed.",
  }
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(
          name="plain", description="Unlabelled paragraphs for language-model pretraining."),
      tfds.core.BuilderConfig(
          name="labelled",
          description="Docstrings labelled by the top-level package they document."),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    if self.builder_config.name == "plain":
      features = {"text": tfds.features.Text(), "document": tfds.features.Text()}
      supervised_keys = None
    else:
      features = {"text": tfds.features.Text(),
                  "label": tfds.features.ClassLabel(names=list(LABELLED_PACKAGES))}
      supervised_keys = ("text", "label")
    return self.dataset_info_from_configs(
        description=(
            "English text from CPython's documentation (pydoc help topics and standard-"
            f"library docstrings), built offline with Python {PYTHON_VERSION}."),
        features=tfds.features.FeaturesDict(features),
        supervised_keys=supervised_keys,
        homepage="https://docs.python.org/3/",
        metadata=tfds.core.MetadataDict(python_version=PYTHON_VERSION),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """Reads the texts from the interpreter; `dl_manager` is unused (nothing is downloaded)."""
    del dl_manager
    corpora = pristine_corpora()
    if self.builder_config.name == "plain":
      examples = [({"text": p["text"], "document": p["document"]}, is_test(p["document"]))
                  for p in corpora["plain"]]
    else:
      examples = [({"text": d["text"], "label": d["package"]}, is_test(d["text"]))
                  for d in corpora["labelled"]]
    return {split: self._generate_examples(
        [(i, e) for i, (e, test) in enumerate(examples) if test == (split == "test")])
            for split in ("train", "test")}

  def _generate_examples(
      self, examples: list[tuple[int, dict[str, str]]]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yields examples keyed by their index in the sorted corpus, stable across runs."""
    yield from examples
