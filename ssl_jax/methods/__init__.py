"""Self-supervised objectives, one module each, found by name.

A method module `ssl_jax/methods/<name>.py` exposes `build(config, length) -> Method`;
`config.method` names it, and `length` (`config_lib.TrainingLength`) gives the horizon of
schedules that follow training progress (EMA momentum, teacher temperature). The trainer and the evaluation script talk to every objective through the same
functions, so neither ever branches on a method's name:

  init(rng, batch) -> (params, extra)
      trainable parameters, and everything else the method carries (BatchNorm statistics,
      an EMA target network, a queue, a centre).
  loss(params, extra, batch, rng, step) -> (loss, StepOutput)
      pure and jittable; `batch` holds device-augmented, normalised inputs.
  update_extra(params, extra, step) -> extra
      runs after the optimizer update (EMA targets and their momentum schedules).
  represent(params, extra, images) -> features
      the frozen representation used downstream (normalised images in, [batch, dim] out).
  represent_paired(params, extra, paired) -> [batch * M, dim]      (optional)
      for a method with a network of its own for the second kind of input an example
      carries (`Modality.paired_kind`; audio-visual correspondence: the audio tower), that
      network's frozen representation of `paired` (the modality's `paired_inputs(batch)[1]`,
      as stored); the probes read it as the feature sources "ssl:<kind>" and
      "random_init:<kind>".
  reconstruction_error(params, extra, images, rng) -> [batch] float32      (optional)
      for a method that reconstructs its input (autoencoder, VAE, MAE, inpainting), each
      example's mean squared reconstruction error in the normalised input space, over what
      its objective reconstructs (the hidden pixels, the masked patches): `images` as
      `represent` takes them, `rng` fixes any corruption (masks, noise) so that the scores are
      reproducible. The anomaly evaluation scores rows by it, the autoencoder's classic
      anomaly score (Japkowicz, Myers & Gluck 1995; Sakurada & Yairi 2014, "Anomaly
      Detection Using Autoencoders with Nonlinear Dimensionality Reduction").
  represent_dense(params, extra, images) -> [batch, h, w, dim]      (optional)
      the same network's features before pooling, on their spatial grid: a ViT's patch
      tokens (CLS dropped), a CNN's last feature map; the dense (segmentation) probe reads
      them. Methods whose encoder is a `config.encoder` network have it.
  pictures(params, extra, images, rng) -> {name: grid}      (optional)
      what a researcher looks at besides the probes (reconstructions, samples, predicted
      colours): `images` are normalised test images [n, H, W, C] as `represent` takes them;
      each grid is [rows, columns, H', W', C'] in the same normalised space (the evaluation
      un-normalises it with `config.augment`'s mean and std, clips to [0, 1] and writes
      `eval/<name>.png`, linked from `report.md`).
  test_metrics(params, extra, batch, rng) -> {name: (sum, count)}      (optional)
      held-out scores of the objective itself, for methods whose objective is worth reporting
      on unseen data (a language model's perplexity): `batch` is a held-out batch as the loss
      takes it, `rng` fixes any corruption (the masked-LM's masking) so that the numbers are
      reproducible. The evaluation adds each metric's sum and count over the held-out split
      and reports sum / count; a metric named "nll" (summed negative log-likelihood per
      predicted token) is also reported as the perplexity exp(nll / count).
  embed = {kind: fn(params, extra, inputs) -> [batch, d]}      (optional)
      for a method that embeds several kinds of input in one space (CLIP: "image" and
      "text"), keyed by the modality's input kind (`Modality.kind`, `paired_kind`): unit
      vectors; images are normalised as `represent` takes them, text is {"tokens",
      "attention_mask"} [batch, L] rows of the run's tokenizer. The evaluators then add
      zero-shot classification (class names turned into prompts, with a "text" embedding)
      and cross-modal retrieval (on a modality that pairs two kinds of input).

Gradient accumulation (`config.grad_accum_steps`, `ssl_jax.accumulation`) reads two more
fields: `coupling` ("" for a loss that is a mean of per-example terms, else what ties the
examples of a batch together) and `embedding_loss` (the same loss split at per-example
embeddings, for exact accumulation of a coupled loss). A method that draws randomness per
example (masks, noise) takes it from `example_keys(rng, batch)`, so that an example's draws do
not depend on the microbatch it lands in.

The trainer and the evaluators find a method's inputs through the run's modality
(`ssl_jax.modalities`): a method never reads the modality's name either.
"""
import dataclasses
import functools
import inspect
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.config_lib import check_choice, check_number  # pylint: disable=unused-import  (for methods)
from ssl_jax.components import import_component
from ssl_jax.errors import UserError
from ssl_jax.models import apply_in_eval_mode, apply_in_train_mode, init_variables, policy
from ssl_jax.models.decoder import Decoder
from ssl_jax.models.heads import MLPHead

