"""Semi-supervised fine-tuning: the pretrained encoder and a new linear head on 1% / 10% of labels.

The semi-supervised protocol of SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive
Learning of Visual Representations", Sec. 4.2 and Appendix B.5), also reported by BYOL and
Barlow Twins: sample a class-balanced 1% or 10% of the labelled training set, fine-tune the
whole pretrained network with a new linear head on those labels (cross-entropy, LARS with
Nesterov momentum, no weight decay, only random crops and horizontal flips as augmentation),
and report top-1 accuracy on the test set. Unlike the frozen-feature probes it asks how good an
initialisation the representation is, so its honest baseline is the same network trained
from its random initialisation on the same labels (the `random_init` feature source).

What this module does differently from the paper, and why:

* The network is fine-tuned through `Method.represent`, the same function every probe reads,
  so any method's encoder can be fine-tuned without a method-specific branch. `represent` runs
  BatchNorm in inference mode: the statistics stay those of pretraining (or of the
  initialisation for `random_init`) while every weight, BatchNorm's scale and shift included,
  is trained. With 1% of the labels the batch statistics of a few dozen images would be noisy.
* The linear head reads the features centred on the labelled subset's mean under the
  starting network and divided by one overall standard deviation (a fixed map): pretrained
  and random features differ in scale by over 10x, and one learning rate must suit both.
* Adam (cosine-decayed learning rate) replaces Nesterov SGD: without BatchNorm renormalising
  each batch, plain SGD's step on the encoder grows with the feature scale and diverged on
  the digits checkpoints (loss 1e25 within 50 steps), where Adam's per-parameter step does
  not depend on the gradient's scale.
* Crops are random translations by up to `max_shift` of the image side with edge padding (the
  CIFAR recipe of padding then cropping), applied on the device: the labelled subset is small
  and stays on the device, so there is no input pipeline to run per step.
* Batches are drawn with replacement from the subset for `num_steps` steps, with a
  cosine-decayed learning rate: SimCLR's 60 (1%) / 30 (10%) epochs are counted in examples,
  and `num_steps` raises them to at least `min_steps`, since 60 epochs of 1% of a small
  dataset would be a handful of steps.
"""
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ssl_jax.data import augment
from ssl_jax.eval import features


def labelled_fraction(labels: np.ndarray, fraction: float, num_classes: int,
                      seed: int) -> np.ndarray:
  """Sorted indices of a class-balanced `fraction` of the rows: round(fraction * n_c) of
  class c's n_c rows, at least one, drawn without replacement with `default_rng(seed)`.

  SimCLR's ImageNet subsets hold about 13 (1%) and 128 (10%) images of each class.
  """
  if not 0 < fraction <= 1:
    raise ValueError(f"label fraction must lie in (0, 1], got {fraction}")
  rng = np.random.default_rng(seed)
  chosen = []
  for cls in range(num_classes):
    members = np.flatnonzero(labels == cls)
    if len(members) == 0:
      raise ValueError(f"class {cls} has no training examples to fine-tune on")
    count = min(len(members), max(1, round(fraction * len(members))))
    chosen.append(rng.choice(members, count, replace=False))
  return np.sort(np.concatenate(chosen))


def num_steps(num_labelled: int, fraction: float, settings: Any) -> int:
  """max(min_steps, ceil(epochs * num_labelled / batch_size)), with the epochs of the
  `settings.fractions` entry equal to `fraction` (`settings.epochs` is aligned with it)."""
  epochs = dict(zip(settings.fractions, settings.epochs))[fraction]
  return max(settings.min_steps, math.ceil(epochs * num_labelled / settings.batch_size))


def random_shift_and_flip(rng: jax.Array, images: jax.Array, max_shift: int,
                          flip: bool) -> jax.Array:
  """Translates each [H, W, C] image by up to `max_shift` pixels in each direction (edge
  padding fills the border) and, if `flip`, mirrors it horizontally with probability 1/2."""
  _, height, width, _ = images.shape

  def one(key, image):
    shift_key, flip_key = jax.random.split(key)
    padded = jnp.pad(image, ((max_shift, max_shift), (max_shift, max_shift), (0, 0)),
                     mode="edge")
    top, left = jax.random.randint(shift_key, (2,), 0, 2 * max_shift + 1)
    image = jax.lax.dynamic_slice(padded, (top, left, 0), image.shape)
    if flip:
      image = jnp.where(jax.random.bernoulli(flip_key), image[:, ::-1], image)
    return image

  return jax.vmap(one)(jax.random.split(rng, images.shape[0]), images)


