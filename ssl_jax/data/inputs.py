"""A run's input pipeline, images, text or sequences, behind one surface for the trainer and
evaluation.

`config.data.modality` picks the pipeline: "image" (the default; `ssl_jax.data.pipeline`),
"text" (`ssl_jax.data.text_pipeline`, whose batches need the run's tokenizer, kept in the
workdir), "sequence" (`ssl_jax.data.sequence_pipeline`: sensor channels, audio) or "video"
(`ssl_jax.data.video_pipeline`: clips of frames). Neither
`train.py` nor `evaluate.py` branches on the modality: they ask `Inputs` for the dataset's
sizes, the training stream and evaluation batches.
"""
from collections.abc import Iterator
from typing import Any

import numpy as np

from ssl_jax.data import pipeline
from ssl_jax.errors import UserError

MODALITIES = ("image", "text", "sequence", "video")


class Inputs:
  """The configured dataset's sizes, training stream and evaluation batches.

  `workdir` is where a text run keeps its tokenizer; `create_tokenizer` lets training learn it
  when it is missing (evaluation and inference only read it).
  """

  def __init__(self, config: Any, workdir: str | None = None, create_tokenizer: bool = False):
    self.config = config
    self.modality = config.data.get("modality", "image")
    if self.modality not in MODALITIES:
      raise UserError(f"config.data.modality must be one of {MODALITIES}, got "
                      f"{self.modality!r}")
    self._workdir = workdir
    self._create_tokenizer = create_tokenizer
    self._tokenizer = None
    if self.modality == "text":
      from ssl_jax.data import text_pipeline  # pylint: disable=g-import-not-at-top
      self._text = text_pipeline
    self._pipeline = pipeline
    if self.modality == "sequence":
      from ssl_jax.data import sequence_pipeline  # pylint: disable=g-import-not-at-top
      self._pipeline = sequence_pipeline
    if self.modality == "video":
      from ssl_jax.data import video_pipeline  # pylint: disable=g-import-not-at-top
      self._pipeline = video_pipeline

  def info(self):
    """The pipeline's `DatasetInfo`, `TextDatasetInfo`, `SequenceDatasetInfo` or
    `VideoDatasetInfo`: example counts, classes, `input_shape`."""
    if self.modality == "text":
      return self._text.dataset_info(self.config)
    return self._pipeline.dataset_info(self.config)

  @property
  def tokenizer(self):
    """The run's tokenizer (text only), loaded or learned on first use."""
    if self._tokenizer is None:
      if self._workdir is None:
        raise UserError("text inputs need the run's workdir, where its tokenizer is kept")
      self._tokenizer = self._text.run_tokenizer(self.config, self._workdir,
                                                 self._create_tokenizer)
    return self._tokenizer

  def train_batches(self, *, start_step: int, process_index: int, process_count: int
                    ) -> Iterator[dict[str, np.ndarray]]:
    """This process's endless training stream from `start_step` (exactly resumable)."""
    if self.modality == "text":
      return self._text.train_batches(self.config, self.tokenizer, start_step=start_step,
                                      process_index=process_index,
                                      process_count=process_count)
    return self._pipeline.train_batches(self.config, start_step=start_step,
                                        process_index=process_index,
                                        process_count=process_count)

  def eval_batches(self, split: str, *, batch_size: int, process_index: int = 0,
                   process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """This process's share of `split`, once, in order, with a `mask` on padding rows."""
    if self.modality == "text":
      return self._text.eval_batches(self.config, self.tokenizer, split, batch_size=batch_size,
                                     process_index=process_index, process_count=process_count)
    return self._pipeline.eval_batches(self.config, split, batch_size=batch_size,
                                       process_index=process_index,
                                       process_count=process_count)
