"""Tiny versions of the shipped configs, for tests that must run in seconds on 2 CPU cores."""
import importlib

import ml_collections

from configs import simclr


def override(config: ml_collections.ConfigDict, **dotted) -> ml_collections.ConfigDict:
  """override(c, **{"optimizer.lr": 0.1}) sets nested keys by dotted path."""
  for path, value in dotted.items():
    *parents, last = path.split(".")
    section = config
    for name in parents:
      section = section[name]
    section[last] = value
  return config


def tiny_digits(data_dir: str, **dotted) -> ml_collections.ConfigDict:
  """The digits SimCLR config with a 2-stage 8/16-wide CNN and 32-example batches."""
  config = simclr.get_config("digits")
  config.unlock()
  override(config, **{
      "encoder.widths": (8, 16), "projector.hidden_dim": 32, "projector.output_dim": 16,
      "batch_size": 32, "total_steps": 6, "log_every_steps": 2, "checkpoint_every_steps": 3,
      "optimizer.warmup_steps": 2, "data.data_dir": data_dir, "evaluate_at_end": False,
      "evals.probes.labels_per_class": (1, 0), "evals.probes.seeds": 2, "evals.plots.enabled": False,
      "evals.finetune.fractions": ()})
  return override(config, **dotted)


# Each joint-embedding method's digits config, shrunk to a 2-stage 8/16-wide CNN with small heads.
JOINT_EMBEDDING = {
    "simclr": ("simclr", "digits", {"projector.hidden_dim": 32, "projector.output_dim": 16}),
    "byol": ("byol", "digits", {"projector.hidden_dim": 32, "projector.output_dim": 16,
                                "predictor.hidden_dim": 32, "predictor.output_dim": 16}),
    "moco_v2": ("moco", "digits", {"projector.hidden_dim": 32, "projector.output_dim": 16,
                                   "moco.queue_size": 64}),
    "moco_v3": ("moco", "digits,version=3", {
        "projector.hidden_dim": 32, "projector.output_dim": 16, "predictor.hidden_dim": 32,
        "predictor.output_dim": 16}),
    "simsiam": ("simsiam", "digits", {"projector.hidden_dim": 32, "projector.output_dim": 32,
                                      "predictor.hidden_dim": 8, "predictor.output_dim": 32}),
    "dino": ("dino", "digits", {"head.hidden_dim": 32, "head.bottleneck_dim": 16,
                                "head.output_dim": 64, "data.local_views": 2}),
    "barlow_twins": ("barlow_twins", "digits", {"projector.hidden_dim": 32,
                                                "projector.output_dim": 32}),
    "vicreg": ("vicreg", "digits", {"projector.hidden_dim": 32, "projector.output_dim": 32}),
}


def tiny_method(name: str, data_dir: str, **dotted) -> ml_collections.ConfigDict:
  """`JOINT_EMBEDDING[name]`'s digits config, tiny, with 32-example batches."""
  module, arg, heads = JOINT_EMBEDDING[name]
  config = importlib.import_module(f"configs.{module}").get_config(arg)
  config.unlock()
  override(config, **{
      "encoder.widths": (8, 16), "batch_size": 32, "total_steps": 6, "log_every_steps": 2,
      "checkpoint_every_steps": 3, "optimizer.warmup_steps": 2, "data.data_dir": data_dir,
      "evaluate_at_end": False, "evals.probes.labels_per_class": (1, 0), "evals.probes.seeds": 2,
      "evals.plots.enabled": False, "evals.finetune.fractions": (), **heads})
  return override(config, **dotted)


def host_copy(tree):
  """A state with its own host buffers (a donated state must not share device buffers)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  return jax.tree.map(np.array, jax.device_get(tree))


def assert_trees_close(a, b, what: str, rtol: float = 2e-4, atol: float = 3e-5,
                       norm_rtol: float | None = None) -> None:
  """Leaf by leaf, with an absolute tolerance that grows with the leaf's scale: a sharded
  step sums in another order, and rounding error is relative to the largest terms. With
  `norm_rtol`, each leaf is compared as a whole instead: ||a - b|| <= norm_rtol * ||b|| +
  atol * sqrt(size), which one outlying element of a small leaf does not fail."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  flat_b = dict(jax.tree_util.tree_leaves_with_path(b))
  for path, value in jax.tree_util.tree_leaves_with_path(a):
    desired = np.asarray(flat_b[path])
    name = f"{what}{jax.tree_util.keystr(path)}"
    if norm_rtol is not None:
      value = np.asarray(value, np.float64)
      error, norm = np.linalg.norm(value - desired), np.linalg.norm(desired)
      assert error <= norm_rtol * norm + atol * np.sqrt(desired.size), (
          f"{name}: |a - b| = {error:.3g} > {norm_rtol} * |b| ({norm:.3g}) + "
          f"{atol} * sqrt({desired.size})")
      continue
    scale = float(np.max(np.abs(desired))) if desired.size else 0.0
    np.testing.assert_allclose(value, desired, rtol=rtol, atol=max(atol, 1e-5 * scale),
                               err_msg=name)


def steps_on_meshes(config: ml_collections.ConfigDict, batches: list, image_shape: tuple,
                    length, initial=None, sizes: tuple = (8, 1)) -> dict:
  """Runs the same host batches from the same initial state through the trainer's step on a
  mesh of each size (or `config.mesh` string, "data:2,fsdp:4"); returns {size: (losses, host
  state)}. `initial` defaults to the
  1-device trainer's freshly created state."""
  import jax  # pylint: disable=g-import-not-at-top
  from ssl_jax import methods, parallel, train  # pylint: disable=g-import-not-at-top
  trainers = {size: train.Trainer(config, methods.build(config, length),
                                  parallel.make_mesh(size), image_shape, 10, length)
              for size in sizes}
  if initial is None:
    initial = host_copy(trainers[sizes[-1]].create_state(config.seed))
  results = {}
  for size, trainer in trainers.items():
    state = jax.device_put(host_copy(initial), trainer.state_shardings)
    seen = []
    for batch in batches:
      state, measurements = trainer.train_step(state, parallel.global_batch(batch, trainer.mesh))
      seen.append(float(measurements["loss"]))
    results[size] = (seen, jax.device_get(state))
  return results


def assert_sharded_equals_single_device(results: dict, parts=("params", "extra"),
                                        loss_rtol: float = 1e-4, sharded: int | str = 8,
                                        **tolerances) -> None:
  """`steps_on_meshes`'s run on the `sharded` mesh equals its 1-device run, and the steps did
  something."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  (losses8, state8), (losses1, state1) = results[sharded], results[1]
  np.testing.assert_allclose(losses8, losses1, rtol=loss_rtol)
  assert losses1[-1] != losses1[0], "the steps did not change the parameters"
  for part in parts:
    assert_trees_close(state8[part], state1[part], part, **tolerances)
