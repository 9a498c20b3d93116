"""LARS excludes biases and norm parameters from weight decay and the trust ratio; schedule."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ssl_jax import optimizers


def lars_config(**overrides):
  c = dict(name="lars", lr=1.0, lr_scaling="none", weight_decay=0.1, momentum=0.0,
           trust_coefficient=0.001, b1=0.9, b2=0.999, grad_clip_norm=0.0, end_lr_factor=0.0)
  c.update(overrides)
  return ml_collections.ConfigDict(c)


def test_lars_masks_biases_and_norm_parameters():
  params = {"dense": {"kernel": jnp.full((3, 4), 2.0), "bias": jnp.full((4,), 2.0)},
            "bn": {"scale": jnp.full((4,), 2.0)}}
  grads = jax.tree.map(lambda p: jnp.full(p.shape, 0.5), params)
  lr = 0.1
  tx = optimizers.build(lars_config(), optax.constant_schedule(lr))
  updates, _ = tx.update(grads, tx.init(params), params)

  # 1-D leaves: plain SGD step, no decay, no trust ratio.
  np.testing.assert_allclose(updates["dense"]["bias"], -lr * 0.5, rtol=1e-6)
  np.testing.assert_allclose(updates["bn"]["scale"], -lr * 0.5, rtol=1e-6)
  # Kernel: g + wd * w, scaled by trust ratio eta * ||w|| / ||g + wd * w||.
  w, g = np.full((3, 4), 2.0), np.full((3, 4), 0.5)
  decayed = g + 0.1 * w
  trust = 0.001 * np.linalg.norm(w) / np.linalg.norm(decayed)
  np.testing.assert_allclose(updates["dense"]["kernel"], -lr * trust * decayed, rtol=1e-5)


def test_decay_mask_selects_kernels_only():
  params = {"conv": {"kernel": jnp.ones((3, 3, 1, 8))}, "bn": {"bias": jnp.ones(8)}}
  assert optimizers.decay_mask(params) == {"conv": {"kernel": True}, "bn": {"bias": False}}


def test_warmup_cosine_and_batch_scaling():
  schedule = optimizers.warmup_cosine(peak=1.2, warmup_steps=10, total_steps=110)
  np.testing.assert_allclose(schedule(0), 0.0)
  np.testing.assert_allclose(schedule(5), 0.6, rtol=1e-6)
  np.testing.assert_allclose(schedule(10), 1.2, rtol=1e-6)
  np.testing.assert_allclose(schedule(60), 0.6, rtol=1e-5)  # half-way through the cosine
  np.testing.assert_allclose(schedule(110), 0.0, atol=1e-7)
  assert optimizers.peak_learning_rate(lars_config(lr=0.3, lr_scaling="linear"), 4096) == 0.3 * 16
  np.testing.assert_allclose(
      optimizers.peak_learning_rate(lars_config(lr=0.075, lr_scaling="sqrt"), 4096), 0.075 * 64)


def test_a_warmup_longer_than_the_run_is_a_warning_and_ramps_linearly():
  """A smoke run of a recipe (4 steps of a 50-step warm-up) trains on the warm-up's ramp."""
  assert not optimizers.warn_if_warmup_outlasts(warmup_steps=4, total_steps=4)
  assert optimizers.warn_if_warmup_outlasts(warmup_steps=50, total_steps=4)
  schedule = optimizers.warmup_cosine(peak=1.0, warmup_steps=50, total_steps=4)
  np.testing.assert_allclose([schedule(s) for s in range(4)], [0.0, 0.02, 0.04, 0.06],
                             rtol=1e-6)
