"""Evaluations of a trained run, one module per protocol family, found by name.

`config.evals` holds named entries, each `{"type": <module>, ...its own settings}`
(big_vision's `config.evals`): the type names `ssl_jax/evaluators/<type>.py` (or, with a dot,
a module of the user's own) whose `Evaluator` class is built with the entry's name, its
settings and the run's config. `ssl_jax.evaluate` builds every entry, checks their settings
before training starts (`check`), and after training runs them in order, each on a shared
`Context`: first the entries `config.eval.run_order` names, in that order, then any other
entries by name (a config's keys have no order of their own once saved). Their `Output`s make
up the report. An evaluator that does not apply to a run (held-out metrics for a method
without any, zero-shot for a method with no text embedding) is skipped (`applies`).

`ssl_jax/eval/` is the probe library the evaluators call (linear probe, kNN, label
propagation, few-shot, fine-tuning, cross-modal, plots); it knows nothing of runs or configs.
"""
import abc
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.components import import_component
from ssl_jax.errors import UserError

# Feature sources: `ssl` the checkpoint, `random_init` the same network at its initialisation,
# `raw` the inputs themselves (the modality's baseline). Each may be followed by ":<kind>", the
# kind of a modality's paired input (a clip's "audio"): the same source's features of that
# input (`Method.represent_paired`, `Modality.raw_paired_features`).
NETWORK_SOURCES = ("ssl", "random_init")
FEATURE_SOURCES = NETWORK_SOURCES + ("raw",)


def split_source(source: str) -> tuple[str, str | None]:
  """"ssl:audio" -> ("ssl", "audio"); "ssl" -> ("ssl", None)."""
  base, _, kind = str(source).partition(":")
  return base, kind or None


def check_source(source: str, modality: Any) -> None:
  """A UserError unless `source` is a feature source of runs of `modality`."""
  base, kind = split_source(source)
  paired = modality.paired_kind
  allowed = list(FEATURE_SOURCES) + ([f"{s}:{paired}" for s in FEATURE_SOURCES] if paired
                                     else [])
  if base not in FEATURE_SOURCES or (kind is not None and kind != paired):
    raise UserError(f"unknown feature source '{source}' (config.eval.feature_sources): use "
                    f"{', '.join(allowed)}")

Split = tuple[np.ndarray, np.ndarray]  # features [n, d] float32, labels [n]


