"""Gradient accumulation (`config.grad_accum_steps`, `ssl_jax.accumulation`) and the run-wide
network policy (`config.precision`, `ssl_jax.models.policy`).

Accumulated steps equal full-batch steps: per-example losses (MAE on an FSDP mesh, the
masked LM weighted by its predicted tokens) and, by gradient caching, contrastive losses whose
examples meet only as embeddings (CLIP and MoCo v3 with ViT towers). Losses that accumulation
would change are refused with one line. bfloat16 computes in bfloat16 with float32 master
weights and stays close to float32. SGD throughout the equality tests, so that float
reassociation is not amplified by Adam's normalisation of near-zero gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import clip as clip_config
from configs import rotation as rotation_config
from ssl_jax import accumulation, config_lib, methods, parallel, train
from ssl_jax.errors import UserError
from ssl_jax.models import policy
from ssl_jax.models.heads import MLPHead
from test_language_methods import LENGTH_TOKENS, text_batch, text_config
from test_mae import tiny_mae
from tiny_configs import assert_trees_close, override, steps_on_meshes, tiny_method

LENGTH = config_lib.TrainingLength(steps_per_epoch=10, total_steps=100, schedule_steps=100)
SGD = {"optimizer.name": "sgd", "optimizer.weight_decay": 1e-4, "optimizer.lr": 0.1,
       "fsdp_min_size": 0}
TINY_VIT = {"name": "vit", "size": "tiny", "width": 32, "depth": 1, "num_heads": 2,
            "mlp_dim": 64}


def image_batches(views: int, shape=(8, 8, 1), size: int = 32) -> list[dict[str, np.ndarray]]:
  rng = np.random.default_rng(0)
  return [{"views": rng.integers(0, 256, (size, views) + shape, np.uint8),
           "label": rng.integers(0, 10, (size,), np.int32)} for _ in range(3)]


def assert_accumulated_equals_full_batch(config, batches, shape, mesh=1, steps=4, **tolerance):
  """3 steps with `steps` microbatches on `mesh` against 3 full-batch steps on one device,
  from the same initial state."""
  full = steps_on_meshes(config, batches, shape, LENGTH, sizes=(1,))[1]
  accumulated = override(config.copy_and_resolve_references(), grad_accum_steps=steps)
  micro = steps_on_meshes(accumulated, batches, shape, LENGTH, sizes=(mesh,))[mesh]
  (losses, state), (micro_losses, micro_state) = full, micro
  assert losses[-1] != losses[0], "the steps did not change the parameters"
  np.testing.assert_allclose(micro_losses, losses, rtol=tolerance.pop("loss_rtol", 1e-5))
  for part in ("params", "extra"):
    assert_trees_close(micro_state[part], state[part], part, **tolerance)


def test_microbatches_take_every_kth_example_and_merge_back():
  mesh = parallel.make_mesh(8)
  batch = {"x": jnp.arange(64).reshape(32, 2), "y": jnp.arange(32)}
  parts = accumulation.split(batch, 4, mesh)
  assert parts["x"].shape == (4, 8, 2)
  np.testing.assert_array_equal(parts["y"][1], np.arange(1, 32, 4))
  merged = accumulation.merge(parts)
  for key in batch:
    np.testing.assert_array_equal(merged[key], batch[key])


def test_mae_accumulated_on_an_fsdp_mesh_equals_the_full_batch():
  """The per-image masks come from per-example keys, so 4 microbatches of 8 on
  data:2,fsdp:4 draw the masks of the whole batch on one device."""
  config = tiny_mae(**SGD)
  assert_accumulated_equals_full_batch(config, image_batches(1), (8, 8, 1),
                                       mesh="data:2,fsdp:4")


def test_masked_lm_accumulates_weighted_by_predicted_tokens():
  """Rows select different numbers of tokens: microbatches weighted equally would not give
  the batch's token mean; weighted by `StepOutput.weight` they do."""
  config = text_config("mlm", **SGD, **{"mlm.nsp": False, "mlm.select_rate": 0.3})
  batches = [text_batch(seed) for seed in range(3)]
  assert_accumulated_equals_full_batch(config, batches, (LENGTH_TOKENS,))


def _clip_with_vit(tmp_path):
  config = clip_config.get_config("digits,runlocal=True")
  config.unlock()
  config.encoder = dict(TINY_VIT, patch_size=4, image_size=16)
  return override(config, **SGD, **{"data.data_dir": str(tmp_path), "batch_size": 16,
                                    "online_probe.enabled": True})


def _caption_batches():
  rng = np.random.default_rng(0)
  tokens = rng.integers(5, 300, size=(3, 16, 24)).astype(np.int32)
  attention = (np.arange(24)[None, None, :] < rng.integers(3, 25, (3, 16))[..., None])
  return [{"views": rng.integers(0, 256, size=(16, 1, 16, 16, 3)).astype(np.uint8),
           "tokens": tokens[i] * attention[i], "attention_mask": attention[i].astype(np.int32),
           "label": rng.integers(0, 10, size=(16,)).astype(np.int32)} for i in range(3)]


def test_clip_accumulated_by_gradient_caching_equals_the_full_batch(tmp_path):
  """Every caption of the 16 is a negative for every image, across the 4 microbatches: the
  cached embeddings' gradient carries that coupling exactly (and the learned temperature's
  gradient comes from the whole batch's logits)."""
  assert_accumulated_equals_full_batch(_clip_with_vit(tmp_path), _caption_batches(),
                                       (16, 16, 3))


