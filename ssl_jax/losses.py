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


def masked_token_sums(logits: jax.Array, targets: jax.Array, weights: jax.Array
                      ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(sum of cross-entropies, number of correct argmax predictions, sum of weights) over the
  positions of `logits` [..., vocab] that `weights` (same shape as `targets`, 1 = counted)
  selects: the per-position terms of a token-prediction objective (BERT's masked positions,
  Devlin et al. 2019, Sec. 3.1; GPT's next tokens, Radford et al. 2018, Eq. 1), kept as sums so
  that a held-out evaluation can add them over batches before dividing.
  """
  weights = weights.astype(jnp.float32)
  nll = jnp.sum(softmax_cross_entropy(logits, targets) * weights)
  correct = jnp.sum((jnp.argmax(logits, axis=-1) == targets) * weights)
  return nll, correct, jnp.sum(weights)


def masked_cross_entropy(logits: jax.Array, targets: jax.Array, weights: jax.Array
                         ) -> jax.Array:
  """Mean cross-entropy of integer `targets` over the positions `weights` selects, in the
  global batch (0 when none is selected, rather than NaN)."""
  nll, _, count = masked_token_sums(logits, targets, weights)
  return nll / jnp.maximum(count, 1.0)


def masked_accuracy(logits: jax.Array, targets: jax.Array, weights: jax.Array) -> jax.Array:
  """Fraction of the positions `weights` selects whose argmax is the target (0 when none)."""
  _, correct, count = masked_token_sums(logits, targets, weights)
  return correct / jnp.maximum(count, 1.0)


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


def info_nce(query: jax.Array, positive: jax.Array, negatives: jax.Array,
             temperature: float) -> jax.Array:
  """InfoNCE with a shared set of negatives: MoCo's Eq. 1 (He et al. 2020).

  L_q = -log exp(q.k+ / t) / (exp(q.k+ / t) + sum_k- exp(q.k- / t)) on L2-normalised vectors,
  averaged over the queries; `negatives` [M, D] is MoCo's queue of keys from earlier batches.
  """
  q = l2_normalize(query.astype(jnp.float32))
  k = l2_normalize(positive.astype(jnp.float32))
  neg = l2_normalize(negatives.astype(jnp.float32))
  logits = jnp.concatenate([jnp.sum(q * k, axis=-1, keepdims=True), q @ neg.T], axis=1)
  labels = jnp.zeros((q.shape[0],), jnp.int32)
  return jnp.mean(softmax_cross_entropy(logits / temperature, labels))


def batch_info_nce_logits(query: jax.Array, keys: jax.Array, temperature: float) -> jax.Array:
  """cos(q_i, k_j) / t over the global batch: row i's positive is column i, the rest negatives."""
  q = l2_normalize(query.astype(jnp.float32))
  k = l2_normalize(keys.astype(jnp.float32))
  return q @ k.T / temperature


def batch_info_nce(query: jax.Array, keys: jax.Array, temperature: float) -> jax.Array:
  """InfoNCE whose negatives are the other keys of the batch (MoCo v3 Alg. 1, CLIP's rows).

  Cross-entropy of logits q_i . k_j / t with the target j = i, averaged over queries. MoCo v3
  multiplies this by 2t (`moco` does, as in its pseudo-code); CLIP averages both directions.
  """
  logits = batch_info_nce_logits(query, keys, temperature)
  return jnp.mean(softmax_cross_entropy(logits, jnp.arange(logits.shape[0])))


# CLIP's bound on its learned logit scale exp(t) (Radford et al. 2021, Sec. 2.5: "clipped to
# prevent scaling the logits by more than 100").
CLIP_MAX_LOGIT_SCALE = 100.0


def clip_logit_scale(log_scale: jax.Array) -> jax.Array:
  """exp(t) of CLIP's learned log-scale t (the inverse temperature), at most 100."""
  return jnp.exp(jnp.minimum(log_scale.astype(jnp.float32), jnp.log(CLIP_MAX_LOGIT_SCALE)))


def clip_info_nce(image_embeddings: jax.Array, text_embeddings: jax.Array,
                  log_scale: jax.Array) -> tuple[jax.Array, jax.Array]:
  """CLIP's symmetric InfoNCE over the global batch (Radford et al. 2021, Fig. 3).

  Both embeddings [N, D] are L2-normalised; logits_ij = exp(t) <I_i, T_j> with exp(t)
  clipped at 100 (`clip_logit_scale`); image i's positive is text i and the other N - 1
  texts are its negatives, and likewise for each text over the images. The loss is the mean
  of the two cross-entropies (rows: image -> text, columns: text -> image). Returns (loss,
  logits [N, N] with images on the rows).
  """
  images = l2_normalize(image_embeddings.astype(jnp.float32))
  texts = l2_normalize(text_embeddings.astype(jnp.float32))
  logits = clip_logit_scale(log_scale) * images @ texts.T
  labels = jnp.arange(logits.shape[0])
  image_to_text = jnp.mean(softmax_cross_entropy(logits, labels))
  text_to_image = jnp.mean(softmax_cross_entropy(logits.T, labels))
  return (image_to_text + text_to_image) / 2, logits


def sigmoid_pair_loss(image_embeddings: jax.Array, text_embeddings: jax.Array,
                      log_scale: jax.Array, bias: jax.Array) -> tuple[jax.Array, jax.Array]:
  """SigLIP's pairwise sigmoid loss over all pairs of the global batch (Zhai et al. 2023,
  "Sigmoid Loss for Language Image Pre-Training", Eq. 2, Alg. 1):

    L = -1/N sum_i sum_j log sigmoid(z_ij (exp(t') <x_i, y_j> + b)),

  z_ij = 1 for a matching pair (i = j) and -1 otherwise; x, y L2-normalised; t' and b are
  learned (no clipping of exp(t')). Every pair is its own binary problem, so no softmax
  normalises over the batch. Returns (loss, logits [N, N], images on the rows). This dense
  form materialises the N x N logits; `sigmoid_pair_loss_ring` computes the same number in
  blocks of the local batch.
  """
  images = l2_normalize(image_embeddings.astype(jnp.float32))
  texts = l2_normalize(text_embeddings.astype(jnp.float32))
  logits = jnp.exp(log_scale) * images @ texts.T + bias
  signs = 2.0 * jnp.eye(logits.shape[0]) - 1.0
  return -jnp.sum(jax.nn.log_sigmoid(signs * logits)) / logits.shape[0], logits


def sigmoid_pair_loss_ring(image_embeddings: jax.Array, text_embeddings: jax.Array,
                           log_scale: jax.Array, bias: jax.Array, mesh: jax.sharding.Mesh
                           ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """`sigmoid_pair_loss` with the batch sharded over every axis of `mesh`, computed the way
  the paper does (Sec. 3.3, Fig. 1): each device scores its own images against one block of
  texts at a time, starting with its own block (the only one holding positives), then passes
  the block to the next device around a ring (`ppermute`), D steps for D devices. A device
  never holds more than a [N/D, N/D] block of logits, so memory does not grow with the device
  count, and only embeddings, not logits, cross devices.

  Also returns the in-batch retrieval accuracies without the N x N matrix:
  `image_to_text_accuracy` (an image's pair scores above every other text) from each row's
  running maximum, `text_to_image_accuracy` from a running maximum that travels around the
  ring with its text block and comes home after D steps.
  """
  axes = tuple(mesh.axis_names)
  spec = jax.sharding.PartitionSpec(axes)
  devices = mesh.size
  ring = [(i, (i + 1) % devices) for i in range(devices)]

  def local(images, texts, log_scale, bias):
    images = l2_normalize(images.astype(jnp.float32))
    texts = l2_normalize(texts.astype(jnp.float32))
    scale = jnp.exp(log_scale)
    own = scale * jnp.sum(images * texts, axis=-1) + bias  # the positives' logits [n]
    diagonal = jnp.eye(images.shape[0], dtype=bool)

    def block(k, carry):
      total, row_max, texts, column_max = carry
      logits = scale * images @ texts.T + bias
      positive = diagonal & (k == 0)  # only the device's own block holds its pairs
      total = total - jnp.sum(jax.nn.log_sigmoid(jnp.where(positive, logits, -logits)))
      negatives = jnp.where(positive, -jnp.inf, logits)
      row_max = jnp.maximum(row_max, jnp.max(negatives, axis=1))
      column_max = jnp.maximum(column_max, jnp.max(negatives, axis=0))
      texts, column_max = jax.lax.ppermute((texts, column_max), axes, ring)
      return total, row_max, texts, column_max

    # The loop's carry varies across devices from the start (shard_map's type check).
    fresh = jax.lax.pcast((jnp.zeros(()), jnp.full(own.shape, -jnp.inf),
                           jnp.full(own.shape, -jnp.inf)), axes, to="varying")
    start = (fresh[0], fresh[1], texts, fresh[2])
    total, row_max, _, column_max = jax.lax.fori_loop(0, devices, block, start)
    size = images.shape[0] * devices
    return (jax.lax.psum(total, axes) / size,
            jax.lax.psum(jnp.sum(own > row_max), axes) / size,
            jax.lax.psum(jnp.sum(own > column_max), axes) / size)

  loss, image_to_text, text_to_image = jax.shard_map(
      local, mesh=mesh, in_specs=(spec, spec, jax.sharding.PartitionSpec(),
                                  jax.sharding.PartitionSpec()),
      out_specs=jax.sharding.PartitionSpec())(image_embeddings, text_embeddings, log_scale,
                                              bias)
  return loss, {"image_to_text_accuracy": image_to_text, "text_to_image_accuracy": text_to_image}


def sinkhorn_knopp(scores: jax.Array, epsilon: float = 0.05, iterations: int = 3,
                   weights: jax.Array | None = None) -> jax.Array:
  """Soft assignments of a batch to K prototypes with equal shares (SwAV, Caron et al. 2020,
  Sec. 3.1 and Alg. 1; also DINOv2's teacher centring, Oquab et al. 2024, Sec. 4).

  Q = exp(scores / epsilon) [B, K] is scaled alternately so that every prototype receives
  1/K of the mass and every example 1/B, `iterations` (>= 1) times (the paper's 3; the
  paper's first division of Q by its total is absorbed by the first scaling), and returned
  with each example's row summing to 1. The sums over examples run over the global batch: in
  a jit over a sharded batch they are cross-device reductions, as the papers' all-reduce.
  The scaling runs on log Q (log-sum-exp normalisations, the same numbers), so that scores /
  epsilon of a few hundred neither overflow exp nor underflow a prototype's whole column to
  0 / 0.

  `weights` [B] of 0 / 1 runs the same algorithm on the rows with weight 1 only (B = their
  number), in a static shape: DINOv2 centres just the masked patch tokens of its batch,
  whose number varies. Rows of weight 0 come back normalised but meaningless.
  """
  log_q = scores.astype(jnp.float32) / epsilon
  prototypes = log_q.shape[1]
  if weights is None:
    batch, row_weights = log_q.shape[0], None
  else:
    row_weights = weights.astype(jnp.float32)[:, None]
    batch = jnp.maximum(jnp.sum(row_weights), 1.0)
  for _ in range(iterations):
    # each prototype: 1 / K of the mass; then each example: 1 / B
    log_q = (log_q - jax.nn.logsumexp(log_q, axis=0, keepdims=True, b=row_weights)
             - jnp.log(prototypes))
    log_q = log_q - jax.nn.logsumexp(log_q, axis=1, keepdims=True) - jnp.log(batch)
  return jnp.exp(log_q) * batch


def masked_patch_cross_entropy(student_logits: jax.Array, teacher_probs: jax.Array,
                               mask: jax.Array, student_temperature: float) -> jax.Array:
  """iBOT's masked image modelling loss for one view (Zhou et al. 2022, Eq. 2 / Alg. 1).

  The student, shown the view with its masked patches replaced by a mask token, predicts at
  each masked patch i the teacher's distribution for the unmasked patch:
  -sum_k P_t[i, k] log softmax(student_i / tau_s)[k], averaged over the masked patches of
  each image (an image without masked patches adds 0), then over the batch -- the
  normalisation of the authors' code. `student_logits` [B, N, K], `teacher_probs` [B, N, K],
  `mask` [B, N] (True = masked).
  """
  log_probs = jax.nn.log_softmax(student_logits.astype(jnp.float32) / student_temperature,
                                 axis=-1)
  per_patch = -jnp.sum(teacher_probs * log_probs, axis=-1)
  mask = mask.astype(jnp.float32)
  per_image = jnp.sum(per_patch * mask, axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)
  return jnp.mean(per_image)


def koleo(features: jax.Array, eps: float = 1e-8) -> jax.Array:
  """The KoLeo regulariser (Sablayrolles et al. 2019, Eq. 5; DINOv2, Oquab et al. 2024,
  Sec. 4): -1/n sum_i log(d_i), d_i the distance from the L2-normalised feature i to its
  nearest neighbour among the other features of the batch. It spreads the features
  uniformly on the sphere.

  The distance is sqrt(||x_i - x_j||^2 + eps^2): a batch with duplicate features (d_i = 0)
  gives log(eps), finite, and a finite gradient, where the plain norm's gradient is 0/0 at a
  duplicate (a failure reported of the reference code). The neighbour is found over the
  whole (global) batch.
  """
  x = l2_normalize(features.astype(jnp.float32))
  similarities = x @ x.T
  similarities = jnp.where(jnp.eye(x.shape[0], dtype=bool), -jnp.inf, similarities)
  neighbours = jax.lax.stop_gradient(jnp.argmax(similarities, axis=1))
  difference = x - x[neighbours]
  distances = jnp.sqrt(jnp.sum(difference * difference, axis=-1) + eps * eps)
  return -jnp.mean(jnp.log(distances))


def cosine_similarity(a: jax.Array, b: jax.Array) -> jax.Array:
  """Per-row cosine similarity <a, b> / (||a|| ||b||) in float32, shape [N]."""
  a = l2_normalize(a.astype(jnp.float32))
  b = l2_normalize(b.astype(jnp.float32))
  return jnp.sum(a * b, axis=-1)


def normalized_mse(prediction: jax.Array, target: jax.Array) -> jax.Array:
  """BYOL's regression loss (Grill et al. 2020, Eq. 2): ||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z).

  Averaged over the batch; `target` is expected to be stop-gradient'ed by the caller.
  """
  return jnp.mean(2.0 - 2.0 * cosine_similarity(prediction, target))


def negative_cosine(prediction: jax.Array, target: jax.Array) -> jax.Array:
  """SimSiam's D(p, z) = -cos(p, stopgrad(z)) (Chen & He 2021, Eq. 1), averaged over the batch."""
  return -jnp.mean(cosine_similarity(prediction, jax.lax.stop_gradient(target)))


def _standardize_over_batch(z: jax.Array, eps: float) -> jax.Array:
  """(z - mean) / sqrt(var + eps) per feature over the batch (biased var, as BatchNorm)."""
  z = z.astype(jnp.float32)
  mean = jnp.mean(z, axis=0)
  var = jnp.mean(jnp.square(z - mean), axis=0)
  return (z - mean) * jax.lax.rsqrt(var + eps)


def barlow_twins(z_a: jax.Array, z_b: jax.Array, off_diagonal_weight: float,
                 eps: float = 1e-5) -> tuple[jax.Array, jax.Array]:
  """Barlow Twins (Zbontar et al. 2021, Eq. 1-2) on embeddings [N, D] of two views.

  Each view's embedding is standardised per dimension over the (global) batch, C_ij =
  sum_b za_bi zb_bj / N is their cross-correlation, and
  L = sum_i (1 - C_ii)^2 + lambda sum_i sum_{j != i} C_ij^2.

  Returns (loss, C).
  """
  n = z_a.shape[0]
  c = _standardize_over_batch(z_a, eps).T @ _standardize_over_batch(z_b, eps) / n
  on_diagonal = jnp.sum(jnp.square(1.0 - jnp.diag(c)))
  off_diagonal = jnp.sum(jnp.square(c)) - jnp.sum(jnp.square(jnp.diag(c)))
  return on_diagonal + off_diagonal_weight * off_diagonal, c


def vicreg_terms(z_a: jax.Array, z_b: jax.Array, gamma: float = 1.0,
                 eps: float = 1e-4) -> dict[str, jax.Array]:
  """VICReg's invariance, variance and covariance terms (Bardes et al. 2022, Eq. 1-5).

  invariance s = mean over batch and dimensions of (z_a - z_b)^2 (the authors' code,
  `F.mse_loss`; Eq. 5 sums over dimensions, i.e. D times this, and the published weights go
  with the mean); variance v(Z) = mean_j max(0, gamma - sqrt(Var(z^j) + eps)) with the
  unbiased variance; covariance c(Z) = sum_{i != j} Cov(Z)_ij^2 / D, Cov unbiased. The
  variance and covariance entries are v(Z_a) + v(Z_b) and c(Z_a) + c(Z_b).
  """
  z_a, z_b = z_a.astype(jnp.float32), z_b.astype(jnp.float32)
  n, d = z_a.shape

  def variance(z):
    std = jnp.sqrt(jnp.var(z, axis=0, ddof=1) + eps)
    return jnp.mean(jax.nn.relu(gamma - std))

  def covariance(z):
    centered = z - jnp.mean(z, axis=0)
    cov = centered.T @ centered / (n - 1)
    return (jnp.sum(jnp.square(cov)) - jnp.sum(jnp.square(jnp.diag(cov)))) / d

  return {"invariance": jnp.mean(jnp.square(z_a - z_b)),
          "variance": variance(z_a) + variance(z_b),
          "covariance": covariance(z_a) + covariance(z_b)}


def dino_cross_entropy(student_logits: list[jax.Array], teacher_probs: list[jax.Array],
                       student_temperature: float) -> jax.Array:
  """DINO's multi-crop loss (Caron et al. 2021, Eq. 3 / Alg. 1).

  sum over teacher crops t (the global views) and student crops s != t (all views, local
  ones included) of H(P_t, P_s) = -sum_k P_t[k] log softmax(student_s / tau_s)[k], averaged
  over the batch and over the number of (t, s) pairs. `student_logits` lists the student's
  crops with the global ones first, in the same order as `teacher_probs`.
  """
  total, pairs = 0.0, 0
  for t, probs in enumerate(teacher_probs):
    for s, logits in enumerate(student_logits):
      if s == t:
        continue
      log_probs = jax.nn.log_softmax(logits.astype(jnp.float32) / student_temperature, axis=-1)
      total = total + jnp.mean(-jnp.sum(probs * log_probs, axis=-1))
      pairs += 1
  return total / pairs


def swav_swapped_prediction(scores: list[jax.Array], codes: list[jax.Array],
                            assigned: tuple[int, ...], temperature: float) -> jax.Array:
  """SwAV's swapped prediction over multi-crop (Caron et al. 2020, Eq. 1-2 and the multi-crop
  loss of Sec. 3.2), normalised as the authors' `main_swav.py`.

  `scores` lists every crop's prototype scores z_v^T c_k [B, K] (the global crops first, then
  the local ones), `codes` the Sinkhorn codes q [B, K] of the crops named in `assigned`, in
  that order. Each assigned crop a is predicted from every other crop v (global and local):
  l(z_v, q_a) = -sum_k q_a[k] log softmax(z_v^T C / temperature)[k], averaged over the batch;
      loss = 1 / |A| sum_{a in A} 1 / (V - 1) sum_{v != a} l(z_v, q_a).
  With the paper's A = (0, 1) and two crops this is Eq. 1, L(z_1, z_2) = l(z_1, q_2) +
  l(z_2, q_1), halved. The codes carry no gradient (the caller stops it).
  """
  num_crops = len(scores)
  log_probs = [jax.nn.log_softmax(s.astype(jnp.float32) / temperature, axis=-1) for s in scores]
  total = 0.0
  for crop, q in zip(assigned, codes):
    others = [v for v in range(num_crops) if v != crop]
    per_crop = sum(jnp.mean(-jnp.sum(q * log_probs[v], axis=-1)) for v in others)
    total = total + per_crop / len(others)
  return total / len(assigned)


def normalized_std(z: jax.Array) -> jax.Array:
  """Mean over dimensions of the batch std of L2-normalised z (SimSiam, Sec. 4.1, Fig. 2).

  A collapsed embedding gives 0; unit vectors spread over d dimensions give ~1/sqrt(d).
  """
  return jnp.mean(jnp.std(l2_normalize(z.astype(jnp.float32)), axis=0))


def effective_rank(z: jax.Array, eps: float = 1e-7) -> jax.Array:
  """RankMe (Garrido et al. 2023, "RankMe: Assessing the downstream performance of pretrained
  self-supervised representations by their rank", Eq. 1): exp of the entropy of the
  singular values of the batch of embeddings z [n, d] normalised to sum to 1,
  p_k = sigma_k / ||sigma||_1 + eps. It runs from 1 (every embedding on one line: complete
  collapse) to min(n, d) (all directions used equally); a fall means dimensional collapse.
  (The singular values are taken directly: through the Gram matrix's eigenvalues float32
  rounding lifts the zero ones to ~1e-3 of the largest, which reads a rank-1 batch as 1.01.)
  """
  sigma = jnp.linalg.svd(z.astype(jnp.float32), compute_uv=False)
  p = sigma / jnp.maximum(jnp.sum(sigma), jnp.finfo(jnp.float32).tiny) + eps
  return jnp.exp(-jnp.sum(p * jnp.log(p)))


def patch_statistics(patches: jax.Array, eps: float) -> tuple[jax.Array, jax.Array]:
  """Mean and scale sqrt(var + eps) of the pixels of each patch [..., pixels] (keepdims).

  The variance is the unbiased one (divided by pixels - 1), as in MAE's code (torch's `var`).
  """
  patches = patches.astype(jnp.float32)
  mean = jnp.mean(patches, axis=-1, keepdims=True)
  return mean, jnp.sqrt(jnp.var(patches, axis=-1, keepdims=True, ddof=1) + eps)


def normalize_patches(patches: jax.Array, eps: float) -> jax.Array:
  """Per-patch standardised pixels, MAE's `norm_pix_loss` target (He et al. 2021, Sec. 3,
  "Reconstruction target"): (x - mean) / sqrt(var + eps) over the pixels of each patch."""
  mean, scale = patch_statistics(patches, eps)
  return (patches.astype(jnp.float32) - mean) / scale


def masked_patch_mse(predicted: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
  """MAE's loss (He et al. 2021, Sec. 3): the mean squared error per patch, averaged over the
  masked patches only, of the global batch.

  predicted, target: [B, N, pixels]; mask [B, N], 1 where a patch was hidden from the encoder.
  """
  per_patch = jnp.mean(jnp.square(predicted.astype(jnp.float32) - target), axis=-1)
  return jnp.sum(per_patch * mask) / jnp.sum(mask)


def mean_squared_error(prediction: jax.Array, target: jax.Array,
                       mask: jax.Array | None = None) -> jax.Array:
  """The mean of (prediction - target)^2 over every element, or over the elements where
  `mask` (broadcastable to the images, 1 = counted) is set.

  The autoencoder's reconstruction error (Vincent et al. 2008, squared-error variant), and
  with a mask of the hidden region the Context Encoder's reconstruction loss (Pathak et al.
  2016, Eq. 1: ||M * (x - F((1 - M) * x))||^2, here normalised by the hidden element count so
  its scale does not depend on the region size).
  """
  error = jnp.square(prediction.astype(jnp.float32) - target.astype(jnp.float32))
  if mask is None:
    return jnp.mean(error)
  mask = jnp.broadcast_to(mask, error.shape).astype(jnp.float32)
  return jnp.sum(error * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def gaussian_kl_to_standard_normal(mean: jax.Array, log_variance: jax.Array) -> jax.Array:
  """KL(N(mean, diag(exp(log_variance))) || N(0, I)) per example, summed over dimensions.

  The closed form of Kingma & Welling 2014, Appendix B (the negative of the KL term of Eq. 10):
  KL = -1/2 sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2).
  """
  mean, log_variance = mean.astype(jnp.float32), log_variance.astype(jnp.float32)
  return -0.5 * jnp.sum(1.0 + log_variance - jnp.square(mean) - jnp.exp(log_variance), axis=-1)


def bernoulli_negative_log_likelihood(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """-log p(x|z) per example for independent Bernoulli pixels with probabilities
  sigmoid(logits) (Kingma & Welling 2014, Appendix C.1), summed over all but the batch axis:
  -sum [x log p + (1 - x) log(1 - p)] = sum [softplus(l) - x l]; x in [0, 1] may be grey."""
  logits, targets = logits.astype(jnp.float32), targets.astype(jnp.float32)
  per_element = jax.nn.softplus(logits) - targets * logits
  return jnp.sum(per_element.reshape(per_element.shape[0], -1), axis=-1)


def binomial_negative_log_likelihood(logits: jax.Array, targets: jax.Array,
                                     trials: int) -> jax.Array:
  """-log p(x|z) per example when each pixel is the fraction x = k / n of n = `trials`
  binary sub-pixels that are on, k ~ Binomial(n, sigmoid(logits)), summed over all but the
  batch axis: sum [n (softplus(l) - x l) - log C(n, k)]. With n = 1 and binary x it is the
  Bernoulli likelihood; the 8x8 UCI digits are n = 16 (each pixel counts the set pixels of a
  4x4 block of a 32x32 bitmap), i.e. the Bernoulli likelihood of that bitmap when a block
  shares one probability."""
  targets = targets.astype(jnp.float32)
  successes = trials * targets
  log_binomial_coefficient = (jax.scipy.special.gammaln(trials + 1.0)
                              - jax.scipy.special.gammaln(successes + 1.0)
                              - jax.scipy.special.gammaln(trials - successes + 1.0))
  per_element = (trials * (jax.nn.softplus(logits.astype(jnp.float32)) - targets * logits)
                 - log_binomial_coefficient)
  return jnp.sum(per_element.reshape(per_element.shape[0], -1), axis=-1)


def gaussian_negative_log_likelihood(mean: jax.Array, targets: jax.Array,
                                     std: float) -> jax.Array:
  """-log N(x; mean, std^2 I) per example, summed over all but the batch axis (Kingma &
  Welling 2014, Appendix C.2, with a fixed observation std):
  sum [(x - mean)^2 / (2 std^2) + log std + log(2 pi) / 2]."""
  error = targets.astype(jnp.float32) - mean.astype(jnp.float32)
  per_element = 0.5 * jnp.square(error / std) + jnp.log(std) + 0.5 * jnp.log(2.0 * jnp.pi)
  return jnp.sum(per_element.reshape(per_element.shape[0], -1), axis=-1)


_EXCLUDED_LOGIT = -1e9  # a negative that is not there (padding); finite, so rows stay finite


def cpc_step_terms(predictions: jax.Array, targets: jax.Array, valid: jax.Array, k: int
                   ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """CPC's InfoNCE for one prediction step k (van den Oord et al. 2018, Eq. 4).

  predictions [B, T, D] hold W_k c_t, targets [B, T, D] the encodings z, valid [B, T] marks
  the recorded steps. The score of a candidate z is Eq. 3's log-bilinear z^T W_k c_t. The
  query of example i at time t is scored against z_{t+k} of every example j of the global
  batch (the positive is j = i; recorded z_{t+k} of the other examples are the negatives,
  the paper's "negative samples from the batch", Sec. 3.1, taken at the same time offset):
    L_{i,t,k} = -log exp(z_{i,t+k}^T W_k c_{i,t}) / sum_j exp(z_{j,t+k}^T W_k c_{i,t}).
  Returns per-query (loss, correct, weight) [T - k, B]; weight is 1 where z_{i,t+k} was
  recorded (a padding step is neither a query nor a negative).
  """
  query = predictions[:, :-k].astype(jnp.float32)
  candidates = targets[:, k:].astype(jnp.float32)
  target_valid = valid[:, k:]
  logits = jnp.einsum("itd,jtd->tij", query, candidates)
  logits = jnp.where(jnp.swapaxes(target_valid, 0, 1)[:, None, :], logits, _EXCLUDED_LOGIT)
  positives = jnp.broadcast_to(jnp.arange(logits.shape[1]), logits.shape[:2])
  step_losses = softmax_cross_entropy(logits, positives)
  correct = (jnp.argmax(logits, axis=-1) == positives).astype(jnp.float32)
  return step_losses, correct, jnp.swapaxes(target_valid, 0, 1).astype(jnp.float32)


def cpc_info_nce(predictions: jax.Array, targets: jax.Array, valid: jax.Array
                 ) -> tuple[jax.Array, jax.Array]:
  """CPC's loss over steps k = 1..K (van den Oord et al. 2018, Eq. 4, summed as in Sec. 2.3).

  predictions [K, B, T, D] (row k - 1 holds W_k c_t), targets [B, T, D], valid [B, T]. Returns
  (the mean of `cpc_step_terms` over every recorded query of every step, the accuracy of
  picking the positive per step [K]).
  """
  total, count, accuracies = 0.0, 0.0, []
  for k in range(1, predictions.shape[0] + 1):
    step_losses, correct, weights = cpc_step_terms(predictions[k - 1], targets, valid, k)
    total += jnp.sum(step_losses * weights)
    count += jnp.sum(weights)
    accuracies.append(jnp.sum(correct * weights) / jnp.maximum(jnp.sum(weights), 1.0))
  return total / jnp.maximum(count, 1.0), jnp.stack(accuracies)


def standardize_features(x: jax.Array, eps: float = 1e-5) -> jax.Array:
  """Each token's features standardised over the feature axis, a LayerNorm without a learned
  scale or shift: I-JEPA's targets, the target encoder's output tokens normalised this way
  (the official code's `F.layer_norm(h, (h.size(-1),))`, eps 1e-5)."""
  x = x.astype(jnp.float32)
  mean = jnp.mean(x, axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(jnp.var(x, axis=-1, keepdims=True) + eps)


def block_prediction_mse(predictions: jax.Array, targets: jax.Array,
                         block_masks: jax.Array) -> jax.Array:
  """I-JEPA's loss (Assran et al. 2023, Eq. 1: (1/M) sum_i sum_{j in B_i} ||s^_yj - s_yj||^2),
  with each block's sum averaged over its patches and the feature dimension, so that blocks of
  different sizes weigh the same and the scale does not depend on the width; then the mean
  over the M blocks and the batch. The paper's squared L2 distance; the official code uses
  a smooth-L1 loss instead.

  predictions [B, M, N, D] (block m's predictions at every patch slot), targets [B, N, D],
  block_masks [B, M, N] (1 where patch n is in block m; only those slots count).
  """
  error = jnp.mean(jnp.square(predictions.astype(jnp.float32) - targets[:, None]), axis=-1)
  mask = block_masks.astype(jnp.float32)
  per_block = jnp.sum(error * mask, axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)
  return jnp.mean(per_block)


def wav2vec2_contrastive(context: jax.Array, quantized: jax.Array, masked: jax.Array,
                         distractors: jax.Array, temperature: float
                         ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """wav2vec 2.0's contrastive task (Baevski et al. 2020, Eq. 3).

  For each masked step t: L_m = -log exp(sim(c_t, q_t) / k) / sum_{q~ in Q_t}
  exp(sim(c_t, q~) / k), sim the cosine similarity, Q_t the true quantized q_t and the K
  distractors, quantized steps of the same utterance.

  context [B, T, F] (the projected c_t), quantized [B, T, F], masked [B, T] (the steps that
  are queries), distractors [B, T, K] (indices into T of the same row). Returns (the mean
  over the masked steps, the fraction whose positive scores above every distractor, the
  number of masked steps).
  """
  c = l2_normalize(context.astype(jnp.float32))
  q = l2_normalize(quantized.astype(jnp.float32))
  positive = jnp.sum(c * q, axis=-1, keepdims=True)  # [B, T, 1]
  others = jax.vmap(lambda rows, index: rows[index])(q, distractors)  # [B, T, K, F]
  negative = jnp.einsum("btf,btkf->btk", c, others)
  logits = jnp.concatenate([positive, negative], axis=-1) / temperature
  terms = -jax.nn.log_softmax(logits, axis=-1)[..., 0]
  weights = masked.astype(jnp.float32)
  count = jnp.sum(weights)
  correct = (positive[..., 0] > jnp.max(negative, axis=-1)).astype(jnp.float32)
  return (jnp.sum(terms * weights) / jnp.maximum(count, 1.0),
          jnp.sum(correct * weights) / jnp.maximum(count, 1.0), count)


def codebook_diversity(logits: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
  """wav2vec 2.0's diversity penalty (Baevski et al. 2020, Eq. 4) and the codebook perplexity.

  p_g = the softmax of group g's logits (no Gumbel noise) averaged over the `valid` steps of
  the batch; L_d = 1 / (G V) sum_g -H(p_g) = 1 / (G V) sum_g sum_v p_gv log p_gv, lowest when
  every entry is used equally. The perplexity sum_g exp(H(p_g)) counts the entries in use
  (G V at most).

  logits [B, T, G, V], valid [B, T]. Returns (L_d, perplexity).
  """
  groups, entries = logits.shape[-2:]
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  weights = valid.astype(jnp.float32)[..., None, None]
  mean = jnp.sum(probs * weights, axis=(0, 1)) / jnp.maximum(jnp.sum(weights), 1.0)  # [G, V]
  negative_entropy = jnp.sum(mean * jnp.log(mean + 1e-7), axis=-1)  # [G]
  return (jnp.sum(negative_entropy) / (groups * entries),
          jnp.sum(jnp.exp(-negative_entropy)))


def correspondence_cross_entropy(own_logits: jax.Array, other_logits: jax.Array,
                                 weights: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Audio-visual correspondence's objective (Arandjelovic & Zisserman 2017, Sec. 3): the
  binary cross-entropy of "corresponds" over each clip paired with its own sound (label 1,
  `own_logits` [B]) and with another clip's (label 0, `other_logits` [B]), the 2B pairs
  weighted by their clip's `weights` [B]. Returns (the weighted mean, the weighted accuracy
  of the sign of the logit)."""
  weights = weights.astype(jnp.float32)
  terms = -jax.nn.log_sigmoid(own_logits) - jax.nn.log_sigmoid(-other_logits)
  correct = (own_logits > 0).astype(jnp.float32) + (other_logits <= 0).astype(jnp.float32)
  total = jnp.maximum(2 * jnp.sum(weights), 1.0)
  return jnp.sum(terms * weights) / total, jnp.sum(correct * weights) / total
