"""Gradient accumulation: one optimizer update from a global batch taken in microbatches.

`config.grad_accum_steps = k` cuts the step's global batch into k microbatches (example i
goes to microbatch i mod k, so that every device keeps its own rows) and runs them one after
another inside the jitted step (`jax.lax.scan`), so activations are held for one microbatch
at a time; the update, the learning-rate schedule and the step count are those of the whole
batch. How the microbatch gradients combine depends on how the method's loss ties examples
together (`Method.coupling`, `Method.embedding_loss`):

- "per_example": the loss is a mean of per-example terms (MAE, the language models, frame
  prediction). The batch's gradient is the mean of the microbatch gradients, weighted by
  `StepOutput.weight` where the number of averaged terms varies (predicted tokens). With the
  per-example keys the trainer puts in the batch (`methods.example_keys`) and no BatchNorm,
  it equals the full-batch gradient up to float reassociation.
- "embedding_cache": the loss couples examples only through per-example embeddings
  (contrastive negatives: CLIP, MoCo v3, CPC). Gradient caching (Gao et al. 2021, "Scaling Deep
  Contrastive Learning Batch Size under Memory Limited Setup", Alg. 1): embed every
  microbatch without keeping activations, take the loss and its gradient with respect to the
  whole batch's embeddings, then run each microbatch forward again and back-propagate its
  slice of that gradient. The result is the full-batch gradient, for about one extra forward
  pass; the heads after the embeddings (BatchNorm allowed) run on the whole batch.
- otherwise accumulation would change the objective (negatives or batch statistics limited
  to a microbatch) and is refused with one line saying why.

BatchNorm in the per-example part (found by its Flax `batch_stats` collection) would
normalise each microbatch by its own statistics, so it is refused too: use a ViT or
convnet without it, or more devices.
"""
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from ssl_jax.errors import UserError

FULL_BATCH, PER_EXAMPLE, EMBEDDING_CACHE = "full_batch", "per_example", "embedding_cache"


def _batch_norm_leaves(tree: Any) -> list[str]:
  """Paths of the leaves of `tree` held in a Flax `batch_stats` collection."""
  paths = []
  for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
    names = [str(getattr(entry, "key", getattr(entry, "name", entry))) for entry in path]
    if "batch_stats" in names:
      paths.append("/".join(names))
  return paths


def choose_mode(steps: int, method_name: str, method: Any, abstract_extra: Any,
                embedding_batch_stats: Callable[[], Any] | None = None) -> str:
  """How a step of `steps` microbatches computes its gradient, or a one-line UserError.

  `abstract_extra` is the method's extra state (shapes); `embedding_batch_stats()` gives the
  BatchNorm statistics the method's `embedding_loss.embed` updates (shapes), for the check.
  """
  if steps == 1:
    return FULL_BATCH
  refusal = f"config.grad_accum_steps={steps} is refused for {method_name}: "
  if method.coupling == "":
    if _batch_norm_leaves(abstract_extra):
      raise UserError(refusal + "its networks have BatchNorm, whose batch statistics couple "
                      "the examples (use networks without it, or grad_accum_steps=1)")
    return PER_EXAMPLE
  if method.embedding_loss is not None:
    if embedding_batch_stats is not None and jax.tree.leaves(embedding_batch_stats()):
      raise UserError(refusal + "its encoder has BatchNorm, whose batch statistics couple the "
                      "examples before the embeddings (use a ViT, or grad_accum_steps=1)")
    return EMBEDDING_CACHE
  raise UserError(refusal + f"{method.coupling}, so gradients of microbatches would not add "
                  "up to the batch's (use grad_accum_steps=1 and more devices for a larger "
                  "batch)")


def check_batch(batch_size: int, steps: int, device_count: int) -> None:
  """A UserError unless each of `steps` microbatches splits evenly over the devices."""
  if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
    raise UserError(f"config.grad_accum_steps must be an integer >= 1, got {steps!r}")
  if batch_size % (steps * device_count):
    raise UserError(f"config.batch_size ({batch_size}) must split into grad_accum_steps "
                    f"({steps}) microbatches of a multiple of the {device_count} devices")