# The computation dtypes a head or decoder section may name.
DTYPES = ("float32", "bfloat16", "float16")


class StepOutput(NamedTuple):
  """What a method's loss returns besides the loss value.

  `features` is the representation of the first view in this step, computed in the same
  forward pass; the trainer fits its online linear probe on `stop_gradient(features)`.
  `weight` is the number of terms the loss averages when that varies from batch to batch (a
  language model's predicted tokens): gradient accumulation weights each microbatch's loss
  by it, so that their combination is the whole batch's mean. None: every example counts the
  same.
  """
  extra: Any
  metrics: dict[str, jax.Array]
  features: jax.Array
  weight: jax.Array | None = None


@dataclasses.dataclass(frozen=True)
class EmbeddingLoss:
  """A loss that ties a batch's examples together only through per-example embeddings, split
  there so that its exact gradient can be accumulated over microbatches (gradient caching:
  Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup",
  Sec. 3.2, Alg. 1).

  embed(params, extra, batch, rng) -> (embeddings, batch_stats)
      a pytree of [b, ...] arrays, each row computed from its own example of `batch` alone,
      and the BatchNorm statistics this pass updates ({} when its networks have none; with
      BatchNorm the rows are not per example and accumulation is refused).
  loss(params, extra, embeddings, batch_stats, step) -> (loss, StepOutput)
      the rest, on the embeddings of the whole batch: the heads (BatchNorm allowed here), the
      negatives, the batch statistics.
  The method's `Method.loss` is their composition (`composed_loss`), so that a run without
  accumulation computes exactly the same function.
  """
  embed: Callable[..., tuple[Any, Any]]
  loss: Callable[..., tuple[jax.Array, StepOutput]]


def composed_loss(embedding_loss: EmbeddingLoss) -> Callable[..., tuple[jax.Array, StepOutput]]:
  """`Method.loss` of a method whose loss is `embedding_loss`."""
  def loss(params, extra, batch, rng, step):
    embeddings, batch_stats = embedding_loss.embed(params, extra, batch, rng)
    return embedding_loss.loss(params, extra, embeddings, batch_stats, step)
  return loss


# What a method's `coupling` says when it does not say otherwise.
COUPLED = "its loss couples the examples of a batch"


@dataclasses.dataclass(frozen=True)
class Method:
  init: Callable[..., tuple[Any, Any]]
  loss: Callable[..., tuple[jax.Array, StepOutput]]
  represent: Callable[..., jax.Array]
  update_extra: Callable[..., Any] = lambda params, extra, step: extra
  pictures: Callable[..., dict[str, jax.Array]] | None = None
  test_metrics: Callable[..., dict[str, tuple[jax.Array, jax.Array]]] | None = None
  embed: Mapping[str, Callable[..., jax.Array]] | None = None
  represent_dense: Callable[..., jax.Array] | None = None
  represent_paired: Callable[..., jax.Array] | None = None
  reconstruction_error: Callable[..., jax.Array] | None = None
  # "" when the loss is a mean (weighted by `StepOutput.weight`) of per-example terms, so that
  # microbatch gradients add up to the batch's exactly (given BatchNorm-free networks and
  # per-example randomness); otherwise what couples the examples, for the one line that
  # refuses accumulation when there is no `embedding_loss`.
  coupling: str = COUPLED
  embedding_loss: EmbeddingLoss | None = None
  # Published weights to start from (`config.init_from`): fresh model params -> the step-0
  # ones, applied once when a run starts (not when it resumes, nor to the `random_init`
  # baseline, which stays the fresh initialisation).
  published_params: Callable[[Any], Any] | None = None


