"""iBOT and the DINOv2 recipe (`methods/ibot.py`): BEiT's block masks against a NumPy reading
of the algorithm, the masked-patch cross-entropy and the masked-only Sinkhorn centring
against NumPy, the mask token, 8 fake devices == 1 device for both recipes, and one step of
each ImageNet recipe (ViT, local crops; DINOv2's registers, KoLeo, Sinkhorn and separate
heads) on mock TFDS data."""
import importlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from ssl_jax import config_lib, losses
from ssl_jax.data import image_pipeline
from ssl_jax.methods import ibot
from ssl_jax.models import vit
from tests.test_clustering_losses import sinkhorn_reference
from tiny_configs import assert_trees_close, override, steps_on_meshes


def block_mask_reference(rng, rows, columns, target, aspect_ratio):
  """BEiT's Alg. 1 as iBOT's data loader runs it, in NumPy (Python's RNG calls in order)."""
  mask = np.zeros((rows, columns), bool)
  log_ratio = (np.log(aspect_ratio[0]), np.log(aspect_ratio[1]))
  count = 0
  while count < target:
    remaining = target - count
    added = 0
    for _ in range(10):
      low = (min(rows, columns) // 3) ** 2
      area = low + (remaining - low) * rng.random()  # Python's random.uniform(low, remaining)
      ratio = np.exp(rng.uniform(*log_ratio))
      height = int(round(np.sqrt(area * ratio)))
      width = int(round(np.sqrt(area / ratio)))
      if width < columns and height < rows:
        top = rng.integers(0, rows - height + 1)
        left = rng.integers(0, columns - width + 1)
        new = height * width - mask[top:top + height, left:left + width].sum()
        if 0 < new <= remaining:
          mask[top:top + height, left:left + width] = True
          added = new
      if added > 0:
        break
    if added == 0:
      break
    count += added
  return mask.reshape(-1)


def _statistics(masks, grid):
  masks = np.asarray(masks).reshape(len(masks), grid, grid)
  counts = masks.sum(axis=(1, 2))
  rows = masks.any(axis=2).sum(axis=1)
  return counts, rows


@pytest.mark.parametrize("grid,ratio", [(14, 0.3), (14, 0.5), (4, 0.5)])
def test_block_masks_follow_beits_algorithm(grid, ratio):
  """Never more than the target; the distribution of the masked count and of the rows the
  blocks cover matches the NumPy reference's (2000 draws each)."""
  target = ratio * grid * grid
  draw = jax.jit(jax.vmap(lambda key: ibot.block_mask(key, grid, grid, jnp.float32(target),
                                                      (0.3, 1 / 0.3))))
  ours = draw(jax.random.split(jax.random.PRNGKey(0), 2000))
  rng = np.random.default_rng(0)
  reference = np.stack([block_mask_reference(rng, grid, grid, target, (0.3, 1 / 0.3))
                        for _ in range(2000)])
  (counts, rows), (ref_counts, ref_rows) = _statistics(ours, grid), _statistics(reference, grid)
  assert counts.max() <= target and ref_counts.max() <= target
  assert counts.mean() == pytest.approx(ref_counts.mean(), rel=0.02)
  assert counts.std() == pytest.approx(ref_counts.std(), rel=0.15, abs=0.3)
  assert rows.mean() == pytest.approx(ref_rows.mean(), rel=0.03)
  assert counts.min() > 0


def test_half_the_views_are_masked_at_10_to_50_percent():
  keys = jax.random.split(jax.random.PRNGKey(1), 4000)
  masks = np.asarray(jax.jit(lambda k: ibot.draw_masks(k, 14, 0.5, (0.1, 0.5), (0.3, 1 / 0.3)))(
      keys))
  fractions = masks.mean(axis=1)
  assert np.mean(fractions == 0) == pytest.approx(0.5, abs=0.03)
  masked = fractions[fractions > 0]
  assert masked.max() <= 0.5 and np.quantile(masked, 0.02) < 0.12
  # ratio uniform in [0.1, 0.5]: the mean masked fraction is just under 0.3 (never over)
  assert 0.25 < masked.mean() <= 0.3


def test_masked_patch_cross_entropy_matches_the_authors_normalisation():
  """Per image: the mean over its masked patches of -sum_k P_t log softmax(s / tau); an
  image without masked patches adds 0; then the mean over the batch."""
  rng = np.random.default_rng(2)
  student = rng.normal(size=(4, 6, 5)).astype(np.float32)
  teacher = rng.dirichlet(np.ones(5), size=(4, 6)).astype(np.float32)
  mask = rng.random((4, 6)) < 0.4
  mask[1] = False
  mask[2, 0] = True
  logits = student / 0.1
  log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(
      -1, keepdims=True)) - logits.max(-1, keepdims=True)
  per_patch = -(teacher * log_probs).sum(-1)
  per_image = [per_patch[i][mask[i]].mean() if mask[i].any() else 0.0 for i in range(4)]
  ours = losses.masked_patch_cross_entropy(jnp.asarray(student), jnp.asarray(teacher),
                                           jnp.asarray(mask), 0.1)
  assert float(ours) == pytest.approx(np.mean(per_image), rel=1e-5)