def split(tree: Any, steps: int, mesh: jax.sharding.Mesh) -> Any:
  """[B, ...] leaves -> [steps, B / steps, ...]: microbatch j holds examples j, j + steps, ...
  (each device's contiguous rows stay on it), its rows split over every mesh axis."""
  sharding = NamedSharding(mesh, PartitionSpec(None, tuple(mesh.axis_names)))

  def cut(x):
    x = jnp.swapaxes(x.reshape((x.shape[0] // steps, steps) + x.shape[1:]), 0, 1)
    return jax.lax.with_sharding_constraint(x, sharding)
  return jax.tree.map(cut, tree)


def merge(tree: Any) -> Any:
  """The inverse of `split`: [steps, b, ...] -> [steps * b, ...] in the batch's order."""
  return jax.tree.map(
      lambda x: jnp.swapaxes(x, 0, 1).reshape((x.shape[0] * x.shape[1],) + x.shape[2:]), tree)


def _scaled_add(total: Any, tree: Any, scale: jax.Array) -> Any:
  return jax.tree.map(lambda t, x: t + scale * x, total, tree)


def per_example_gradients(loss_fn: Callable, params: Any, extra: Any, batch: Any,
                          rng: jax.Array, steps: int, mesh: jax.sharding.Mesh):
  """(gradient, loss, StepOutput) of `loss_fn(params, extra, batch, rng) -> (loss,
  StepOutput)` over `steps` microbatches, as for the whole batch: microbatch j (drawing its
  dropout from fold_in(rng, j)) is weighted by its `StepOutput.weight` (1 when None). The
  StepOutput's metrics are the same weighted means, its features those of every example in
  the batch's order, its extra the last microbatch's."""
  microbatches = split(batch, steps, mesh)

  def gradient(carry_extra, microbatch, index):
    (value, output), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, carry_extra, microbatch, jax.random.fold_in(rng, index))
    weight = jnp.float32(1.0) if output.weight is None else output.weight.astype(jnp.float32)
    return grads, value, output, weight

  shapes = jax.eval_shape(gradient, extra, jax.tree.map(lambda x: x[0], microbatches), 0)
  zeros = lambda tree: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), tree)
  grads0, _, output0, _ = shapes

  def body(carry, inputs):
    grad_sum, value_sum, metric_sum, weight_sum, carry_extra = carry
    microbatch, index = inputs
    grads, value, output, weight = gradient(carry_extra, microbatch, index)
    carry = (_scaled_add(grad_sum, grads, weight), value_sum + weight * value,
             _scaled_add(metric_sum, output.metrics, weight), weight_sum + weight, output.extra)
    return carry, output.features

  initial = (zeros(grads0), jnp.float32(0.0), zeros(output0.metrics), jnp.float32(0.0), extra)
  (grad_sum, value_sum, metric_sum, weight_sum, new_extra), features = jax.lax.scan(
      body, initial, (microbatches, jnp.arange(steps)))
  scale = 1.0 / jnp.maximum(weight_sum, 1e-12)
  grads = jax.tree.map(lambda g: g * scale, grad_sum)
  metrics = jax.tree.map(lambda m: m * scale, metric_sum)
  output = output0._replace(extra=new_extra, metrics=metrics, features=merge(features),
                            weight=weight_sum)
  return grads, value_sum * scale, output


def embedding_cache_gradients(embedding_loss: Any, params: Any, extra: Any, batch: Any,
                              rng: jax.Array, step: jax.Array, steps: int,
                              mesh: jax.sharding.Mesh):
  """(gradient, loss, StepOutput) of the method's `EmbeddingLoss` over the whole batch,
  holding one microbatch's activations at a time (gradient caching, Gao et al. 2021)."""
  microbatches = split(batch, steps, mesh)
  indices = jnp.arange(steps)

  def embed(p, microbatch, index):
    return embedding_loss.embed(p, extra, microbatch, jax.random.fold_in(rng, index))

  # 1. Every microbatch's embeddings, no activations kept (no gradient is taken here).
  embeddings, batch_stats = jax.lax.map(lambda inputs: embed(params, *inputs),
                                        (microbatches, indices))
  embeddings = merge(embeddings)
  batch_stats = jax.tree.map(lambda x: x[-1], batch_stats)  # {} without BatchNorm (checked)

  # 2. The coupled loss on the whole batch, and its gradient with respect to the parameters it
  # reads directly (heads, a temperature) and to every example's embedding (the float ones:
  # masks and counts carried along have no gradient).
  leaves, treedef = jax.tree.flatten(embeddings)
  differentiable = [jnp.issubdtype(leaf.dtype, jnp.inexact) for leaf in leaves]
  floats = lambda tree: [x for x, d in zip(jax.tree.leaves(tree), differentiable) if d]

  def coupled(p, float_leaves):
    remaining = iter(float_leaves)
    full = [next(remaining) if d else leaf for leaf, d in zip(leaves, differentiable)]
    return embedding_loss.loss(p, extra, jax.tree.unflatten(treedef, full), batch_stats, step)
  (value, output), (direct, embedding_grads) = jax.value_and_grad(
      coupled, argnums=(0, 1), has_aux=True)(params, floats(embeddings))

  # 3. Each microbatch forward again, back-propagating its slice of the embeddings' gradient.
  def body(grad_sum, inputs):
    microbatch, index, cotangent = inputs
    _, pullback = jax.vjp(lambda p: floats(embed(p, microbatch, index)[0]), params)
    return jax.tree.map(jnp.add, grad_sum, pullback(cotangent)[0]), None

  grads, _ = jax.lax.scan(body, direct,
                          (microbatches, indices, split(embedding_grads, steps, mesh)))
  return grads, value, output