def example_keys(rng: jax.Array, batch: dict[str, jax.Array]) -> jax.Array:
  """One PRNG key per example of `batch`: the trainer's `batch["example_key"]` (drawn for the
  whole global batch before it is cut into microbatches, so an example draws the same masks
  whichever microbatch it is in), else `rng` split over the batch (evaluation batches)."""
  if "example_key" in batch:
    return batch["example_key"]
  size = jax.tree.leaves(batch)[0].shape[0]
  return jax.random.split(rng, size)


def merge_views(views: jax.Array) -> jax.Array:
  """[B, V, H, W, C] -> [V * B, H, W, C], view-major: view v is rows v*B .. (v+1)*B.

  All views go through a network as one batch, so its BatchNorm statistics span every view
  of the global batch (SimCLR's global BN, Chen et al. 2020, Sec. B.9).
  """
  return jnp.swapaxes(views, 0, 1).reshape((-1,) + views.shape[2:])


def split_views(x: jax.Array, num_views: int) -> list[jax.Array]:
  """Inverse of `merge_views` on a network's output: [V * B, ...] -> V arrays [B, ...]."""
  return jnp.split(x, num_views, axis=0)


def check_num_views(config, expected: int, method: str) -> None:
  """A UserError, at build time, when `config.data.num_views` is not what the method takes."""
  if config.data.num_views != expected:
    raise UserError(f"{method} takes {expected} views per image, but config.data.num_views "
                    f"is {config.data.num_views}")


def check_options(key: str, section, module: type, fixed: tuple[str, ...] = ()) -> None:
  """A UserError when the config section `key` (e.g. "config.projector") names an option the
  Flax module `module` it configures does not take, or one the method sets itself (`fixed`),
  or a `dtype` not in DTYPES."""
  known = set(inspect.signature(module).parameters) - {"parent", "name", *fixed}
  unknown = sorted(set(section.keys()) - known)
  if unknown:
    raise UserError(f"{key} has no option {unknown[0]!r}; it takes {sorted(known)}")
  if "dtype" in section:
    check_choice(f"{key}.dtype", section["dtype"], DTYPES)


def check_sizes(key: str, values, minimum: int = 1, allow_empty: bool = False) -> None:
  """A UserError unless the config key `key` is a tuple of integers >= `minimum` (widths,
  kernels, strides), non-empty unless `allow_empty`."""
  if not isinstance(values, (tuple, list)) or (not values and not allow_empty):
    raise UserError(f"{key} must be a {'' if allow_empty else 'non-empty '}tuple of integers "
                    f">= {minimum}, got {values!r}")
  for index, value in enumerate(values):
    check_number(f"{key}[{index}]", value, minimum=minimum, integer=True)


def check_mlp_head(key: str, section, fixed: tuple[str, ...] = ()) -> None:
  """UserErrors for a config section that configures an `MLPHead` (a projector, predictor or
  classifier head): unknown options, sizes that are not integers >= 1, flags that are not
  booleans."""
  check_options(key, section, MLPHead, fixed)
  for option in ("hidden_dim", "output_dim", "num_layers"):
    if option in section:
      check_number(f"{key}.{option}", section[option], minimum=1, integer=True)
  for option in ("hidden_norm", "output_norm"):
    if option in section:
      check_choice(f"{key}.{option}", section[option], (True, False))


def check_image_decoder(config) -> None:
  """UserErrors for `config.decoder`, the reconstruction objectives' `models.decoder.Decoder`
  (whether the image side suits its upsamplings is checked when the network is built)."""
  decoder = config.decoder
  check_options("config.decoder", decoder, Decoder)
  check_sizes("config.decoder.widths", decoder.get("widths", Decoder.widths))
  check_number("config.decoder.convs_per_stage", decoder.get("convs_per_stage", 1), minimum=0,
               integer=True)


