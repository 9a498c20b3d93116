"""Modalities: everything the trainer and evaluation know about a kind of input, found by name.

`config.data.modality` names a module `ssl_jax/modalities/<name>.py` (or, with a dot, a module
of the user's own) whose `MODALITY` is an instance of a `Modality` subclass. The trainer, the
evaluators, feature extraction and the benchmark ask it, and never branch on a modality's name
or guess from a batch's keys what it holds:

  host data, by default from the functions of the same names in the modality's `pipeline`
  module (imported lazily, so this package and the jitted step stay importable without
  TensorFlow; a pipeline with `uses_tokenizer` takes the run's tokenizer after the config):
    dataset_info(config) -> DatasetInfo
    train_batches(inputs, start_step=, process_index=, process_count=) -> iterator of batches
    eval_batches(inputs, split, batch_size=, process_index=, process_count=) -> batches with
        a boolean "mask" (False on the rows that pad the last batch) and "label" when labelled
    load_tokenizer(config, workdir, create) -> the run's tokenizer (modalities with text)
  device side (pure, jittable):
    example_batch(config, input_shape, batch_size) -> a training batch after
        `device_preprocess`, of zeros: what `Method.init` is traced with
    device_preprocess(rng, batch, config) -> batch: on-device augmentation and scaling
    represent_inputs(batch) -> what `Method.represent` reads from a training batch
    eval_inputs(batch) -> what a feature function reads from an evaluation batch (as stored:
        uint8 images), and `normalize(inputs, config)` turns it into what `represent` takes
    raw_features(config) -> the `raw` baseline: eval_inputs -> [b, d] features
    nominal_input_shape(config, channels) and synthetic_batch(config, input_shape,
        batch_size, rng) -> the model input's shape and a random host batch of the pipeline's
        shapes, from the config alone (the benchmark, which skips the pipeline)
  the run's config:
    resolve_config(config) -> the config with what it leaves to be settled before training
        filled in (images: the dataset's own statistics, `config.data.statistics =
        "dataset"`; text: a published model's settings); the trainer saves and uses what it
        returns
    folder_builder: the module whose `folder_builder(root, config)` reads a folder of the
        user's own files of this kind (`--config.dataset=folder:PATH`); "" when there is none
  capabilities:
    kind: the input kind `eval_inputs` gives ("image", "text", ...), the key under which a
        method's joint embedding of such inputs is found (`Method.embed`)
    paired_kind: the kind of the second input each example carries (image–caption pairs:
        "text"; a clip's sound: "audio"), with `paired_inputs(batch)`; evaluation then
        measures cross-modal retrieval, and `raw_paired_features(config)` is the `raw`
        baseline of the paired inputs (the feature source "raw:<paired_kind>")
    can_finetune: whether the fine-tuning evaluation applies (uint8 images it can shift)
    encode_texts(inputs, texts): token rows of free text in the run's vocabulary, for the
        modalities that have one (zero-shot prompts)
"""
import abc
from collections.abc import Callable, Iterator
import importlib
import types
from typing import Any

import jax
import numpy as np

from ssl_jax.components import available, import_component
from ssl_jax.data.inputs import DatasetInfo, Inputs
from ssl_jax.errors import UserError

Batch = dict[str, Any]
FeatureFn = Callable[[Any], jax.Array]