def test_sinkhorn_on_the_masked_rows_only_equals_sinkhorn_on_those_rows():
  """DINOv2 centres only the masked patch tokens: the weighted form equals the plain
  algorithm run on just those rows."""
  rng = np.random.default_rng(3)
  scores = rng.uniform(-1, 1, size=(40, 7))
  weights = rng.random(40) < 0.3
  ours = np.asarray(losses.sinkhorn_knopp(jnp.asarray(scores, jnp.float32), 0.07, 3,
                                          weights=jnp.asarray(weights)))
  np.testing.assert_allclose(ours[weights], sinkhorn_reference(scores[weights], 0.07, 3),
                             rtol=2e-4, atol=1e-7)
  all_rows = np.asarray(losses.sinkhorn_knopp(jnp.asarray(scores, jnp.float32), 0.07, 3,
                                              weights=jnp.ones(40)))
  np.testing.assert_allclose(all_rows, sinkhorn_reference(scores, 0.07, 3), rtol=2e-4,
                             atol=1e-7)


def test_the_mask_token_replaces_the_masked_patch_embeddings():
  encoder = vit.Encoder(size="tiny", width=16, depth=1, num_heads=2, mlp_dim=32, patch_size=2,
                        image_size=8, posemb="sincos2d", mask_token=True)
  images = jax.random.normal(jax.random.PRNGKey(4), (2, 8, 8, 1))
  variables = encoder.init(jax.random.PRNGKey(5), images)
  token = jnp.arange(16, dtype=jnp.float32) / 10
  variables = {"params": {**variables["params"], "mask_token": token.reshape(1, 1, 16)}}
  mask = jnp.zeros((2, 16), bool).at[0, 3].set(True).at[1, 10].set(True)
  plain = encoder.apply(variables, images, method="embed")
  masked = encoder.apply(variables, images, patch_mask=mask, method="embed")
  positions = vit.sincos_2d_posemb(4, 16)
  np.testing.assert_allclose(masked[0, 1 + 3], token + positions[3], rtol=1e-6)
  np.testing.assert_allclose(masked[1, 1 + 10], token + positions[10], rtol=1e-6)
  unmasked = np.ones((2, 17), bool)
  unmasked[0, 4] = unmasked[1, 11] = False
  np.testing.assert_allclose(np.asarray(masked)[unmasked], np.asarray(plain)[unmasked])