def finetune(represent: Callable[..., jax.Array], params: Any, extra: Any, config: Any,
             settings: Any, images: np.ndarray, labels: np.ndarray, num_classes: int,
             steps: int, seed: int) -> Callable[[jax.Array], jax.Array]:
  """Fine-tunes `params` and a zero-initialised linear head on uint8 `images` / `labels`.

  Args:
    represent: the method's `represent(params, extra, normalised images) -> features`.
    params, extra: the starting network (a checkpoint's, or the initialisation's).
    config: the run's config; reads `config.augment` (normalisation) and `config.data.flip`.
    settings: the fine-tuning evaluator's settings (`config.evals.finetune`): `batch_size`,
      `lr`, `max_shift`.
    images: (n, H, W, C) uint8 labelled training images.
    labels: (n,) ints in [0, num_classes).
    num_classes: number of classes.
    steps: optimisation steps (see `num_steps`).
    seed: seeds the batches and the augmentation.

  Returns:
    uint8 images (b, H, W, C) -> (b, num_classes) logits of the fine-tuned network.
  """
  if steps < 1 or settings.batch_size < 1:
    raise ValueError("fine-tuning needs steps >= 1 and evals.finetune.batch_size >= 1")
  images, labels = jnp.asarray(images), jnp.asarray(labels, jnp.int32)
  max_shift = int(round(settings.max_shift * images.shape[1]))
  flip = bool(config.data.get("flip", False))

  # The starting features, a batch at a time (a 10% subset of ImageNet is 128k images); the
  # images are jit arguments here and below, never constants baked into a compiled program.
  represent_fn = jax.jit(lambda p, x: represent(p, extra, augment.normalize_images(x, config)))
  initial = jnp.concatenate([represent_fn(params, images[i:i + settings.batch_size])
                             for i in range(0, images.shape[0], settings.batch_size)])
  mean = jnp.mean(initial, axis=0)
  # One scale for all dimensions: dividing each by its own std would amplify the near-constant
  # ones, which fine-tuning then wakes up into exploding logits.
  std = jnp.maximum(jnp.sqrt(jnp.mean((initial - mean) ** 2)), 1e-6)
  feature_dim = initial.shape[-1]

  def logits_fn(variables, uint8_images):
    hidden = represent(variables["model"], extra, augment.normalize_images(uint8_images, config))
    return ((hidden - mean) / std) @ variables["head"]["w"] + variables["head"]["b"]

  variables = {"model": params,
               "head": {"w": jnp.zeros((feature_dim, num_classes), jnp.float32),
                        "b": jnp.zeros((num_classes,), jnp.float32)}}
  schedule = optax.cosine_decay_schedule(settings.lr, steps)
  optimizer = optax.adam(schedule)

  @jax.jit
  def step(variables, opt_state, key, images, labels):
    batch_key, shift_key = jax.random.split(key)
    rows = jax.random.randint(batch_key, (settings.batch_size,), 0, images.shape[0])
    batch = random_shift_and_flip(shift_key, images[rows], max_shift, flip)

    def loss_fn(v):
      return optax.softmax_cross_entropy_with_integer_labels(
          logits_fn(v, batch), labels[rows]).mean()

    loss, grads = jax.value_and_grad(loss_fn)(variables)
    updates, opt_state = optimizer.update(grads, opt_state, variables)
    return optax.apply_updates(variables, updates), opt_state, loss

  opt_state = optimizer.init(variables)
  key = jax.random.PRNGKey(seed)
  for i in features.progress(range(steps), "fine-tune", "step"):
    variables, opt_state, loss = step(variables, opt_state, jax.random.fold_in(key, i), images,
                                      labels)
  if not np.isfinite(float(loss)):
    raise ValueError(f"fine-tuning diverged (loss {float(loss)}): lower evals.finetune.lr")
  return lambda uint8_images: logits_fn(variables, uint8_images)
