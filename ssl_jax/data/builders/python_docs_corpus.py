"""The text of the `python_docs` corpus, read from CPython's own documentation.

Standard library only, so that `python_docs.PythonDocs` can run it as a script in a pristine
interpreter (`python -I -S`: no site-packages, no environment): what an imported third-party
package patches (torch replaces `inspect.getfile`, Keras `Mapping.get`) cannot change the
corpus of the process that prepares the dataset. Run as a script it prints both corpora as JSON.
"""


from collections.abc import Iterable, Iterator
import contextlib
import hashlib
import importlib
import inspect
import io
import json
import pkgutil
import re
import sys
import types
from typing import NamedTuple
import warnings

import pydoc_data.topics

PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"

# Top-level standard-library packages and modules whose docstrings enter the corpus, with
# all their submodules. A fixed list rather than `sys.stdlib_module_names`, because
# importing some standard modules acts on the world: `antigravity` opens a browser, `this`
# prints, `idlelib`, `tkinter` and `turtle*` need a display, `__main__` submodules run a
# program; and the test packages (`test`, `*.tests`) are code, not documentation.
MODULES = (
    "abc", "argparse", "ast", "asyncio", "base64", "bdb", "binascii", "bisect", "bz2",
    "calendar", "cmath", "cmd", "code", "codecs", "codeop", "collections", "colorsys",
    "compileall", "concurrent", "configparser", "contextlib", "contextvars", "copy",
    "copyreg", "csv", "ctypes", "dataclasses", "datetime", "dbm", "decimal", "difflib",
    "dis", "doctest", "email", "enum", "filecmp", "fileinput", "fnmatch", "fractions",
    "ftplib", "functools", "gc", "getopt", "getpass", "gettext", "glob", "graphlib", "gzip",
    "hashlib", "heapq", "hmac", "html", "http", "imaplib", "importlib", "inspect", "io",
    "ipaddress", "itertools", "json", "keyword", "linecache", "locale", "logging", "lzma",
    "mailbox", "math", "mimetypes", "modulefinder", "multiprocessing", "netrc", "numbers",
    "operator", "optparse", "os", "pathlib", "pdb", "pickle", "pickletools", "pkgutil",
    "platform", "plistlib", "poplib", "pprint", "profile", "pstats", "py_compile",
    "pyclbr", "pydoc", "queue", "quopri", "random", "re", "reprlib", "rlcompleter", "runpy",
    "sched", "secrets", "selectors", "shelve", "shlex", "shutil", "signal", "site",
    "smtplib", "socket", "socketserver", "sqlite3", "ssl", "stat", "statistics", "string",
    "stringprep", "struct", "subprocess", "symtable", "sys", "sysconfig", "tabnanny",
    "tarfile", "tempfile", "textwrap", "threading", "time", "timeit", "token", "tokenize",
    "tomllib", "trace", "traceback", "tracemalloc", "types", "typing", "unicodedata",
    "unittest", "urllib", "uuid", "warnings", "wave", "weakref", "webbrowser", "wsgiref",
    "xml", "xmlrpc", "zipapp", "zipfile", "zipimport", "zlib", "zoneinfo",
)
_SKIPPED_PARTS = frozenset({"__main__", "test", "tests", "idle_test"})

# Classes of `labelled`: the top-level packages and modules that document about 100 or more
# distinct objects on Python 3.11 (95 to 315), less `distutils` and `lib2to3` (deprecated,
# gone in 3.12) and `encodings` (codec boilerplate). `json` (19 docstrings), `sqlite3` and
# `ctypes` have too few for a test split that measures anything. Alphabetical; the label is
# the index.
LABELLED_PACKAGES = (
    "ast", "asyncio", "collections", "decimal", "email", "http", "importlib", "inspect",
    "logging", "mailbox", "multiprocessing", "tarfile", "unittest", "urllib", "xml",
)

# A paragraph or docstring shorter than this many words is mostly a signature or a
# heading ("Return self.", "Built-in functions"), not language.
MIN_WORDS = 4
# One example in TEST_BUCKETS goes to `test`, by a hash (see `is_test`): a 20% test split.
TEST_BUCKETS = 5


class Paragraph(NamedTuple):
  """One line of `plain`: a paragraph and the document (topic or module) it comes from."""
  document: str
  text: str


class Docstring(NamedTuple):
  """One example of `labelled`: a docstring and the top-level package it documents."""
  package: str
  text: str