LENGTH = config_lib.TrainingLength(steps_per_epoch=10, total_steps=100, schedule_steps=100)
_TINY = {"encoder.width": 32, "encoder.depth": 1, "encoder.num_heads": 2,
         "encoder.mlp_dim": 64, "head.hidden_dim": 32, "head.bottleneck_dim": 16,
         "head.output_dim": 64, "data.local_views": 2}


def _tiny(module, data_dir, arg="digits", **dotted):
  config = importlib.import_module(f"configs.{module}").get_config(arg)
  config.unlock()
  return override(config, **{
      "batch_size": 32, "total_steps": 6, "data.data_dir": data_dir, "evaluate_at_end": False,
      "optimizer.name": "sgd", "optimizer.lr": 0.1, "optimizer.weight_decay": 1e-4,
      "optimizer.warmup_steps": 20, **_TINY, **dotted})


def test_sharded_step_equals_single_device(tmp_path_factory):
  """3 SGD steps of the DINOv2 recipe on 8 devices ("data:2,fsdp:4") equal 3 on 1: the masks
  (drawn per example), the Sinkhorn codes of the CLS and masked patch tokens, and KoLeo's
  neighbours span the global batch. (iBOT's running centres are DINO's `update_center`, whose
  sharded step tests/test_joint_embedding.py checks; iBOT's step runs in the mock-ImageNet
  test below.)"""
  assert jax.device_count() == 8, "conftest.py must give 8 fake CPU devices"
  module = "dinov2"
  config = _tiny(module, str(tmp_path_factory.mktemp("tensorflow_datasets")))
  batches = image_pipeline.train_batches(config, start_step=0, process_index=0, process_count=1)
  batches = [next(batches) for _ in range(3)]
  results = steps_on_meshes(config, batches, (8, 8, 1), LENGTH, sizes=("data:2,fsdp:4", 1))
  (eight, state8), (one, state1) = results["data:2,fsdp:4"], results[1]
  np.testing.assert_allclose(eight, one, rtol=1e-4)
  assert one[2] != one[0]
  assert_trees_close(state8["params"], state1["params"], "params", norm_rtol=1e-3)
  assert_trees_close(state8["extra"], state1["extra"], "extra", norm_rtol=1e-3)
  model, extra = state1["params"]["model"], state1["extra"]
  assert model["encoder"]["registers"].shape == (1, 4, 32)
  assert "patch_head" in model and "center" not in extra


@pytest.mark.parametrize("module", ["ibot", "dinov2"])
def test_one_step_of_the_imagenet_recipe_on_mock_tfds(module, tmp_path):
  """The ImageNet recipe (ViT, drop path, global + local crops at another resolution, masks;
  DINOv2's registers, KoLeo, Sinkhorn centring, separate heads) shrunk to 32/16 px and a
  1-block ViT."""
  from ssl_jax import train  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f"configs.{module}").get_config("imagenet2012,runlocal=True")
  config.unlock()
  override(config, total_steps=1, evaluate_at_end=False, batch_size=8, mesh="data:1")
  override(config, **{
      "data.image_size": 32, "data.eval_resize": 36, "data.local_image_size": 16,
      "data.local_views": 2, "encoder.image_size": 32, "encoder.patch_size": 8,
      "encoder.width": 32, "encoder.depth": 1, "encoder.num_heads": 2, "encoder.mlp_dim": 64,
      "head.hidden_dim": 64, "head.bottleneck_dim": 16, "head.output_dim": 128})
  with tfds.testing.mock_data(num_examples=16):
    state = train.run(config, str(tmp_path / module))
  assert int(state["step"]) == 1
  row = json.loads(open(tmp_path / module / "metrics.jsonl").readline())
  assert np.isfinite(row["loss"]) and np.isfinite(row["patch_loss"])
  assert row["teacher_temperature"] == pytest.approx(0.04)
  assert ("koleo" in row) == (module == "dinov2")
  assert (("patch_center" in state["extra"]) == (module == "ibot")
          and ("patch_head" in state["params"]["model"]) == (module == "dinov2"))