class Modality(abc.ABC):
  """A kind of input: its data, its device-side handling, its baseline and capabilities."""

  kind: str = ""
  paired_kind: str | None = None
  can_finetune: bool = False
  pipeline: str = ""  # the host pipeline module (TensorFlow), e.g. "ssl_jax.data.text_pipeline"
  uses_tokenizer: bool = False  # its functions take the run's tokenizer after the config
  folder_builder: str = ""  # reads `folder:PATH` datasets, e.g. "ssl_jax.data.builders.image_folder"

  # Host data.

  def _pipeline(self) -> types.ModuleType:
    if not self.pipeline:
      raise TypeError(f"{type(self).__name__} names no pipeline module: define its "
                                "dataset_info, train_batches and eval_batches")
    return importlib.import_module(self.pipeline)

  def _leading(self, inputs: Inputs) -> tuple:
    """What every pipeline function takes first: the config, and the tokenizer if it uses one."""
    return (inputs.config, inputs.tokenizer) if self.uses_tokenizer else (inputs.config,)

  def dataset_info(self, config: Any) -> DatasetInfo:
    """Sizes, classes and the model input's shape of the configured dataset."""
    return self._pipeline().dataset_info(config)

  def train_batches(self, inputs: Inputs, *, start_step: int, process_index: int,
                    process_count: int) -> Iterator[Batch]:
    """This process's endless training stream from `start_step`, a pure function of
    (config.seed, step)."""
    return self._pipeline().train_batches(*self._leading(inputs), start_step=start_step,
                                          process_index=process_index,
                                          process_count=process_count)

  def eval_batches(self, inputs: Inputs, split: str, *, batch_size: int, process_index: int,
                   process_count: int) -> Iterator[Batch]:
    """This process's share of `split`, once, in order, padded to whole batches ("mask")."""
    return self._pipeline().eval_batches(*self._leading(inputs), split, batch_size=batch_size,
                                         process_index=process_index,
                                         process_count=process_count)

  def label_counts(self, config: Any) -> np.ndarray | None:
    """Examples of each class in the training split, or None when unknown or unlabelled: what
    the evaluation settings are checked against before training. The default counts the
    pipeline's dataset; a modality that brings its own data (overrides `dataset_info`,
    `train_batches` or `eval_batches`) overrides this too, or is checked when its probes run."""
    if not self.pipeline or any(getattr(type(self), name) is not getattr(Modality, name)
                                for name in ("dataset_info", "train_batches", "eval_batches")):
      return None
    from ssl_jax.data import stream  # pylint: disable=g-import-not-at-top  (TF)
    return stream.label_counts(config)

  def load_tokenizer(self, config: Any, workdir: str, create: bool):
    """The run's tokenizer (the pipeline's `run_tokenizer`), for modalities with text."""
    if not self.uses_tokenizer:
      raise UserError(f"{type(self).__name__.lower()} inputs have no tokenizer")
    return self._pipeline().run_tokenizer(config, workdir, create)

  def resolve_config(self, config: Any) -> Any:
    """`config` with the settings it leaves to be settled before training filled in (none by
    default): called before training reads the config, and what it returns is what the run
    saves; calling it again on what it returned changes nothing."""
    return config

  # Device side.

  @abc.abstractmethod
  def example_batch(self, config: Any, input_shape: tuple[int, ...], batch_size: int = 2
                    ) -> Batch:
    """Zeros of the shapes and dtypes the method sees after `device_preprocess` (for init)."""

  def device_preprocess(self, rng: jax.Array, batch: Batch, config: Any) -> Batch:
    """Per-example augmentation and scaling inside the jitted step (none by default)."""
    del rng, config
    return batch

  @abc.abstractmethod
  def represent_inputs(self, batch: Batch) -> Any:
    """What `Method.represent` reads from a (preprocessed) training batch."""

  @abc.abstractmethod
  def eval_inputs(self, batch: Batch) -> Any:
    """What a feature function reads from an evaluation batch, as the pipeline stores it."""

  def normalize(self, inputs: Any, config: Any) -> Any:
    """`eval_inputs` as the method's functions take them (as training preprocessed them)."""
    del config
    return inputs

  @abc.abstractmethod
  def raw_features(self, config: Any) -> FeatureFn:
    """The `raw` baseline a representation must beat: `eval_inputs` -> [b, d] float32."""

  @abc.abstractmethod
  def nominal_input_shape(self, config: Any, channels: int) -> tuple[int, ...]:
    """`DatasetInfo.input_shape` as the configured pipeline would give it for a dataset of
    `channels` channels, without reading the dataset."""

  @abc.abstractmethod
  def synthetic_batch(self, config: Any, input_shape: tuple[int, ...], batch_size: int,
                      rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A random host batch of the shapes and dtypes the training pipeline yields."""

  # Capabilities some modalities have.

  def paired_inputs(self, batch: Batch) -> tuple[Any, Any, Any]:
    """(inputs of `kind` [b, ...], inputs of `paired_kind` [b * M, ...], which of the M
    paired inputs of each example are real [b, M]) of an evaluation batch."""
    del batch
    raise UserError(f"{type(self).__name__.lower()} examples carry no paired input")

  def raw_paired_features(self, config: Any) -> FeatureFn:
    """The `raw` baseline of the paired inputs: `paired_inputs(batch)[1]` [b * M, ...] ->
    [b * M, d] float32 features."""
    del config
    raise UserError(f"{type(self).__name__.lower()} examples have no raw baseline of a paired "
                    "input")

  def encode_texts(self, inputs: Inputs, texts: list[str]) -> Batch:
    """Token rows of `texts` in the run's vocabulary, as the text embedding takes them."""
    del inputs, texts
    raise UserError(f"{type(self).__name__.lower()} inputs have no vocabulary to encode "
                    "text with")

  def encode_images(self, inputs: Inputs, images: list[np.ndarray]) -> Batch:
    """An evaluation batch of images from outside the dataset (uint8 [h, w, 3] of any size),
    preprocessed as the run's evaluation pipeline does (`ssl_jax.propagate`)."""
    del inputs, images
    raise UserError(f"{type(self).__name__.lower()} runs do not read image files")


def names() -> list[str]:
  """The modalities this package has."""
  return available(__name__)


def find(config: Any) -> Modality:
  """The `Modality` that `config.data.modality` names (a one-line UserError when none)."""
  name = config.data.get("modality", "image")
  if "." not in str(name) and name not in names():
    raise UserError(f"config.data.modality must be one of {', '.join(names())} (modules in "
                    f"ssl_jax/modalities/) or a dotted module path, got {name!r}")
  module = import_component(__name__, name, "modality")
  modality = getattr(module, "MODALITY", None)
  if not isinstance(modality, Modality):
    raise UserError(f"modality module {module.__name__} has no MODALITY (a Modality instance)")
  return modality
