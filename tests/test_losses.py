"""NT-Xent against a NumPy reference written from SimCLR Eq. 1."""
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import losses


def nt_xent_reference(z_a, z_b, temperature):
  """Literal Eq. 1: l(i,j) = -log(exp(s_ij/t) / sum_{k != i} exp(s_ik/t)), mean over 2N anchors."""
  z = np.concatenate([z_a, z_b]).astype(np.float64)
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  n = len(z_a)
  total = 0.0
  for i in range(2 * n):
    j = (i + n) % (2 * n)
    sims = np.array([z[i] @ z[k] / temperature for k in range(2 * n)])
    denominator = sum(np.exp(sims[k]) for k in range(2 * n) if k != i)
    total += -np.log(np.exp(sims[j]) / denominator)
  return total / (2 * n)


@pytest.mark.parametrize("n,dim,temperature", [(4, 8, 0.5), (16, 32, 0.1), (7, 3, 1.0)])
def test_nt_xent_matches_numpy_reference(n, dim, temperature):
  rng = np.random.default_rng(n)
  z_a, z_b = rng.normal(size=(n, dim)), rng.normal(size=(n, dim))
  ours = float(losses.nt_xent(jnp.asarray(z_a), jnp.asarray(z_b), temperature))
  np.testing.assert_allclose(ours, nt_xent_reference(z_a, z_b, temperature), rtol=1e-5)


def test_nt_xent_is_low_for_aligned_views_and_scale_invariant():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(32, 16))
  aligned = float(losses.nt_xent(jnp.asarray(z), jnp.asarray(3.0 * z), 0.1))
  shuffled = float(losses.nt_xent(jnp.asarray(z), jnp.asarray(rng.permutation(z)), 0.1))
  np.testing.assert_allclose(aligned, nt_xent_reference(z, z, 0.1), rtol=1e-5)
  assert aligned < shuffled


def test_contrastive_accuracy_counts_positive_ranked_first():
  z = np.eye(4, 8)
  logits, labels = losses.nt_xent_logits(jnp.asarray(z), jnp.asarray(z), 0.1)
  assert float(losses.top1_accuracy(logits, labels)) == 1.0
  logits, labels = losses.nt_xent_logits(jnp.asarray(z), jnp.asarray(z[::-1]), 0.1)
  assert float(losses.top1_accuracy(logits, labels)) == 0.0
