"""Meshes and sharding rules (`config.mesh`, `config.sharding_rules`): the placement of each
state leaf, FSDP steps equal to 1-device steps for SimCLR (BatchNorm), BYOL (EMA target), MAE
and MLM with their leaves really split, and a checkpoint written on one mesh resumed on another
as if the run had never moved."""
import re

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from configs.recipes import augmentations
from ssl_jax import config_lib, methods, parallel, train
from ssl_jax.errors import UserError
from test_language_methods import LENGTH_TOKENS, text_batch, text_config
from test_mae import random_state, tiny_mae
from tiny_configs import (assert_sharded_equals_single_device, assert_trees_close, host_copy,
                          override, steps_on_meshes, tiny_digits, tiny_method)

FSDP = "data:2,fsdp:4"
LENGTH = config_lib.TrainingLength(steps_per_epoch=10, total_steps=100, schedule_steps=100)
SGD = {"optimizer.name": "sgd", "optimizer.weight_decay": 1e-4, "fsdp_min_size": 0}


def test_mesh_strings_name_axes_and_sizes():
  mesh = parallel.make_mesh(FSDP)
  assert mesh.axis_names == ("data", "fsdp") and mesh.devices.shape == (2, 4)
  assert parallel.make_mesh("data:-1,fsdp:2").devices.shape == (4, 2)
  assert parallel.make_mesh("data:1").devices.shape == (1,)
  assert parallel.make_mesh(8).axis_names == ("data",)
  assert parallel.batch_sharded(mesh).spec == PartitionSpec(("data", "fsdp"))
  for text, cause in [("model:2", "config.mesh must be axes data and fsdp"),
                      ("data:0", "sizes >= 1 or one -1"), ("data:2,data:4", "as 'name:size"),
                      ("data:-1,fsdp:-1", "may size one axis -1"),
                      ("data:3,fsdp:-1", "8 devices do not split into axes of 3"),
                      ("data:4,fsdp:4", "needs 16 devices; there are 8")]:
    with pytest.raises(UserError, match=cause):
      parallel.make_mesh(text)


def test_fsdp_splits_the_largest_divisible_dimension_of_large_enough_leaves():
  spec = parallel.fsdp_spec
  assert spec((16, 32), 4, 0) == PartitionSpec(None, "fsdp")
  assert spec((3, 3, 8, 64), 4, 0) == PartitionSpec(None, None, None, "fsdp")
  assert spec((12, 10), 4, 0) == PartitionSpec("fsdp", None)  # 10 does not divide by 4
  assert spec((8, 8), 4, 0) == PartitionSpec("fsdp", None)  # ties: the first
  assert spec((3, 5), 4, 0) == PartitionSpec()  # nothing divides: replicated
  assert spec((), 4, 0) == PartitionSpec()
  assert spec((16, 32), 4, 513) == PartitionSpec()  # fewer elements than the minimum
  assert spec((16, 32), 1, 0) == PartitionSpec()  # no fsdp axis


def test_rules_place_each_leaf_by_its_path_first_match_wins():
  state = {"params": {"model": {"encoder": {"kernel": np.zeros((8, 16))}},
                      "probe": {"kernel": np.zeros((16, 8))}},
           "opt_state": {"model": ({"mu": {"encoder": {"kernel": np.zeros((8, 16))}}},)},
           "step": np.zeros(())}
  shardings = parallel.state_shardings(state, parallel.make_mesh(FSDP),
                                       ((r"probe", "replicate"), (r"encoder", "fsdp")), 0)
  assert shardings["params"]["model"]["encoder"]["kernel"].spec == PartitionSpec(None, "fsdp")
  assert shardings["opt_state"]["model"][0]["mu"]["encoder"]["kernel"].spec == \
      PartitionSpec(None, "fsdp")
  assert shardings["params"]["probe"]["kernel"].spec == PartitionSpec()
  assert shardings["step"].spec == PartitionSpec()  # matched by no rule
  assert parallel.leaf_path(jax.tree_util.tree_leaves_with_path(state)[1][0]) == \
      "params/model/encoder/kernel"
  for bad in [(("encoder", "tensor"),), (("(", "fsdp"),), ("encoder",)]:
    with pytest.raises(UserError, match="config.sharding_rules must be"):
      parallel.check_rules(bad, 0)
  with pytest.raises(UserError, match="config.fsdp_min_size must be an integer >= 0"):
    parallel.check_rules(((".*", "fsdp"),), -1)