def test_moco_v3_accumulated_by_gradient_caching_equals_the_full_batch(tmp_path):
  """A ViT encoder per microbatch; the projector and predictor, with their BatchNorm, and the
  momentum encoder's heads on the whole batch's embeddings."""
  config = tiny_method("moco_v3", str(tmp_path), **SGD)
  config.encoder = dict(TINY_VIT, patch_size=2, image_size=8)
  assert_accumulated_equals_full_batch(config, image_batches(2), (8, 8, 1), norm_rtol=1e-4)


def test_the_planner_shows_accumulation_lowering_temporaries():
  """`experiments/plan.py --grad_accum_steps=4` holds a quarter of the activations at a time:
  XLA:CPU's temporaries per device fall (measured 10.2 -> 3.2 MB at batch 256), the state
  does not change."""
  from experiments import plan  # pylint: disable=g-import-not-at-top
  tiny = ["encoder.width=32", "encoder.depth=1", "encoder.mlp_dim=64", "encoder.num_heads=2",
          "decoder.width=16", "decoder.depth=1", "decoder.mlp_dim=32", "decoder.num_heads=2"]
  reports = {steps: plan.plan(plan.parse_args(
      ["--config=configs/mae.py:digits", "--mesh=data:8", "--batch_size=128",
       f"--grad_accum_steps={steps}", "--precision=bfloat16", *[f"--set={s}" for s in tiny]]))
      for steps in (1, 4)}
  one, four = reports[1]["per_device_bytes"], reports[4]["per_device_bytes"]
  assert reports[4]["grad_accum_steps"] == 4 and reports[4]["precision"] == "bfloat16"
  assert four["temporaries"] < 0.6 * one["temporaries"]
  assert four["state"] == one["state"]


def _trainer(config, shape=(8, 8, 1)):
  return train.Trainer(config, methods.build(config, LENGTH), parallel.make_mesh(1), shape, 10,
                       LENGTH)


@pytest.mark.parametrize("case,cause", [
    ("simclr", "grad_accum_steps=2 is refused for simclr: the other images of the batch are"),
    ("moco_v3 convnet", "refused for moco: its encoder has BatchNorm"),
    ("rotation convnet", "refused for rotation: its networks have BatchNorm"),
    ("mlm with nsp", "with mlm.nsp its loss adds a mean over sentence pairs"),
    ("uneven microbatches", "must split into grad_accum_steps (3) microbatches"),
])
def test_accumulation_that_would_change_the_objective_is_refused(case, cause, tmp_path):
  if case == "simclr":
    config, shape = tiny_method("simclr", str(tmp_path)), (8, 8, 1)
  elif case == "moco_v3 convnet":
    config, shape = tiny_method("moco_v3", str(tmp_path)), (8, 8, 1)
  elif case == "rotation convnet":
    config, shape = rotation_config.get_config("digits"), (8, 8, 1)
    config.unlock()
  elif case == "mlm with nsp":
    config, shape = text_config("mlm"), (LENGTH_TOKENS,)
  else:
    config, shape = tiny_mae(), (8, 8, 1)
  override(config, batch_size=32, grad_accum_steps=3 if case == "uneven microbatches" else 2)
  with pytest.raises(UserError, match=cause.replace("(", r"\(").replace(")", r"\)")):
    _trainer(config, shape)


def test_policy_reaches_every_network_built_under_it_and_a_section_overrides_it():
  config = tiny_mae(precision="bfloat16", remat="blocks")
  with policy.applied(config):
    head, own = MLPHead(4, 4), MLPHead(4, 4, dtype="float32")
  assert (head.dtype, own.dtype) == ("bfloat16", "float32")
  assert MLPHead(4, 4).dtype == "float32"  # outside a policy: float32, as before
  for key, value in (("precision", "float16"), ("remat", "all")):
    with pytest.raises(UserError, match=f"config.{key} must be one of"):
      methods.build(override(tiny_mae(), **{key: value}), LENGTH)


def test_bfloat16_computes_in_bfloat16_with_float32_master_weights():
  """The policy turns MAE's encoder and decoder to bfloat16 (the step's program multiplies
  bfloat16 matrices); parameters and Adam moments stay float32; 3 steps stay within 2% of
  float32's losses (measured: 0.09-0.20% on these 3 steps)."""
  batches, shape = image_batches(1), (8, 8, 1)
  runs = {}
  for precision in ("float32", "bfloat16"):
    config = tiny_mae(precision=precision)
    runs[precision] = steps_on_meshes(config, batches, shape, LENGTH, sizes=(1,))[1]
    trainer = _trainer(config)
    program = str(jax.make_jaxpr(trainer._train_step)(  # pylint: disable=protected-access
        trainer.abstract_state, batches[0]))
    assert ("bf16[" in program) == (precision == "bfloat16")
  losses, state = runs["bfloat16"]
  assert np.all(np.isfinite(losses))
  for part in ("params", "opt_state"):
    floats = [x for x in jax.tree.leaves(state[part]) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and all(x.dtype == jnp.float32 for x in floats)
  np.testing.assert_allclose(losses, runs["float32"][0], rtol=0.02)
