"""Shared math for SwAV and the DINOv2 recipe (`losses.sinkhorn_knopp`, `losses.koleo`):
against NumPy readings of the papers, on the global batch sharded over 8 fake devices, and
KoLeo on duplicate features (finite loss and gradient)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import losses, parallel


def sinkhorn_reference(scores, epsilon, iterations):
  """SwAV's Alg. 1 in NumPy: Q = exp(scores / eps)^T [K, B], Q /= sum(Q); repeat: rows
  (prototypes) to 1/K, columns (examples) to 1/B; return (B * Q)^T."""
  q = np.exp(np.asarray(scores, np.float64) / epsilon).T
  q /= q.sum()
  k, b = q.shape
  for _ in range(iterations):
    q /= q.sum(axis=1, keepdims=True)
    q /= k
    q /= q.sum(axis=0, keepdims=True)
    q /= b
  return (q * b).T


def koleo_reference(features, eps=1e-8):
  """Sablayrolles et al. 2019, Eq. 5 by brute force: each normalised feature's smallest
  distance to another, -mean(log(sqrt(d^2 + eps^2)))."""
  x = np.asarray(features, np.float64)
  x = x / np.linalg.norm(x, axis=1, keepdims=True)
  distances = np.linalg.norm(x[:, None] - x[None], axis=-1)
  np.fill_diagonal(distances, np.inf)
  nearest = distances.min(axis=1)
  return -np.mean(np.log(np.sqrt(nearest**2 + eps**2)))


@pytest.mark.parametrize("epsilon,iterations", [(0.05, 3), (0.1, 1), (0.5, 10)])
def test_sinkhorn_matches_the_papers_algorithm(epsilon, iterations):
  scores = np.random.default_rng(0).uniform(-1, 1, size=(32, 10))
  q = np.asarray(losses.sinkhorn_knopp(jnp.asarray(scores, jnp.float32), epsilon, iterations))
  np.testing.assert_allclose(q, sinkhorn_reference(scores, epsilon, iterations), rtol=2e-4,
                             atol=1e-7)
  np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=1e-5)  # each example's assignment
  if iterations >= 10:  # near equipartition: each prototype about B / K examples
    np.testing.assert_allclose(q.sum(axis=0), 32 / 10, rtol=1e-2)


def test_sinkhorn_does_not_overflow_on_large_scores():
  scores = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, size=(16, 4)) * 1e3, jnp.float32)
  q = losses.sinkhorn_knopp(scores, 0.05, 3)
  assert bool(jnp.all(jnp.isfinite(q)))


def test_koleo_matches_brute_force_and_survives_duplicates():
  features = np.random.default_rng(2).normal(size=(24, 8)).astype(np.float32)
  assert float(losses.koleo(jnp.asarray(features))) == pytest.approx(koleo_reference(features),
                                                                     rel=1e-5)
  duplicated = features.copy()
  duplicated[5] = duplicated[3]  # the reference code's failure: a zero distance
  duplicated[7] = 2 * duplicated[3]  # the same direction: the same normalised feature
  value, grads = jax.value_and_grad(losses.koleo)(jnp.asarray(duplicated))
  assert np.isfinite(float(value)) and bool(jnp.all(jnp.isfinite(grads)))
  assert float(value) == pytest.approx(koleo_reference(duplicated), rel=1e-5)


@pytest.mark.parametrize("mesh", ["data:8", "data:2,fsdp:4"])
def test_the_global_batch_sharded_over_8_devices_equals_one_device(mesh):
  """Sinkhorn's sums over examples and KoLeo's neighbour search span the whole batch."""
  assert jax.device_count() == 8, "conftest.py must give 8 fake CPU devices"
  mesh = parallel.make_mesh(mesh)
  rng = np.random.default_rng(3)
  scores = jnp.asarray(rng.uniform(-1, 1, size=(32, 10)), jnp.float32)
  features = jnp.asarray(rng.normal(size=(32, 8)), jnp.float32)
  sharding = parallel.batch_sharded(mesh)
  sharded_q = jax.jit(losses.sinkhorn_knopp)(jax.device_put(scores, sharding))
  np.testing.assert_allclose(sharded_q, losses.sinkhorn_knopp(scores), rtol=1e-5, atol=1e-7)
  sharded_koleo, sharded_grad = jax.jit(jax.value_and_grad(losses.koleo))(
      jax.device_put(features, sharding))
  koleo, grad = jax.value_and_grad(losses.koleo)(features)
  assert float(sharded_koleo) == pytest.approx(float(koleo), rel=1e-6)
  np.testing.assert_allclose(sharded_grad, grad, rtol=1e-4, atol=1e-6)