def sharded_run(config, batches, input_shape, initial=None):
  """3 steps on the FSDP mesh, 3 on one device (steps_on_meshes's results), and the FSDP
  trainer's initial state placed on its devices: the step's outputs have the same shardings
  (`out_shardings`), so its leaves show where the state lives without a second compilation."""
  results = steps_on_meshes(config, batches, input_shape, LENGTH, initial=initial,
                            sizes=(FSDP, 1))
  trainer = train.Trainer(config, methods.build(config, LENGTH), parallel.make_mesh(FSDP),
                          input_shape, 10, LENGTH)
  state = jax.device_put(host_copy(initial if initial is not None else
                                   jax.tree.map(np.asarray, results[1][1])),
                         trainer.state_shardings)
  return results, state


def fsdp_specs(tree) -> set:
  return {leaf.sharding.spec for leaf in jax.tree.leaves(tree) if "fsdp" in leaf.sharding.spec}


def image_batches(views: int = 2) -> list[dict[str, np.ndarray]]:
  rng = np.random.default_rng(0)
  return [{"views": rng.integers(0, 256, (32, views, 8, 8, 1), np.uint8),
           "label": rng.integers(0, 10, (32,), np.int32)} for _ in range(3)]


@pytest.mark.parametrize("name", ["simclr", "byol"])
def test_fsdp_step_equals_single_device_step_for_batchnorm_and_ema_methods(name, tmp_path):
  """Global BatchNorm statistics and BYOL's EMA target (a state leaf that follows the rules
  like the parameters) under FSDP; SGD, as in test_joint_embedding."""
  config = tiny_method(name, str(tmp_path), **SGD, **{"optimizer.lr": 0.5,
                                                      "optimizer.warmup_steps": 20})
  results, state = sharded_run(config, image_batches(), (8, 8, 1))
  assert_sharded_equals_single_device(results, sharded=FSDP, norm_rtol=1e-3)
  kernel, = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(state["params"])
             if parallel.leaf_path(path).endswith("encoder/Conv_1/kernel")]  # 3x3x8x8
  assert kernel.sharding.spec == PartitionSpec(None, None, "fsdp", None)
  assert kernel.addressable_shards[0].data.shape == (3, 3, 2, 8)
  if name == "byol":
    assert fsdp_specs(state["extra"]), "the EMA target is replicated"


def test_fsdp_step_equals_single_device_step_for_mae_and_adam_moments_are_split():
  config = tiny_mae(**SGD, **{"optimizer.lr": 0.05})
  config.augment = augmentations.augment_config(mean=augmentations.DIGITS_MEAN,
                                                std=augmentations.DIGITS_STD)
  one = train.Trainer(config, methods.build(config, LENGTH), parallel.make_mesh(1), (8, 8, 1),
                      10, LENGTH)
  results, state = sharded_run(config, image_batches(views=1), (8, 8, 1),
                               initial=random_state(one))
  assert_sharded_equals_single_device(results, sharded=FSDP, parts=("params",),
                                      loss_rtol=1e-5, atol=3e-6)
  assert fsdp_specs(state["params"]["model"])
  # AdamW's moments follow the parameters they belong to (the rules match their paths too).
  adamw = override(tiny_mae(fsdp_min_size=0), **{"optimizer.name": "adamw"})
  shardings = train.Trainer(adamw, methods.build(adamw, LENGTH), parallel.make_mesh(FSDP),
                            (8, 8, 1), 10, LENGTH).state_shardings
  paths = {parallel.leaf_path(path): sharding.spec
           for path, sharding in jax.tree_util.tree_leaves_with_path(shardings)}
  mlp = [path for path in paths if path.endswith("encoder/blocks_0/mlp/fc1/kernel")]
  assert len(mlp) == 3, mlp  # the parameter, mu and nu
  assert {paths[path] for path in mlp} == {PartitionSpec(None, "fsdp")}, mlp


def test_fsdp_step_equals_single_device_step_for_mlm():
  config = text_config("mlm", **SGD, **{"optimizer.lr": 0.1})
  results, state = sharded_run(config, [text_batch(seed) for seed in range(3)],
                               (LENGTH_TOKENS,))
  assert_sharded_equals_single_device(results, sharded=FSDP, norm_rtol=1e-3)
  assert fsdp_specs(state["params"]["model"])