def is_test(key: str) -> bool:
  """Whether `key` falls in the test split: sha256(key) mod TEST_BUCKETS == 0.

  A hash, not a seeded shuffle, so an example's split never depends on which other examples
  exist (a new Python version moves only the texts that changed).
  """
  digest = hashlib.sha256(key.encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") % TEST_BUCKETS == 0


def _one_line(text: str) -> str:
  """Collapses every run of whitespace (newlines included) to one space."""
  return " ".join(text.split())


def paragraphs(text: str) -> list[str]:
  """Splits a help text or docstring into paragraphs, each on one line.

  The rule: a paragraph is a run of lines ending at a blank line; its whitespace is
  collapsed to single spaces; paragraphs of fewer than MIN_WORDS words (headings,
  underlines, bare signatures) and code examples (a first line starting with `>>>`) are
  dropped, as they are not English prose.
  """
  kept = []
  for block in re.split(r"\n\s*\n", text):
    if block.lstrip().startswith(">>>"):
      continue
    line = _one_line(block)
    if len(line.split()) >= MIN_WORDS:
      kept.append(line)
  return kept


@contextlib.contextmanager
def _quiet():
  """Silences what importing a module may print or warn (deprecations, missing backends)."""
  with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
      contextlib.redirect_stderr(io.StringIO()):
    warnings.simplefilter("ignore")
    yield


def _import(name: str) -> types.ModuleType | None:
  """The module `name`, or None when it cannot be imported on this interpreter (a missing
  optional C extension such as `_curses`, `_dbm` or `_ssl`)."""
  try:
    with _quiet():
      return importlib.import_module(name)
  except Exception:  # pylint: disable=broad-except  (any import failure means "not here")
    return None


def stdlib_modules(top_level: Iterable[str]) -> list[types.ModuleType]:
  """The importable modules of the given top-level names and all their submodules, sorted
  by name, without `__main__` and test submodules."""
  modules = {}
  for top in sorted(top_level):
    module = _import(top)
    if module is None:
      continue
    modules[top] = module
    for info in pkgutil.walk_packages(getattr(module, "__path__", []), prefix=f"{top}.",
                                      onerror=lambda name: None):
      if _SKIPPED_PARTS.intersection(info.name.split(".")):
        continue
      submodule = _import(info.name)
      if submodule is not None:
        modules[info.name] = submodule
  return [modules[name] for name in sorted(modules)]


def _written_docstring(obj: object) -> str | None:
  """The docstring as written in the source: for a Python function the one its code object
  holds (CPython 3.11 keeps it, or None, as the first constant), since imported packages may
  overwrite `__doc__` in place (TensorFlow's Keras rewrites `Mapping.get.__doc__`); for
  classes and C functions, `__doc__`."""
  code = getattr(obj, "__code__", None)
  if code is not None:
    first = code.co_consts[0] if code.co_consts else None
    return first if isinstance(first, str) else None
  doc = getattr(obj, "__doc__", None)
  return doc if isinstance(doc, str) else None


def module_docstrings(module: types.ModuleType) -> list[tuple[str, str]]:
  """(qualified name, cleaned docstring) of the module and of the classes, functions and
  methods it defines (not those it imports), sorted by name."""
  found = {}

  def add(name: str, obj: object) -> None:
    doc = _written_docstring(getattr(obj, "fget", obj))
    if doc:
      found[name] = inspect.cleandoc(doc)

  add(module.__name__, module)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # reading deprecated aliases (typing.io) warns
    for name, obj in sorted(vars(module).items()):
      if not (inspect.isclass(obj) or inspect.isroutine(obj)):
        continue
      if getattr(obj, "__module__", None) != module.__name__:
        continue
      add(f"{module.__name__}.{name}", obj)
      if inspect.isclass(obj):
        for attr, member in sorted(vars(obj).items()):
          member = getattr(member, "__func__", member)  # classmethod / staticmethod
          if not (inspect.isroutine(member) or isinstance(member, property)):
            continue
          # A method that another package patched onto a stdlib class (Keras replaces
          # `Mapping.get`) is not CPython's documentation; C methods carry no __module__.
          function = getattr(member, "fget", member)
          if getattr(function, "__module__", None) in (None, module.__name__):
            add(f"{module.__name__}.{name}.{attr}", member)
  return sorted(found.items())


def plain_corpus() -> list[Paragraph]:
  """The paragraphs of `plain`: the pydoc topics (sorted by topic), then the docstrings of
  MODULES (sorted by module and object), each paragraph once (its first occurrence)."""
  documents = [(f"topic:{name}", text)
               for name, text in sorted(pydoc_data.topics.topics.items())]
  for module in stdlib_modules(MODULES):
    documents.extend(module_docstrings(module))
  seen, corpus = set(), []
  for document, text in documents:
    for paragraph in paragraphs(text):
      if paragraph not in seen:
        seen.add(paragraph)
        corpus.append(Paragraph(document, paragraph))
  return corpus


def labelled_corpus() -> list[Docstring]:
  """The examples of `labelled`: the docstrings of LABELLED_PACKAGES, whitespace collapsed,
  at least MIN_WORDS words. A text that documents objects of two packages (an inherited
  "Return repr(self)." boilerplate) is dropped, since its label is ambiguous; one that
  recurs within a package is kept once."""
  labels: dict[str, set[str]] = {}
  for module in stdlib_modules(LABELLED_PACKAGES):
    package = module.__name__.split(".")[0]
    for _, doc in module_docstrings(module):
      text = _one_line(doc)
      if len(text.split()) >= MIN_WORDS:
        labels.setdefault(text, set()).add(package)
  return sorted(Docstring(next(iter(packages)), text)
                for text, packages in labels.items() if len(packages) == 1)


def main() -> None:
  """Prints {"python_version", "plain": [{document, text}...], "labelled": [{package, text}...]}."""
  json.dump({"python_version": PYTHON_VERSION,
             "plain": [p._asdict() for p in plain_corpus()],
             "labelled": [d._asdict() for d in labelled_corpus()]}, sys.stdout)


if __name__ == "__main__":
  main()
