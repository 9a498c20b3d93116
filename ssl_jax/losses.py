"""Loss functions shared by several objectives.

Every function here takes arrays over the *global* batch: inside a jit over a sharded batch,
XLA turns the matrix products into cross-device collectives, so the negatives of a
contrastive loss come from every device, as in the papers' large-batch TPU runs.
"""
import jax
import jax.numpy as jnp


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||, eps) along `axis`."""
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), eps * eps))


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example cross-entropy of integer `labels` under `logits` [..., classes]."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]


def nt_xent_logits(z_a: jax.Array, z_b: jax.Array, temperature: float):
  """Similarity logits and positive indices of NT-Xent (Chen et al. 2020, Eq. 1).

  The 2N embeddings of both views are L2-normalised; the logit of pair (i, j) is
  cos(z_i, z_j) / temperature; each example's own entry is masked out, so every anchor has one
  positive (the other view of its image) and 2N - 2 negatives.

  Returns:
    (logits [2N, 2N] with the diagonal at -inf, labels [2N] = index of each anchor's positive).
  """
  n = z_a.shape[0]
  z = l2_normalize(jnp.concatenate([z_a, z_b], axis=0).astype(jnp.float32))
  logits = z @ z.T / temperature
  logits = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, logits)
  labels = jnp.concatenate([jnp.arange(n) + n, jnp.arange(n)])
  return logits, labels


def nt_xent(z_a: jax.Array, z_b: jax.Array, temperature: float) -> jax.Array:
  """NT-Xent (normalised temperature-scaled cross-entropy), SimCLR Eq. 1, averaged over 2N anchors.

  l(i, j) = -log exp(s_ij / t) / sum_{k != i} exp(s_ik / t), and the loss is the mean of
  l(2k-1, 2k) and l(2k, 2k-1) over the N pairs (the paper's L).
  """
  logits, labels = nt_xent_logits(z_a, z_b, temperature)
  return jnp.mean(softmax_cross_entropy(logits, labels))


def top1_accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of rows whose argmax is the label (for contrastive logits: positive ranked first)."""
  return jnp.mean(jnp.argmax(logits, axis=-1) == labels)