@pytest.mark.slow
def test_a_checkpoint_resumes_on_another_mesh_as_if_the_run_never_moved(tmp_path):
  """2 steps on FSDP (2x4), 2 more on one device, 2 more on FSDP again: equal to 6 straight
  steps on one device. The cosine horizon is fixed (decay_steps) so that stopping early does
  not change the schedule."""
  data_dir = str(tmp_path / "tensorflow_datasets")

  def run(workdir, mesh, total_steps):
    config = tiny_digits(data_dir, mesh=mesh, total_steps=total_steps, checkpoint_every_steps=2,
                         **SGD, **{"optimizer.lr": 0.3, "optimizer.decay_steps": 6})
    return jax.device_get(train.run(config, str(tmp_path / workdir)))

  straight = run("straight", "data:1", 6)
  for mesh, steps in [(FSDP, 2), ("data:1", 4), (FSDP, 6)]:
    moved = run("moved", mesh, steps)
    assert int(moved["step"]) == steps
  assert_trees_close(moved["params"], straight["params"], "params", norm_rtol=1e-4)
  assert_trees_close(moved["extra"], straight["extra"], "extra", norm_rtol=1e-4)


def test_the_planner_reports_fsdp_dividing_the_state_per_device():
  """`experiments/plan.py` compiles the step ahead of time (here on conftest's 8 devices): the
  parameters and Adam moments per device fall 4x from data parallelism to fsdp=4 (leaves that
  no dimension of which divides by 4 stay whole, so a little more than a quarter)."""
  from experiments import plan  # pylint: disable=g-import-not-at-top
  tiny = ["encoder.width=32", "encoder.depth=1", "encoder.mlp_dim=64", "encoder.num_heads=2",
          "decoder.width=16", "decoder.depth=1", "decoder.mlp_dim=32", "decoder.num_heads=2",
          "fsdp_min_size=0"]
  reports = {mesh: plan.plan(plan.parse_args(
      ["--config=configs/mae.py:digits", f"--mesh={mesh}", "--batch_size=32",
       *[f"--set={item}" for item in tiny]])) for mesh in ("data:8", FSDP)}
  dp, fsdp = reports["data:8"]["per_device_bytes"], reports[FSDP]["per_device_bytes"]
  params = reports["data:8"]["parameters"]
  assert reports[FSDP]["mesh"] == {"data": 2, "fsdp": 4}
  assert dp["params"] == 4 * params  # float32, whole on every device
  assert params <= fsdp["params"] < 0.3 * dp["params"]
  assert fsdp["opt_state"] < 0.3 * dp["opt_state"]
  assert fsdp["arguments"] < dp["arguments"]
  assert dp["peak"] > 0 and reports[FSDP]["state_fits"]["TPU v3 core (16 GB)"]


@pytest.mark.parametrize("network", ["vit_mae", "text_transformer", "resnet"])
def test_remat_recomputes_blocks_with_the_same_steps_and_parameter_names(network, tmp_path):
  """`config.remat="blocks"` makes every network recompute its blocks in the backward pass:
  the parameter tree is the one without it (checkpoints and converted weights still fit) and 2
  steps give the same losses and parameters (one device; ViT encoder + MAE decoder, BERT,
  ResNet with BatchNorm)."""
  if network == "vit_mae":
    base, shape, batches = tiny_mae(**SGD, **{"optimizer.lr": 0.05}), (8, 8, 1), image_batches(1)
    base.augment = augmentations.augment_config(mean=augmentations.DIGITS_MEAN,
                                                std=augmentations.DIGITS_STD)
  elif network == "text_transformer":
    base, shape = text_config("mlm", **SGD, **{"optimizer.lr": 0.1}), (LENGTH_TOKENS,)
    batches = [text_batch(seed) for seed in range(3)]
  else:
    base = tiny_digits(str(tmp_path), **SGD, **{"optimizer.lr": 0.1})
    base.encoder = {"name": "resnet", "depth": 18, "width": 4, "cifar_stem": True}
    shape, batches = (8, 8, 1), image_batches()
  runs = {}
  for remat in (False, True):
    base.remat = "blocks" if remat else "none"
    runs[remat] = steps_on_meshes(base, batches[:2], shape, LENGTH, sizes=(1,))[1]
    trainer = train.Trainer(base, methods.build(base, LENGTH), parallel.make_mesh(1), shape, 10,
                            LENGTH)
    step = jax.make_jaxpr(trainer._train_step)(  # pylint: disable=protected-access
        trainer.abstract_state, batches[0])
    # The blocks are really rematerialised: jax's remat primitive is in the step.
    assert bool(re.search(r"\b(remat2?|checkpoint)\[", str(step))) == remat
  (losses, state), (remat_losses, remat_state) = runs[False], runs[True]
  assert jax.tree.structure(remat_state) == jax.tree.structure(state)
  np.testing.assert_allclose(remat_losses, losses, rtol=1e-6)
  assert_trees_close(remat_state["params"], state["params"], "params", norm_rtol=1e-5)