@dataclasses.dataclass
class Output:
  """What one evaluator adds to the report.

  rows: result rows appended to report["results"] ({features, protocol, labels_per_class,
    accuracy, std, seeds, ...}).
  sections: report keys of their own (e.g. "held_out", "retrieval").
  images: {report key: {file stem: uint8 image [H, W, C]}}: written as `eval/<stem>.png` by
    process 0, their file names listed under the report key (e.g. "plots", "pictures").
  """
  rows: list[dict] = dataclasses.field(default_factory=list)
  sections: dict[str, Any] = dataclasses.field(default_factory=dict)
  images: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Context:
  """A restored run as every evaluator sees it.

  `probe_inputs` read the dataset the probes run on (`eval.dataset`, or the training dataset);
  `train_inputs` read the training dataset, whose test split held-out metrics and retrieval
  use. `num_classes` is None when the probe dataset has no labels. `rows` are the result rows
  of the evaluators that ran before, in order.
  """
  config: Any
  method: Any
  trained: dict
  untrained: dict
  step: int
  num_classes: int | None
  mesh: jax.sharding.Mesh
  probe_inputs: Any
  train_inputs: Any
  rows: list[dict] = dataclasses.field(default_factory=list)
  _features: dict[str, tuple[Split, Split]] = dataclasses.field(default_factory=dict)

  def batches(self, inputs: Any, split: str) -> Iterator[dict[str, np.ndarray]]:
    """This process's evaluation batches of `split`: `eval.batch_size` rounded down to a
    multiple of the device count, split over the processes."""
    size = self.config.eval.batch_size
    batch_size = size - size % self.mesh.size or self.mesh.size
    return inputs.eval_batches(split, batch_size=batch_size // jax.process_count(),
                               process_index=jax.process_index(),
                               process_count=jax.process_count())

  def network_state(self, source: str) -> dict:
    """The state of a network feature source: "ssl" the checkpoint, "random_init" its init."""
    if source not in NETWORK_SOURCES:
      raise UserError(f"feature source '{source}' is not a network: use "
                      f"{' or '.join(NETWORK_SOURCES)}")
    return self.trained if source == "ssl" else self.untrained

  def network_states(self) -> dict[str, dict]:
    """{source: state} of the configured feature sources that are networks."""
    return {source: self.network_state(source) for source in self.config.eval.feature_sources
            if source in NETWORK_SOURCES}

  def representation_fn(self, represent: Callable[..., jax.Array], state: dict, inputs: Any
                        ) -> Callable[[dict], jax.Array]:
    """Evaluation batch of `inputs` -> `represent(params, extra, normalised inputs)`."""
    modality, config = inputs.modality, self.config
    params, extra = state["params"]["model"], state["extra"]
    return lambda batch: represent(params, extra,
                                   modality.normalize(modality.eval_inputs(batch), config))

  def source_fn(self, source: str) -> Callable[[dict], jax.Array]:
    """Evaluation batch of the probe dataset -> the features of `source`."""
    modality = self.probe_inputs.modality
    check_source(source, modality)
    base, kind = split_source(source)
    if kind is not None:
      return self._paired_source_fn(base)
    if source == "raw":
      raw = modality.raw_features(self.config)
      return lambda batch: raw(modality.eval_inputs(batch))
    if source not in NETWORK_SOURCES:
      raise UserError(f"unknown feature source '{source}': use {', '.join(FEATURE_SOURCES)}")
    return self.representation_fn(self.method.represent, self.network_state(source),
                                  self.probe_inputs)

  def _paired_source_fn(self, base: str) -> Callable[[dict], jax.Array]:
    """Evaluation batch -> [b, d]: the features of `base` of each example's paired inputs,
    averaged over the real ones when an example has several."""
    modality = self.probe_inputs.modality
    if base == "raw":
      represent = modality.raw_paired_features(self.config)
    else:
      if self.method.represent_paired is None:
        raise UserError(f"feature source '{base}:{modality.paired_kind}': method "
                        f"'{self.config.method}' has no network of its own for "
                        f"{modality.paired_kind} inputs")
      state = self.network_state(base)
      params, extra = state["params"]["model"], state["extra"]
      represent = lambda paired: self.method.represent_paired(params, extra, paired)

    def paired_features(batch):
      _, paired, valid = modality.paired_inputs(batch)
      features = represent(paired).reshape(valid.shape + (-1,)).astype(jnp.float32)
      weights = valid.astype(jnp.float32)[..., None]
      return jnp.sum(features * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)
    return paired_features

  def features(self, source: str) -> tuple[Split, Split]:
    """((train features, labels), (test features, labels)) of `source` on the probe dataset,
    extracted once and shared by every evaluator."""
    if source not in self._features:
      import time  # pylint: disable=g-import-not-at-top
      from absl import logging  # pylint: disable=g-import-not-at-top
      from ssl_jax.eval import features  # pylint: disable=g-import-not-at-top
      started = time.perf_counter()
      fn, data = self.source_fn(source), self.config.data
      self._features[source] = tuple(
          features.extract(fn, self.batches(self.probe_inputs, split), self.mesh)
          for split in (data.train_split, data.test_split))
      logging.info("%s features %s in %.1fs", source, self._features[source][0][0].shape,
                   time.perf_counter() - started)
    return self._features[source]

  def extracted(self) -> dict[str, tuple[Split, Split]]:
    """The features extracted so far, by source, in extraction order."""
    return dict(self._features)


class Evaluator(abc.ABC):
  """One evaluation: built from its `config.evals` entry, checked before training, run after."""

  needs_labels = True  # False: it has something to report on an unlabelled probe dataset

  def __init__(self, name: str, settings: Any, config: Any):
    self.name, self.settings, self.config = name, settings, config

  def check(self) -> None:
    """Raises a one-line UserError for a bad setting; runs before training starts."""

  def check_labels(self, counts: np.ndarray, dataset: str) -> None:
    """Raises a one-line UserError when the settings ask for more labelled examples than the
    probe dataset's training split has (`counts`: examples per class); before training."""

  def applies(self, context: Context) -> bool:
    """Whether this run has anything for it to measure (a method that draws, a test split)."""
    del context
    return True

  @abc.abstractmethod
  def run(self, context: Context) -> Output:
    """Measures the run; called only when `applies`."""


def build(config: Any) -> list[Evaluator]:
  """The evaluators of `config.evals`: those `config.eval.run_order` names first, in that
  order, then the others by name."""
  entries = config.get("evals", {})
  order = tuple(config.eval.get("run_order", ()))
  for name in order:
    if name not in entries:
      raise UserError(f"config.eval.run_order names '{name}', which is not an entry of "
                      f"config.evals (they are {', '.join(sorted(entries))})")
  evaluators = []
  for name in list(order) + sorted(set(entries) - set(order)):
    settings = entries[name]
    kind = settings.get("type") if hasattr(settings, "get") else None
    if not kind:
      raise UserError(f"config.evals.{name} needs a type: the module in ssl_jax/evaluators/ "
                      "that runs it")
    module = import_component(__name__, kind, "evaluator")
    evaluator_class = getattr(module, "Evaluator", None)
    if not (isinstance(evaluator_class, type) and issubclass(evaluator_class, Evaluator)):
      raise UserError(f"evaluator module {module.__name__} has no Evaluator class")
    evaluators.append(evaluator_class(name, settings, config))
  return evaluators
