"""Joint-embedding losses, momentum schedules, the MoCo queue and DINO's centre, against NumPy
references written from the papers' equations (double precision, explicit loops)."""
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import ema, losses
from ssl_jax.methods import dino, moco


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _log_softmax(x):
  x = x - x.max(axis=-1, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def test_info_nce_matches_moco_eq_1():
  """L_q = -log exp(q.k+/t) / (exp(q.k+/t) + sum_{k-} exp(q.k-/t)), mean over queries."""
  rng = np.random.default_rng(0)
  q, k, queue = rng.normal(size=(6, 8)), rng.normal(size=(6, 8)), rng.normal(size=(20, 8))
  t = 0.2
  expected = 0.0
  for i in range(6):
    positive = np.exp(_unit(q[i]) @ _unit(k[i]) / t)
    negatives = sum(np.exp(_unit(q[i]) @ _unit(n) / t) for n in queue)
    expected += -np.log(positive / (positive + negatives)) / 6
  ours = losses.info_nce(jnp.asarray(q), jnp.asarray(k), jnp.asarray(queue), t)
  np.testing.assert_allclose(float(ours), expected, rtol=1e-5)


def test_batch_info_nce_matches_moco_v3_ctr():
  """MoCo v3 Alg. 1: ctr(q, k) = CE(q k^T / t, arange) on normalised q, k (before the 2t)."""
  rng = np.random.default_rng(1)
  q, k, t = rng.normal(size=(5, 4)), rng.normal(size=(5, 4)), 0.5
  logits = _unit(q) @ _unit(k).T / t
  expected = -np.mean([_log_softmax(logits[i])[i] for i in range(5)])
  np.testing.assert_allclose(float(losses.batch_info_nce(jnp.asarray(q), jnp.asarray(k), t)),
                             expected, rtol=1e-5)


def test_byol_and_simsiam_regression_losses():
  rng = np.random.default_rng(2)
  p, z = rng.normal(size=(7, 5)), rng.normal(size=(7, 5))
  # BYOL Eq. 2: || p / ||p|| - z / ||z|| ||^2, mean over the batch.
  byol = np.mean([np.sum((_unit(p[i]) - _unit(z[i])) ** 2) for i in range(7)])
  np.testing.assert_allclose(float(losses.normalized_mse(jnp.asarray(p), jnp.asarray(z))), byol,
                             rtol=1e-5)
  # SimSiam Eq. 1: D(p, z) = - p / ||p|| . z / ||z||, mean over the batch.
  simsiam = -np.mean([_unit(p[i]) @ _unit(z[i]) for i in range(7)])
  np.testing.assert_allclose(float(losses.negative_cosine(jnp.asarray(p), jnp.asarray(z))),
                             simsiam, rtol=1e-5)
  assert float(losses.normalized_mse(jnp.asarray(p), jnp.asarray(3 * p))) < 1e-6


@pytest.mark.parametrize("lambda_", [0.0051, 0.5])
def test_barlow_twins_matches_eq_1(lambda_):
  rng = np.random.default_rng(3)
  n, d, eps = 16, 6, 1e-5
  z_a, z_b = rng.normal(size=(n, d)) * 3 + 1, rng.normal(size=(n, d))
  za = (z_a - z_a.mean(0)) / np.sqrt(z_a.var(0) + eps)  # BatchNorm without affine
  zb = (z_b - z_b.mean(0)) / np.sqrt(z_b.var(0) + eps)
  c = np.zeros((d, d))
  for i in range(d):
    for j in range(d):
      c[i, j] = sum(za[b, i] * zb[b, j] for b in range(n)) / n
  expected = sum((1 - c[i, i]) ** 2 for i in range(d)) + lambda_ * sum(
      c[i, j] ** 2 for i in range(d) for j in range(d) if i != j)
  ours, ours_c = losses.barlow_twins(jnp.asarray(z_a), jnp.asarray(z_b), lambda_)
  np.testing.assert_allclose(np.asarray(ours_c), c, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(float(ours), expected, rtol=1e-4)
  # Identical views: a perfect diagonal, only the off-diagonal redundancy remains.
  same, c_same = losses.barlow_twins(jnp.asarray(z_a), jnp.asarray(z_a), lambda_)
  np.testing.assert_allclose(np.diag(np.asarray(c_same)), 1.0, atol=1e-4)


def test_vicreg_terms_match_eq_1_to_5():
  rng = np.random.default_rng(4)
  n, d, gamma, eps = 12, 5, 1.0, 1e-4
  z_a, z_b = rng.normal(size=(n, d)) * 0.5, rng.normal(size=(n, d)) * 2

  def variance(z):  # Eq. 1-2: hinge on the regularised (unbiased) standard deviation
    return np.mean([max(0.0, gamma - np.sqrt(np.var(z[:, j], ddof=1) + eps)) for j in range(d)])

  def covariance(z):  # Eq. 3-4: unbiased covariance, squared off-diagonal sum / d
    centred = z - z.mean(0)
    cov = sum(np.outer(centred[i], centred[i]) for i in range(n)) / (n - 1)
    return sum(cov[i, j] ** 2 for i in range(d) for j in range(d) if i != j) / d

  terms = losses.vicreg_terms(jnp.asarray(z_a), jnp.asarray(z_b), gamma=gamma, eps=eps)
  np.testing.assert_allclose(float(terms["invariance"]), np.mean((z_a - z_b) ** 2), rtol=1e-5)
  np.testing.assert_allclose(float(terms["variance"]), variance(z_a) + variance(z_b), rtol=1e-5)
  np.testing.assert_allclose(float(terms["covariance"]), covariance(z_a) + covariance(z_b),
                             rtol=1e-5)


def test_dino_cross_entropy_over_multi_crop_pairs():
  """Alg. 1: sum over teacher (global) crops t and student crops s != t of H(P_t, P_s)."""
  rng = np.random.default_rng(5)
  n, k, tau_s = 4, 9, 0.1
  student = [rng.normal(size=(n, k)) for _ in range(5)]  # 2 global + 3 local crops
  teacher = [np.exp(_log_softmax(rng.normal(size=(n, k)) / 0.04)) for _ in range(2)]
  total, pairs = 0.0, 0
  for t in range(2):
    for s in range(5):
      if s != t:
        total += np.mean(-np.sum(teacher[t] * _log_softmax(student[s] / tau_s), axis=-1))
        pairs += 1
  assert pairs == 8
  ours = losses.dino_cross_entropy([jnp.asarray(x) for x in student],
                                   [jnp.asarray(x) for x in teacher], tau_s)
  np.testing.assert_allclose(float(ours), total / pairs, rtol=1e-5)


def test_normalized_std_is_zero_when_collapsed():
  rng = np.random.default_rng(6)
  z = rng.normal(size=(4096, 16))
  assert float(losses.normalized_std(jnp.asarray(np.ones((8, 16))))) == 0.0
  np.testing.assert_allclose(float(losses.normalized_std(jnp.asarray(z))), 1 / np.sqrt(16),
                             rtol=0.05)


def test_cosine_momentum_schedule_values():
  """BYOL Sec. 3.2: tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2."""
  values = [float(ema.cosine_momentum(k, 100, 0.996)) for k in (0, 25, 50, 100, 150)]
  expected = [1 - 0.004 * (np.cos(np.pi * k / 100) + 1) / 2 for k in (0, 25, 50, 100)] + [1.0]
  np.testing.assert_allclose(values, expected, rtol=1e-7)
  assert values[0] == pytest.approx(0.996) and values[2] == pytest.approx(0.998)
  assert float(ema.cosine_momentum(37, 100, 0.999, 0.999)) == pytest.approx(0.999)  # constant
  np.testing.assert_allclose(float(ema.cosine_momentum(100, 100, 0.99, 0.999)), 0.999)


def test_ema_update_moves_target_towards_online():
  target = {"w": jnp.array([1.0, 2.0]), "b": {"c": jnp.array(0.0)}}
  online = {"w": jnp.array([3.0, 2.0]), "b": {"c": jnp.array(10.0)}}
  updated = ema.ema_update(target, online, 0.9)
  np.testing.assert_allclose(np.asarray(updated["w"]), [1.2, 2.0], rtol=1e-6)
  np.testing.assert_allclose(float(updated["b"]["c"]), 1.0, rtol=1e-6)


def test_moco_queue_is_first_in_first_out():
  queue = jnp.zeros((6, 2))
  pointer = jnp.zeros((), jnp.int32)
  written = []
  for step in range(4):  # 3 keys a step into 6 slots: the oldest block is replaced
    keys = jnp.full((3, 2), float(step + 1))
    queue, pointer = moco.enqueue(queue, pointer, keys)
    written.append(np.asarray(queue)[:, 0].tolist())
  assert written == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 2, 2, 2], [3, 3, 3, 2, 2, 2],
                     [3, 3, 3, 4, 4, 4]]
  assert int(pointer) == 0


def test_dino_centre_update_and_teacher_temperature_warmup():
  """Eq. 4: c <- m c + (1 - m) mean_i g_t(x_i); teacher temperature linear, then constant."""
  rng = np.random.default_rng(7)
  centre, logits = rng.normal(size=(5,)), rng.normal(size=(8, 5))
  ours = dino.update_center(jnp.asarray(centre), jnp.asarray(logits), 0.9)
  np.testing.assert_allclose(np.asarray(ours), 0.9 * centre + 0.1 * logits.mean(0), rtol=1e-6)
  temps = [float(dino.teacher_temperature(s, 30, 0.04, 0.07)) for s in (0, 15, 30, 90)]
  np.testing.assert_allclose(temps, [0.04, 0.055, 0.07, 0.07], rtol=1e-6)
  assert float(dino.teacher_temperature(0, 0, 0.04, 0.07)) == pytest.approx(0.07)
