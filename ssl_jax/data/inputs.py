"""A run's input pipeline, images, text, sequences, videos or image–caption pairs, behind one
surface for the trainer and evaluation.

`config.data.modality` picks the pipeline: "image" (the default; `ssl_jax.data.pipeline`),
"text" (`ssl_jax.data.text_pipeline`, whose batches need the run's tokenizer, kept in the
workdir), "sequence" (`ssl_jax.data.sequence_pipeline`: sensor channels, audio), "video"
(`ssl_jax.data.video_pipeline`: clips of frames) or "image_text"
(`ssl_jax.data.image_text_pipeline`: images with captions, which also need the tokenizer).
Neither `train.py` nor `evaluate.py` branches on the modality: they ask `Inputs` for the
dataset's sizes, the training stream and evaluation batches.
"""
from collections.abc import Iterator
import importlib
from typing import Any

import numpy as np

from ssl_jax.errors import UserError

# The pipeline module of each modality, in `ssl_jax.data`; each has dataset_info,
# train_batches and eval_batches (the `_TOKENIZED` ones also take the run's tokenizer).
_PIPELINES = {"image": "pipeline", "text": "text_pipeline", "sequence": "sequence_pipeline",
              "video": "video_pipeline", "image_text": "image_text_pipeline"}
MODALITIES = tuple(_PIPELINES)
_TOKENIZED = ("text", "image_text")  # modalities whose pipelines take the run's tokenizer


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
    self._pipeline = importlib.import_module(f"ssl_jax.data.{_PIPELINES[self.modality]}")

  def info(self):
    """The pipeline's `DatasetInfo`, `TextDatasetInfo`, `SequenceDatasetInfo` or
    `VideoDatasetInfo`: example counts, classes, `input_shape`."""
    return self._pipeline.dataset_info(self.config)

  @property
  def tokenizer(self):
    """The run's tokenizer (text and captions), loaded or learned on first use."""
    if self._tokenizer is None:
      if self._workdir is None:
        raise UserError("text inputs need the run's workdir, where its tokenizer is kept")
      self._tokenizer = self._pipeline.run_tokenizer(self.config, self._workdir,
                                                     self._create_tokenizer)
    return self._tokenizer

  def _leading_arguments(self) -> tuple:
    """The config, and for text the tokenizer: what every pipeline function takes first."""
    return (self.config, self.tokenizer) if self.modality in _TOKENIZED else (self.config,)

  def train_batches(self, *, start_step: int, process_index: int, process_count: int
                    ) -> Iterator[dict[str, np.ndarray]]:
    """This process's endless training stream from `start_step` (exactly resumable)."""
    return self._pipeline.train_batches(*self._leading_arguments(), start_step=start_step,
                                        process_index=process_index,
                                        process_count=process_count)

  def eval_batches(self, split: str, *, batch_size: int, process_index: int = 0,
                   process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """This process's share of `split`, once, in order, with a `mask` on padding rows."""
    return self._pipeline.eval_batches(*self._leading_arguments(), split,
                                       batch_size=batch_size, process_index=process_index,
                                       process_count=process_count)