def shared_network_method(network: Any, objective: Callable[..., tuple[jax.Array, dict]],
                          coupling: str = COUPLED) -> Method:
  """A `Method` for objectives whose two views go through one network (SimCLR, Barlow Twins,
  VICReg): `network` (a `ProjectedEncoder`) sees both views as one batch (`merge_views`),
  `objective(z1, z2) -> (loss, metrics)` scores the two views' projections, and the
  representation is the encoder output h. `extra` holds only BatchNorm statistics;
  `coupling` says how the objective ties the batch's examples (`Method.coupling`).
  """

  def init(rng: jax.Array, batch: dict[str, jax.Array]) -> tuple[Any, Any]:
    params, batch_stats = init_variables(network, rng, merge_views(batch["views"][:, :2]))
    return params, {"batch_stats": batch_stats}

  def loss(params, extra, batch, rng, step):
    del step
    (h, z), batch_stats = apply_in_train_mode(network, params, extra["batch_stats"],
                                              merge_views(batch["views"]), rng=rng)
    value, metrics = objective(*split_views(z, 2))
    return value, StepOutput({"batch_stats": batch_stats}, metrics, split_views(h, 2)[0])

  def represent(params, extra, images, dense=False):
    h, _ = apply_in_eval_mode(network, params, extra["batch_stats"], images, dense=dense)
    return h

  return Method(init=init, loss=loss, represent=represent, coupling=coupling,
                represent_dense=functools.partial(represent, dense=True))


def corrupted_reconstruction_method(
    network: Any, corrupt: Callable[..., tuple[jax.Array, jax.Array | None, dict]],
    picture_name: str) -> Method:
  """A `Method` for objectives that corrupt an image and reconstruct it (denoising
  autoencoder, Context Encoder). `network` is an `EncoderDecoder` (h, code, output);
  `corrupt(rng, images) -> (corrupted, mask, metrics)` gives the network's input and the
  pixels the loss counts (`mask` [B, H, W, 1], True = counted; None = all). The loss is the
  mean squared error between the output and the clean image over those pixels; the
  representation is the encoder's h of clean images (the online probe sees h of the
  corrupted ones, from the loss's forward pass). The picture `picture_name` has one row per
  image: input, corrupted input, output (outside `mask` the input is kept, so an inpainting
  shows the prediction pasted into its context). The reconstruction error (the anomaly
  score) is the loss's per example, of the network in eval mode on a corruption `rng` fixes:
  the same pixels counted as in training, so that a row scores what the objective learnt to
  do. `extra` holds only BatchNorm statistics.
  """
  def init(rng: jax.Array, batch: dict[str, jax.Array]) -> tuple[Any, Any]:
    params, batch_stats = init_variables(network, rng, batch["views"][:, 0])
    return params, {"batch_stats": batch_stats}

  def loss(params, extra, batch, rng, step):
    del step
    corrupt_rng, dropout_rng = jax.random.split(rng)
    images = batch["views"][:, 0]
    corrupted, mask, metrics = corrupt(corrupt_rng, images)
    (h, _, output), batch_stats = apply_in_train_mode(
        network, params, extra["batch_stats"], corrupted, rng=dropout_rng)
    value = losses.mean_squared_error(output, images, mask)
    return value, StepOutput({"batch_stats": batch_stats}, metrics, h)

  def represent(params, extra, images):
    h, _ = apply_in_eval_mode(network, params, extra["batch_stats"], images,
                              method=type(network).encode)
    return h

  def reconstruct(params, extra, images, rng):
    """(corrupted images, counted pixels, the network's output), in eval mode."""
    corrupted, mask, _ = corrupt(rng, images)
    _, _, output = apply_in_eval_mode(network, params, extra["batch_stats"], corrupted)
    return corrupted, mask, output

  def pictures(params, extra, images, rng):
    corrupted, mask, output = reconstruct(params, extra, images, rng)
    if mask is not None:
      output = jnp.where(mask, output, images)
    return {picture_name: jnp.stack([images, corrupted, output], axis=1)}

  def reconstruction_error(params, extra, images, rng):
    _, mask, output = reconstruct(params, extra, images, rng)
    return jax.vmap(losses.mean_squared_error)(output, images, mask)

  return Method(init=init, loss=loss, represent=represent, pictures=pictures,
                reconstruction_error=reconstruction_error,
                coupling="its decoder normalises by the batch's statistics (BatchNorm)")


def find(config):
  """The module `ssl_jax.methods.<config.method>` (a one-line UserError when there is none)."""
  return import_component("ssl_jax.methods", config.method, "method")


def build(config, length) -> Method:
  """Builds the method `config.method` for a run of `length` (a `TrainingLength`); its
  networks follow the run's `config.precision` and `config.remat` (`models.policy`)."""
  module = find(config)
  with policy.applied(config):
    return module.build(config, length)
