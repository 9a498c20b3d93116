"""The collapse monitor: is a run's representation collapsing, measured while it trains.

Collapse is the failure every joint-embedding method guards against, and the most common
complaint about running one on new data. It has two signatures (Jing et al. 2022,
"Understanding Dimensional Collapse in Contrastive Self-supervised Learning", Sec. 1):

- complete collapse: every input gets (nearly) the same embedding. The per-dimension std over
  the batch of the L2-normalised embedding (SimSiam, Chen & He 2021, Sec. 4.1, Fig. 2) falls
  towards 0 (about 1/sqrt(d) when the embeddings are spread over d dimensions), and the
  effective rank towards 1;
- dimensional collapse: the embeddings vary, but within a few directions. The effective rank
  (RankMe, Garrido et al. 2023, Eq. 1) falls while the std may not.

At log steps the trainer measures both from the step's own features (`StepOutput.features`,
the representation the probes read; no extra forward pass): `effective_rank`, and
`embedding_std`, the method's own when it reports one (the embedding its loss compares:
SimSiam's projection, DINO's teacher distribution) and else that of the features. This
monitor keeps each one's highest value so far and flags a log step (`collapse` = 1 in
metrics.jsonl and TensorBoard) when the effective rank is at most `COMPLETE_RANK`, or the std
below `config.collapse.std_fraction` of its highest value (complete), or the effective rank
below `config.collapse.rank_fraction` of its highest (dimensional). The first flagged step
of a stretch logs a warning naming the likely causes; with `config.collapse.stop` training
stops there with a one-line error, keeping the last checkpoint.
"""
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax import losses
from ssl_jax.config_lib import check_number
from ssl_jax.errors import UserError

# An effective rank this low means every embedding lies on (nearly) one line.
COMPLETE_RANK = 1.5
MEASURED = ("effective_rank", "embedding_std")
CAUSES = {
    "complete": "a learning rate too high, a missing stop-gradient, predictor or EMA target, "
                "too small a contrastive temperature or teacher temperature, or a loss without "
                "its variance / centring term",
    "dimensional": "too little augmentation, too narrow a projector, too high a temperature, "
                   "or a variance / covariance / decorrelation weight too small"}


# `config.collapse` when a run's config has none (a run saved before the monitor existed).
DEFAULTS = {"rank_fraction": 0.1, "std_fraction": 0.1, "stop": False}


def settings_of(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config.collapse`, or the defaults for a config saved without it."""
  return config.get("collapse") or ml_collections.ConfigDict(DEFAULTS)


class CollapseError(UserError):
  """`config.collapse.stop` is set and the monitor saw collapse; the last checkpoint is kept."""


def check(settings: ml_collections.ConfigDict) -> None:
  """`config.collapse`: rank_fraction and std_fraction in [0, 1), stop a bool."""
  for key in ("rank_fraction", "std_fraction"):
    check_number(f"config.collapse.{key}", settings[key], minimum=0)
    if settings[key] >= 1:
      raise UserError(f"config.collapse.{key} must be in [0, 1) (a fraction of the highest "
                      f"value seen; 0 turns that check off), got {settings[key]}")
  if not isinstance(settings.stop, bool):
    raise UserError(f"config.collapse.stop must be True or False, got {settings.stop!r}")


def measure(features: jax.Array, method_metrics: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Inside the step: the effective rank of the features and, unless the method reports its
  own, the std of the L2-normalised features."""
  features = jax.lax.stop_gradient(features.reshape(features.shape[0], -1))
  measured = {"effective_rank": losses.effective_rank(features)}
  if "embedding_std" not in method_metrics:
    measured["embedding_std"] = losses.normalized_std(features)
  return measured


def measure_at(is_log_step: jax.Array, features: jax.Array,
               method_metrics: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """`measure` on log steps only (an SVD per step would be waste); zeros on the others,
  whose scalars are never written."""
  shapes = jax.eval_shape(measure, features, method_metrics)
  return jax.lax.cond(is_log_step, lambda f: measure(f, method_metrics),
                      lambda f: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes),
                      features)


class Monitor:
  """Host side: the highest values so far, the flag, the warning and the optional stop."""

  def __init__(self, settings: ml_collections.ConfigDict):
    self.rank_fraction = settings.rank_fraction
    self.std_fraction = settings.std_fraction
    self.stop = settings.stop
    self.peak = {name: 0.0 for name in MEASURED}
    self.collapsing = False

  def resume(self, workdir: str, start_step: int) -> None:
    """The highest values of the logged steps up to `start_step` (a resumed run judges
    against the same reference as an uninterrupted one)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not start_step or not os.path.exists(path):
      return
    with open(path) as f:
      for line in f:
        row = json.loads(line)
        if row["step"] <= start_step:
          self._raise_peaks(row)

  def _raise_peaks(self, scalars: dict[str, Any]) -> None:
    for name in MEASURED:
      if name in scalars:
        self.peak[name] = max(self.peak[name], float(scalars[name]))

  def signature(self, scalars: dict[str, float]) -> str | None:
    """"complete", "dimensional" or None for this step's values, against the peaks before it."""
    rank, std = scalars["effective_rank"], scalars["embedding_std"]
    if rank <= COMPLETE_RANK or std < self.std_fraction * self.peak["embedding_std"]:
      return "complete"
    if rank < self.rank_fraction * self.peak["effective_rank"]:
      return "dimensional"
    return None

  def observe(self, step: int, scalars: dict[str, float]) -> str | None:
    """Adds `collapse` (0 or 1) to a log step's scalars; returns the warning for the first
    collapsed step of a stretch."""
    found = self.signature(scalars)
    self._raise_peaks(scalars)
    scalars["collapse"] = float(found is not None)
    starting, self.collapsing = found is not None and not self.collapsing, found is not None
    if not starting:
      return None
    return (f"{found} collapse at step {step}: effective rank {scalars['effective_rank']:.2f} "
            f"(highest {self.peak['effective_rank']:.2f}), embedding std "
            f"{scalars['embedding_std']:.4f} (highest {self.peak['embedding_std']:.4f}); "
            f"likely causes: {CAUSES[found]}")

  def stop_if_asked(self, warning: str, last_saved: int | None) -> None:
    """With `config.collapse.stop`: raises CollapseError, keeping the last checkpoint."""
    if self.stop:
      kept = (f"the last checkpoint (step {last_saved}) is kept" if last_saved is not None
              else "no checkpoint was written")
      raise CollapseError(f"{warning}. Training stopped (config.collapse.stop) and {kept}")
