"""Every joint-embedding method through the one trainer: the sharded step equals the 1-device
step (so batch statistics, queues and centres span the global batch), a short digits run does
not collapse, and each `cifar10` config (and DINO's multi-crop ViT `imagenet2012` config) runs
a step on mock TFDS data."""
import importlib
import json

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from ssl_jax import config_lib, methods, parallel, train
from ssl_jax.data import image_pipeline
from tiny_configs import JOINT_EMBEDDING, assert_trees_close, host_copy, override, tiny_method

SGD_LR = {"vicreg": 0.05}  # VICReg's loss is ~25x larger; at 0.5 plain SGD diverges.
LENGTH = config_lib.TrainingLength(steps_per_epoch=10, total_steps=100, schedule_steps=100)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tensorflow_datasets"))


@pytest.mark.parametrize("name", list(JOINT_EMBEDDING))
def test_sharded_equals_single_device_and_a_short_run_does_not_collapse(name, data_dir):
  """Part 1: 3 steps on 8 devices equal 3 steps on 1 (params, losses, and the `extra` state:
  BatchNorm statistics, EMA targets, MoCo's queue, DINO's centre). Part 2: the 1-device run
  goes on to 100 steps, and SimSiam's collapse monitor (Sec. 4.1, Fig. 2) -- the per-dimension
  std over the batch of the L2-normalised embedding, `embedding_std`, 1/sqrt(d) when spread
  out and 0 when collapsed -- stays above half its value at the first step. SimSiam without
  its stop-gradient fails this check (0.175 -> 0.067 in 100 steps; 0.175 -> 0.175 with it).

  SGD, not the digits recipe's AdamW: Adam turns float rounding noise on parameters whose true
  gradient is 0 (a projector bias followed by BatchNorm) into full-size steps. The 20-step
  warm-up keeps the learning rate of the 3 compared steps small. For DINO the embedding is the
  teacher's output distribution P_t, constant under both of its collapses (uniform, one
  prototype): with the paper's head without BatchNorm and teacher temperature 0.07 instead of
  the digits config's, it falls from 0.018 to 0.001 here (uniform, entropy log K).
  """
  assert jax.device_count() == 8, "conftest.py must give 8 fake CPU devices"
  config = tiny_method(name, data_dir, batch_size=64, **{
      "optimizer.name": "sgd", "optimizer.lr": SGD_LR.get(name, 0.5),
      "optimizer.weight_decay": 1e-4, "optimizer.warmup_steps": 20})
  batches = image_pipeline.train_batches(config, start_step=0, process_index=0, process_count=1)
  batches = [next(batches) for _ in range(100)]
  trainers = {size: train.Trainer(config, methods.build(config, LENGTH),
                                  parallel.make_mesh(size), (8, 8, 1), 10, LENGTH)
              for size in (8, 1)}
  # One initial state for both meshes, run op by op: compiling the jitted init took 3-6 s a
  # method, more than running it eagerly (the same state up to rounding).
  init = trainers[1]._init_state  # pylint: disable=protected-access
  initial = host_copy(init(jax.random.PRNGKey(config.seed)))
  states, seen, first_std = {}, {}, None
  for size, trainer in trainers.items():
    state = jax.device_put(host_copy(initial), trainer.state_shardings)
    seen[size] = []
    for batch in batches[:3]:
      state, measurements = trainer.train_step(state, parallel.global_batch(batch, trainer.mesh))
      seen[size].append(float(measurements["loss"]))
      first_std = first_std if len(seen[size]) > 1 else float(measurements["embedding_std"])
    states[size] = state
  np.testing.assert_allclose(seen[8], seen[1], rtol=1e-4)
  assert seen[1][2] != seen[1][0]  # the steps really changed the parameters
  sharded, single = jax.device_get(states[8]), jax.device_get(states[1])
  # Each leaf as a whole, to 1%: the tiny SimSiam predictor's output bias reaches about 1e8
  # within these 3 SGD steps, where a difference of 250 in one element is rounding. Here the
  # leaves agree to about 1e-6; one CI run (2 xdist workers) saw MoCo v3's first encoder
  # BatchNorm bias 0.3% apart (2.7% in one of its 8 elements), which neither a quiet nor a
  # loaded run here reproduces. The losses of the 3 steps are held to 1e-4 above.
  assert_trees_close(sharded["params"], single["params"], "params", norm_rtol=1e-2)
  assert_trees_close(sharded["extra"], single["extra"], "extra", norm_rtol=1e-2)

  state, trainer = states[1], trainers[1]
  for batch in batches[3:]:
    state, measurements = trainer.train_step(state, parallel.global_batch(batch, trainer.mesh))
  std = float(measurements["embedding_std"])
  assert std > 0.5 * first_std, f"{name}: embedding std fell from {first_std:.4f} to {std:.4f}"


@pytest.mark.parametrize("name", [n for n in JOINT_EMBEDDING if n != "simclr"])
def test_one_step_of_the_cifar10_config_on_mock_tfds(name, tmp_path):
  """The config's data pipeline, augmentation, heads and method settings, with a tiny CNN in
  place of ResNet-18 (whose one step on mock CIFAR-10 is covered by test_train), on one device
  (the sharded step is tested above; orbax's per-device copies of the state cost time)."""
  module, arg, _ = JOINT_EMBEDDING[name]
  arg = arg.replace("digits", "cifar10") + ",runlocal=True"
  config = importlib.import_module(f"configs.{module}").get_config(arg)
  config.unlock()
  override(config, total_steps=1, evaluate_at_end=False, batch_size=8, mesh="data:1",
           encoder={"name": "convnet", "widths": (8, 16)})
  with tfds.testing.mock_data(num_examples=32):
    state = train.run(config, str(tmp_path / name))
  assert int(state["step"]) == 1
  row = json.loads(open(tmp_path / name / "metrics.jsonl").readline())
  assert row["step"] == 1 and np.isfinite(row["loss"])


def test_one_step_of_dino_vit_multicrop_on_mock_imagenet(tmp_path):
  """DINO's ImageNet recipe (ViT, drop path, global + local crops at another resolution,
  local augmentation) shrunk to 32/16 px, 2 local crops and a 1-block ViT (iBOT's and
  DINOv2's ImageNet steps run the same multi-crop pipeline and ViT)."""
  config = importlib.import_module("configs.dino").get_config("imagenet2012,runlocal=True")
  config.unlock()
  override(config, total_steps=1, evaluate_at_end=False, batch_size=8, mesh="data:1")
  override(config, **{
      "data.image_size": 32, "data.eval_resize": 36, "data.local_image_size": 16,
      "data.local_views": 2,
      "encoder.image_size": 32, "encoder.patch_size": 8, "encoder.width": 32,
      "encoder.depth": 1, "encoder.num_heads": 2, "encoder.mlp_dim": 64,
      "head.hidden_dim": 64, "head.bottleneck_dim": 16, "head.output_dim": 128})
  with tfds.testing.mock_data(num_examples=16):
    state = train.run(config, str(tmp_path / "dino"))
  assert int(state["step"]) == 1
  row = json.loads(open(tmp_path / "dino" / "metrics.jsonl").readline())
  # Teacher temperature starts its warm-up at 0.04; the loss is finite.
  assert np.isfinite(row["loss"]) and row["teacher_temperature"] == pytest.approx(0.04)
