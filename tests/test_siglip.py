"""SigLIP: the pairwise sigmoid loss against a NumPy reading of the paper's Alg. 1; its ring
form (text blocks passed around the devices) equal to the dense all-pairs loss, gradients and
in-batch accuracies on 8 fake devices; a sharded training step equal to a single-device one
(the mock coco_captions step is in tests/test_clip.py; the evaluation is CLIP's, shared
through `methods.clip.image_text_method`)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import siglip as siglip_config
from ssl_jax import config_lib, losses, methods, parallel, train
from tests.test_clip import _tiny, caption_batches, data_dir  # pylint: disable=unused-import  (fixture)
from tests.tiny_configs import assert_trees_close, host_copy


def _reference_sigmoid_loss(images, texts, t_prime, b):
  """Alg. 1 in NumPy: normalise, logits = <x, y> * exp(t') + b, labels 2 * eye(n) - 1,
  l = -sum(log_sigmoid(labels * logits)) / n."""
  images = images / np.linalg.norm(images, axis=1, keepdims=True)
  texts = texts / np.linalg.norm(texts, axis=1, keepdims=True)
  logits = images @ texts.T * np.exp(t_prime) + b
  labels = 2 * np.eye(len(images)) - 1
  return -np.sum(-np.logaddexp(0.0, -labels * logits)) / len(images)


def _pairs(n=32, d=6, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(n, d)).astype(np.float32)
  return images, (images + 0.7 * rng.normal(size=(n, d))).astype(np.float32)


@pytest.mark.parametrize("t_prime,b", [(np.log(10.0), -10.0), (np.log(100.0), -5.0),
                                       (0.0, 0.0), (np.log(300.0), 2.0)])
def test_sigmoid_loss_matches_the_papers_algorithm(t_prime, b):
  images, texts = _pairs()
  value, logits = losses.sigmoid_pair_loss(jnp.asarray(images), jnp.asarray(texts),
                                           jnp.float32(t_prime), jnp.float32(b))
  assert float(value) == pytest.approx(_reference_sigmoid_loss(images, texts, t_prime, b),
                                       rel=1e-5)
  assert logits.shape == (32, 32)


@pytest.mark.parametrize("mesh", ["data:2,fsdp:4", "data:8"])
def test_the_ring_equals_the_dense_loss_on_8_devices(mesh):
  """Loss, gradients (embeddings, t', b) and both in-batch accuracies."""
  assert jax.device_count() == 8, "conftest.py must give 8 fake CPU devices"
  mesh = parallel.make_mesh(mesh)
  images, texts = _pairs()
  t_prime, b = jnp.float32(np.log(10.0)), jnp.float32(-10.0)
  sharding = parallel.batch_sharded(mesh)

  def dense(*args):
    return losses.sigmoid_pair_loss(*args)[0]

  def ring(*args):
    return losses.sigmoid_pair_loss_ring(*args, mesh)[0]

  args = (jnp.asarray(images), jnp.asarray(texts), t_prime, b)
  sharded = (jax.device_put(args[0], sharding), jax.device_put(args[1], sharding), t_prime, b)
  assert float(jax.jit(ring)(*sharded)) == pytest.approx(float(dense(*args)), rel=1e-6)
  for got, want in zip(jax.jit(jax.grad(ring, argnums=(0, 1, 2, 3)))(*sharded),
                       jax.grad(dense, argnums=(0, 1, 2, 3))(*args)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  _, logits = losses.sigmoid_pair_loss(*args)
  positives = np.diag(logits)
  negatives = np.where(np.eye(32, dtype=bool), -np.inf, logits)
  _, accuracy = jax.jit(lambda *a: losses.sigmoid_pair_loss_ring(*a, mesh))(*sharded)
  assert float(accuracy["image_to_text_accuracy"]) == np.mean(positives > negatives.max(1))
  assert float(accuracy["text_to_image_accuracy"]) == np.mean(positives > negatives.max(0))
  assert 0 < float(accuracy["text_to_image_accuracy"]) < 1


def test_sharded_step_equals_single_device(data_dir):
  """Two SGD steps of the tiny towers: the ring over 8 devices (the method builds it on
  config.mesh, the trainer's mesh) against one device."""
  results, initial = {}, None
  for mesh in ("data:1", "data:2,fsdp:4"):
    config = _tiny(data_dir, "digits,runlocal=True", siglip_config, mesh=mesh,
                   **{"optimizer.name": "sgd", "optimizer.lr": 0.1})
    length = config_lib.training_length(config, 5028)
    trainer = train.Trainer(config, methods.build(config, length), parallel.make_mesh(mesh),
                            (16, 16, 3), 10, length)
    initial = initial if initial is not None else host_copy(trainer.create_state(config.seed))
    state, seen = jax.device_put(host_copy(initial), trainer.state_shardings), []
    for batch in caption_batches():
      state, measurements = trainer.train_step(state, parallel.global_batch(batch, trainer.mesh))
      seen.append(float(measurements["loss"]))
    results[mesh] = (seen, jax.device_get(state))
  (one, state1), (eight, state8) = results["data:1"], results["data:2,fsdp:4"]
  np.testing.assert_allclose(eight, one, rtol=1e-4)
  assert one[1] != one[0]
  assert_trees_close(state8["params"], state1["params"], "params")
  assert float(state1["params"]["model"]["logit_bias"]) != -10.0  # b is learned
