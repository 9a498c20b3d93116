"""RotNet (Gidaris, Singh, Komodakis 2018, "Unsupervised Representation Learning by Predicting
Image Rotations").

The pretext task is to recognise which of the four rotations g(X, y), y * 90 degrees for
y in {0, 1, 2, 3}, was applied to an image: the network F is trained with the mean over the K = 4
rotations of -log F^y(g(X, y)), a 4-way softmax cross-entropy (Sec. 2.1). As in the paper, which
found it better than sampling one rotation per image, every image of the batch goes through the
network in all four rotations, 4B inputs in one pass, so BatchNorm statistics span them all. The rotations are exact quarter
turns of the normalised view (`jnp.rot90`), which leave no interpolation artefacts for the
network to read; label k is a counter-clockwise rotation by k * 90 degrees (`np.rot90(x, k)`,
the convention of the paper's code).

The network is the encoder f followed by a head (`config.head`: an `MLPHead` with four outputs;
`num_layers=1` is the linear classifier on f of the ResNet recipes). The representation is f(x)
of the unrotated image; the online probe sees f of the unrotated copies from the same pass.

Views must be square, because a quarter turn of a non-square image changes its shape, and the
augmentation must not rotate: a random rotation of the view would blur the label (the digits
config uses `digits_augment(rotation=0.0)`).
"""
from typing import Any

import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.errors import UserError
from ssl_jax.methods import Method, StepOutput, check_mlp_head, check_num_views
from ssl_jax.models import apply_in_eval_mode, apply_in_train_mode, build_encoder, init_variables
from ssl_jax.models.heads import MLPHead, ProjectedEncoder

NUM_ROTATIONS = 4  # quarter turns: 0, 90, 180, 270 degrees


def rotate_all(images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """[B, H, W, C] -> (all four rotations [4B, H, W, C], rotation labels [4B]).

  Rotation-major: rows k*B .. (k+1)*B are the batch turned counter-clockwise by k * 90
  degrees and carry the label k, so rows 0 .. B-1 are the images themselves.
  """
  rotated = jnp.concatenate([jnp.rot90(images, k, axes=(1, 2)) for k in range(NUM_ROTATIONS)])
  labels = jnp.repeat(jnp.arange(NUM_ROTATIONS, dtype=jnp.int32), images.shape[0])
  return rotated, labels


def _check_square(images: jax.Array) -> None:
  if images.shape[1] != images.shape[2]:
    raise UserError(f"rotation prediction needs square views, got {images.shape[1]}x"
                    f"{images.shape[2]}: set config.data.crop and config.data.image_size")


def build(config, length) -> Method:
  check_num_views(config, 1, "RotNet")
  del length  # No schedule besides the optimizer's.
  check_mlp_head("config.head", config.head, fixed=("output_dim",))  # four rotations
  network = ProjectedEncoder(build_encoder(config.encoder),
                             MLPHead(**config.head, output_dim=NUM_ROTATIONS))

  def init(rng: jax.Array, batch: dict[str, jax.Array]) -> tuple[Any, Any]:
    images = batch["views"][:, 0]
    _check_square(images)
    params, batch_stats = init_variables(network, rng, images)
    return params, {"batch_stats": batch_stats}

  def loss(params, extra, batch, rng, step):
    del step
    images = batch["views"][:, 0]
    _check_square(images)
    rotated, labels = rotate_all(images)
    (h, logits), batch_stats = apply_in_train_mode(network, params, extra["batch_stats"],
                                                   rotated, rng=rng)
    value = jnp.mean(losses.softmax_cross_entropy(logits, labels))
    metrics = {"rotation_accuracy": losses.top1_accuracy(logits, labels)}
    return value, StepOutput({"batch_stats": batch_stats}, metrics, h[:images.shape[0]])

  def represent(params, extra, images):
    h, _ = apply_in_eval_mode(network, params, extra["batch_stats"], images)
    return h

  # A mean over the four rotations of every image: microbatches accumulate exactly when the
  # network has no BatchNorm (the trainer checks).
  return Method(init=init, loss=loss, represent=represent, coupling="")
