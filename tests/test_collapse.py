"""The collapse monitor (`ssl_jax/collapse.py`): RankMe's effective rank and the normalised
std against NumPy on embeddings made to collapse, the monitor's flags and warnings, and a tiny
run made to collapse (VICReg with only its invariance term, at 10x the learning rate) that is
flagged, warned about, resumed against the same reference and stopped with one line."""
import json
import logging
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ssl_jax import collapse, losses
from tiny_configs import tiny_method


def rankme_reference(z):
  """Garrido et al. 2023, Eq. 1: exp(-sum p log p), p_k = sigma_k / ||sigma||_1 + 1e-7."""
  sigma = np.linalg.svd(np.asarray(z, np.float64), compute_uv=False)
  p = sigma / sigma.sum() + 1e-7
  return float(np.exp(-np.sum(p * np.log(p))))


def normalized_std_reference(z):
  z = np.asarray(z, np.float64)
  z = z / np.linalg.norm(z, axis=1, keepdims=True)
  return float(np.mean(np.std(z, axis=0)))


RNG = np.random.default_rng(0)
EMBEDDINGS = {
    "constant": np.tile(RNG.normal(size=(1, 32)), (128, 1)),
    "rank_1": np.outer(RNG.normal(size=128), RNG.normal(size=32)),
    "rank_4": RNG.normal(size=(128, 4)) @ RNG.normal(size=(4, 32)),
    "full": RNG.normal(size=(128, 32)),
    "wide": RNG.normal(size=(16, 64)),  # fewer examples than dimensions
}


@pytest.mark.parametrize("name", list(EMBEDDINGS))
def test_effective_rank_and_std_equal_numpy(name):
  z = EMBEDDINGS[name]
  rank = float(losses.effective_rank(jnp.asarray(z, jnp.float32)))
  assert rank == pytest.approx(rankme_reference(z), rel=1e-4)
  assert float(losses.normalized_std(jnp.asarray(z, jnp.float32))) == pytest.approx(
      normalized_std_reference(z), abs=1e-5)
  if name in ("constant", "rank_1"):
    assert rank < collapse.COMPLETE_RANK
  if name == "rank_4":
    assert 3.0 < rank < 4.0  # 4 directions, unequally used
  if name == "full":
    assert rank > 28  # close to the 32 dimensions


def test_measure_takes_the_methods_own_std_when_it_reports_one():
  z = jnp.asarray(EMBEDDINGS["rank_4"], jnp.float32)
  assert set(collapse.measure(z, {})) == {"effective_rank", "embedding_std"}
  assert set(collapse.measure(z, {"embedding_std": jnp.float32(0.1)})) == {"effective_rank"}
  off = collapse.measure_at(jnp.bool_(False), z, {})
  assert float(off["effective_rank"]) == 0.0
  on = collapse.measure_at(jnp.bool_(True), z, {})
  assert float(on["effective_rank"]) == pytest.approx(rankme_reference(z), rel=1e-4)


def settings(**changes):
  return ml_collections.ConfigDict({"rank_fraction": 0.1, "std_fraction": 0.1, "stop": False,
                                    **changes})


def test_the_monitor_flags_both_signatures_and_warns_once_per_stretch():
  monitor = collapse.Monitor(settings())
  steps = [(10, 20.0, 0.10), (20, 30.0, 0.12), (30, 2.5, 0.11),  # dimensional: 2.5 < 3.0
           (40, 2.0, 0.10), (50, 25.0, 0.11), (60, 20.0, 0.005),  # complete: std < 0.012
           (70, 1.2, 0.05)]  # complete: rank <= 1.5
  flags, warnings = [], []
  for step, rank, std in steps:
    scalars = {"effective_rank": rank, "embedding_std": std}
    warnings.append(monitor.observe(step, scalars))
    flags.append(scalars["collapse"])
  assert flags == [0, 0, 1, 1, 0, 1, 1]
  assert [w is not None for w in warnings] == [False, False, True, False, False, True, False]
  assert warnings[2].startswith("dimensional collapse at step 30: effective rank 2.50 "
                                "(highest 30.00)")
  assert "too little augmentation" in warnings[2]
  assert warnings[5].startswith("complete collapse at step 60")
  assert "stop-gradient" in warnings[5]


@pytest.mark.parametrize("changes,cause", [
    ({"rank_fraction": 1.0}, "config.collapse.rank_fraction must be in [0, 1)"),
    ({"std_fraction": -0.1}, "config.collapse.std_fraction"),
    ({"stop": "yes"}, "config.collapse.stop must be True or False"),
])
def test_bad_settings_are_one_line(changes, cause):
  from ssl_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  with pytest.raises(UserError, match=cause.replace("[", r"\[").replace(")", r"\)")):
    collapse.check(settings(**changes))


@pytest.mark.slow
def test_a_run_made_to_collapse_is_flagged_warned_resumed_and_stopped(tmp_path, caplog):
  """VICReg with only its invariance term (variance and covariance weights 0) and 10x the
  digits learning rate maps every image to one point within 20 steps: the std of the
  projection falls from 0.03 to 0. The first 30 steps warn (and write `collapse` = 1); the
  resumed run judges against the highest values of the first (read back from metrics.jsonl)
  and, with `config.collapse.stop`, stops at its first log step, keeping step 30's
  checkpoint."""
  from ssl_jax import train  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "run")

  def config(total_steps, stop):
    return tiny_method("vicreg", str(tmp_path / "tfds"), **{
        "total_steps": total_steps, "log_every_steps": 10, "checkpoint_every_steps": 10,
        "mesh": "data:1", "vicreg.variance_weight": 0.0, "vicreg.covariance_weight": 0.0,
        "optimizer.lr": 3.0, "collapse.stop": stop})

  with caplog.at_level(logging.WARNING):
    train.train(config(30, False), workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert [r["collapse"] for r in rows] == [0.0, 1.0, 1.0]
  assert rows[1]["embedding_std"] < 0.1 * rows[0]["embedding_std"]
  warned = [r.getMessage() for r in caplog.records if "collapse at step" in r.getMessage()]
  assert len(warned) == 1 and warned[0].startswith("complete collapse at step 20")

  with pytest.raises(collapse.CollapseError,
                     match=r"complete collapse at step 40: .* Training stopped "
                           r"\(config.collapse.stop\) and the last checkpoint \(step 30\)"):
    train.train(config(50, True), workdir)
  assert sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints"))
                if d.isdigit()) == [10, 20, 30]


def test_a_config_saved_before_the_monitor_gets_its_defaults():
  """A run's config.json from before `config.collapse` existed still restores and evaluates."""
  old = ml_collections.ConfigDict({"seed": 0})
  assert collapse.settings_of(old).to_dict() == collapse.DEFAULTS
  collapse.check(collapse.settings_of(old))
  custom = ml_collections.ConfigDict({"collapse": {**collapse.DEFAULTS, "rank_fraction": 0.3}})
  assert collapse.settings_of(custom).rank_fraction == 0.3
