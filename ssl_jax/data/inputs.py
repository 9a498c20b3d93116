"""A run's input data behind one surface for the trainer and evaluation: the dataset's sizes,
its training stream and its evaluation batches.

`Inputs` asks the run's modality (`ssl_jax.modalities`, found by `config.data.modality`) for
each of them, so neither the trainer nor the evaluation names a modality or a pipeline. This
module needs no TensorFlow; the modality imports its pipeline when data is first read.
"""
from collections.abc import Iterator
import dataclasses
from typing import Any

import numpy as np

from ssl_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the trainer needs to size a run and a model for a dataset, in every modality.

  Attributes:
    num_train_examples: examples in `config.data.train_split` (all processes).
    num_test_examples: examples in `config.data.test_split` (0 when it is None).
    num_classes: classes of the label feature, None when there is no label.
    input_shape: the shape of one example's model input as the training stream yields it:
      (H, W, C) for an image view, (L,) for a token row, (T, C) for a signal window,
      (T, H, W, C) for a clip.
    class_names: the label feature's class names, when it has them (zero-shot prompts).
  """
  num_train_examples: int
  num_test_examples: int
  num_classes: int | None
  input_shape: tuple[int, ...]
  class_names: tuple[str, ...] | None = None


class Inputs:
  """The configured dataset's sizes, training stream and evaluation batches.

  `workdir` is where a run keeps what its pipeline learns from the training split (a text
  run's tokenizer); `create_tokenizer` lets training learn it when it is missing (evaluation
  and inference only read it).
  """

  def __init__(self, config: Any, workdir: str | None = None, create_tokenizer: bool = False):
    from ssl_jax import modalities  # pylint: disable=g-import-not-at-top  (it imports DatasetInfo)
    self.config = config
    self.modality = modalities.find(config)
    self._workdir = workdir
    self._create_tokenizer = create_tokenizer
    self._tokenizer = None

  def info(self) -> DatasetInfo:
    """Example counts, classes, `input_shape` and class names of the configured dataset."""
    return self.modality.dataset_info(self.config)

  @property
  def tokenizer(self):
    """The run's tokenizer (text and captions), loaded or learned on first use."""
    if self._tokenizer is None:
      if self._workdir is None:
        raise UserError("text inputs need the run's workdir, where its tokenizer is kept")
      self._tokenizer = self.modality.load_tokenizer(self.config, self._workdir,
                                                     self._create_tokenizer)
    return self._tokenizer

  def train_batches(self, *, start_step: int, process_index: int, process_count: int
                    ) -> Iterator[dict[str, np.ndarray]]:
    """This process's endless training stream from `start_step` (exactly resumable)."""
    return self.modality.train_batches(self, start_step=start_step,
                                       process_index=process_index,
                                       process_count=process_count)

  def eval_batches(self, split: str, *, batch_size: int, process_index: int = 0,
                   process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """This process's share of `split`, once, in order, with a `mask` on padding rows."""
    return self.modality.eval_batches(self, split, batch_size=batch_size,
                                      process_index=process_index,
                                      process_count=process_count)
