"""TFDS builder for recorded multichannel sequences from the UCR/UEA archive, offline.

Importing this module registers the dataset under the TFDS name `sequences`, the embedded
sequence dataset for predictive coding (CPC): the sktime wheel (`sktime==1.2.0`, BSD-3-Clause)
ships a few archive problems as `.ts` text files under `sktime/datasets/data/`, so preparing
them needs no network. The files are located through the import system without running
sktime's (heavy) package code, and parsed here (`parse_ts`). Two configs:

  sequences/japanese_vowels  12 LPC cepstral coefficients of 9 male speakers saying the
                             Japanese vowel pair /ae/ (Kudo, Toyama & Shimbo 1999; UCI).
                             Lengths 7-29 frames; label = speaker (9 classes).
                             train 270 (30 per speaker), test 370 (24-88 per speaker).
  sequences/basic_motions    6 channels (3-D accelerometer + 3-D gyroscope of a smart watch)
                             sampled at 10 Hz for 10 s; label = activity (standing, running,
                             walking, badminton). Length 100; train 40, test 40 (10 each).

Each example has `signal` float32 [T, C] (T = the config's longest series: 29 / 100),
`length` int32 (the recorded frames; frames from `length` on are zeros, padding at the end),
and `label`. The train / test splits are the archive's own TRAIN / TEST files.
Licence: the UEA & UCR archive's data are free for research use; the sktime copies are
distributed under sktime's BSD-3-Clause licence.
"""
from collections.abc import Iterator
import dataclasses
import importlib.util
import os

import numpy as np
import tensorflow_datasets as tfds

_CITATION = """\
@article{bagnall2018uea,
  title = {The {UEA} multivariate time series classification archive, 2018},
  author = {Bagnall, Anthony and Dau, Hoang Anh and Lines, Jason and Flynn, Michael and
            Large, James and Bostrom, Aaron and Southam, Paul and Keogh, Eamonn},
  journal = {arXiv preprint arXiv:1811.00075},
  year = {2018},
}
"""


@dataclasses.dataclass(frozen=True)
class TsProblem:
  """One parsed `.ts` file: the class names of its header and its labelled series.

  `series[i]` is float32 [T_i, C] (time first); `labels[i]` indexes `class_names`.
  """
  class_names: tuple[str, ...]
  series: list[np.ndarray]
  labels: list[int]


@dataclasses.dataclass
class SequencesConfig(tfds.core.BuilderConfig):
  """A problem of the archive: its folder in sktime's data and its padded length."""
  problem: str = ""
  max_length: int = 0
  num_channels: int = 0


def _parse_row(row: str, class_names: tuple[str, ...]) -> tuple[np.ndarray, int]:
  """'v,v,...:v,v,...:label' (one ':'-separated field per channel) -> ([T, C], label)."""
  *channels, label = row.split(":")
  values = [np.array([float(v) for v in channel.split(",")], np.float32)
            for channel in channels]
  if len({len(v) for v in values}) != 1:
    raise ValueError(f"channels of unequal length in row {row[:60]!r}...")
  return np.stack(values, axis=1), class_names.index(label.strip())


def parse_ts(text: str) -> TsProblem:
  """Parses the sktime/UEA `.ts` format: `#` comments, `@` header lines (`@classLabel true
  a b c` names the classes), then after `@data` one series per line."""
  class_names, series, labels, in_data = None, [], [], False
  for line in text.splitlines():
    line = line.strip()
    if not line or line.startswith("#"):
      continue
    if not in_data:
      words = line.split()
      if words[0].lower() == "@classlabel" and words[1].lower() == "true":
        class_names = tuple(words[2:])
      in_data = words[0].lower() == "@data"
      continue
    if class_names is None:
      raise ValueError("a .ts file without '@classLabel true ...' before '@data'")
    signal, label = _parse_row(line, class_names)
    series.append(signal)
    labels.append(label)
  return TsProblem(class_names or (), series, labels)


def sktime_data_dir() -> str:
  """sktime's bundled `datasets/data` folder, found without importing sktime."""
  spec = importlib.util.find_spec("sktime")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("the sequences dataset needs the sktime wheel: pip install "
                            "sktime==1.2.0")
  return os.path.join(spec.submodule_search_locations[0], "datasets", "data")


def read_problem(problem: str, split: str) -> TsProblem:
  """The archive's `<problem>_<TRAIN|TEST>.ts` from sktime's data folder, parsed."""
  path = os.path.join(sktime_data_dir(), problem, f"{problem}_{split.upper()}.ts")
  with open(path, encoding="utf-8") as f:
    return parse_ts(f.read())


def pad_series(signal: np.ndarray, max_length: int) -> np.ndarray:
  """[T, C] -> [max_length, C]: zeros after the recorded frames (longer series are cut)."""
  out = np.zeros((max_length, signal.shape[1]), np.float32)
  kept = signal[:max_length]
  out[:len(kept)] = kept
  return out


class Sequences(tfds.core.GeneratorBasedBuilder):
  """Multichannel sequences of the UEA archive bundled with sktime (see the module docstring).

  Sizes (sktime 1.2.0): japanese_vowels train 270 / test 370, [29, 12], 9 speakers;
  basic_motions train 40 / test 40, [100, 6], 4 activities.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: JapaneseVowels and BasicMotions from sktime."}
  BUILDER_CONFIGS = [
      SequencesConfig(name="japanese_vowels", problem="JapaneseVowels", max_length=29,
                      num_channels=12,
                      description="12 LPC cepstra of 9 speakers saying /ae/, 7-29 frames."),
      SequencesConfig(name="basic_motions", problem="BasicMotions", max_length=100,
                      num_channels=6,
                      description="Watch accelerometer + gyroscope, 4 activities, 100 steps."),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    names = read_problem(config.problem, "train").class_names
    return self.dataset_info_from_configs(
        description=("Recorded multichannel sequences of the UEA archive as bundled with "
                     "sktime, zero-padded at the end to a fixed length."),
        features=tfds.features.FeaturesDict({
            "signal": tfds.features.Tensor(shape=(config.max_length, config.num_channels),
                                           dtype=np.float32),
            "length": tfds.features.Scalar(dtype=np.int32),
            "label": tfds.features.ClassLabel(names=list(names)),
        }),
        supervised_keys=("signal", "label"),
        homepage="https://www.timeseriesclassification.com/",
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """Reads the bundled files; `dl_manager` is unused because nothing is downloaded."""
    del dl_manager
    return {split: self._generate_examples(read_problem(self.builder_config.problem, split))
            for split in ("train", "test")}

  def _generate_examples(self, problem: TsProblem
                         ) -> Iterator[tuple[int, dict[str, np.ndarray | int]]]:
    """Yields examples keyed by their row in the file, stable across runs."""
    config = self.builder_config
    for index, (signal, label) in enumerate(zip(problem.series, problem.labels)):
      if signal.shape[1] != config.num_channels:
        raise ValueError(f"{config.problem} row {index} has {signal.shape[1]} channels, "
                         f"expected {config.num_channels}")
      yield index, {"signal": pad_series(signal, config.max_length),
                    "length": min(len(signal), config.max_length), "label": label}
