"""Next-frame prediction: predictive coding on video (Srivastava, Mansimov & Salakhutdinov
2015, "Unsupervised Learning of Video Representations using LSTMs", Sec. 2.3, the conditional
future predictor; Lotter, Kreiman & Cox 2017, PredNet, for the one-step prediction of x_{t+1}
from x_{<=t} as the training signal).

Each frame goes through a convolutional encoder, a GRU reads the codes in order, and a decoder
predicts frame t + 1 from the state h_t (`ssl_jax.models.frame_predictor`; the prediction of
x_{t+1} is a function of x_{<=t} only). The first `context_frames` frames are given; the loss
is over the predictions of the frames after them, x_{c}, ..., x_{T-1} (a prediction from too
short a history cannot know the motion, so it is not scored), each predicted from the true
frames before it (teacher forcing, as PredNet trains).

Loss (`frame_prediction.likelihood`), per pixel and averaged over the predicted frames:
  "bernoulli": binary cross-entropy of sigmoid(output) against the pixel in [0, 1], the
      choice of Srivastava et al. for Moving MNIST (Sec. 3: "cross entropy loss"): the digits'
      pixels are nearly binary, and the cross-entropy does not flatten near 0 and 1 the way
      the squared error does, so predictions stay sharp instead of blurring to grey;
  "mse": squared error of the output against the pixel (natural video, UCF-101: PredNet's
      L1/L2 pixel loss on real footage).

The representation (`frame_prediction.representation`): "pooled" (the default), the frame
encoder's last feature map averaged over space and time, what the clip shows wherever it moves;
"context", the state h_{c-1} after the context frames (what the prediction of x_c needs:
the digit's shape, position and velocity); or "mean", the states averaged over the clip.
On moving_digits the states are dominated by where the digit is and how it moves, which the
probes of its identity cannot use: after the default run, kNN on all labels reads 12.8% on
"context" and 15.7% on "mean", 51.1% on "pooled".

`test_metrics`: per-pixel squared error of the predicted frames ("mse"), their mean PSNR in dB
("psnr", 10 log10(1 / per-frame MSE), pixels in [0, 1]), and the same error of repeating the
last seen frame ("copy_last_frame_mse"), the trivial predictor a model must beat. `pictures`:
"predicted_frames", two rows per test clip, the true frames and the predicted ones (column t
is the prediction of frame t from frames < t; column 0 has no prediction and is black).

Config (`config.frame_prediction`): encoder_widths, code_dim, state_width, decoder_widths,
context_frames, likelihood, representation.
"""
from typing import Any

import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.methods import Method, StepOutput, check_choice, check_number, check_sizes
from ssl_jax.models.decoder import first_feature_map_side
from ssl_jax.models.frame_predictor import FramePredictor

LIKELIHOODS = ("bernoulli", "mse")
REPRESENTATIONS = ("context", "mean", "pooled")


def network(config) -> FramePredictor:
  """The predictor that `config.frame_prediction` describes (checked)."""
  settings = config.frame_prediction
  check_choice("config.frame_prediction.likelihood", settings.likelihood, LIKELIHOODS)
  check_choice("config.frame_prediction.representation", settings.representation,
               REPRESENTATIONS)
  check_number("config.frame_prediction.context_frames (below config.data.num_frames)",
               settings.context_frames, minimum=1, below=config.data.num_frames, integer=True)
  check_sizes("config.frame_prediction.encoder_widths", settings.encoder_widths)
  check_sizes("config.frame_prediction.decoder_widths", settings.decoder_widths)
  for name in ("code_dim", "state_width"):
    check_number(f"config.frame_prediction.{name}", settings[name], minimum=1, integer=True)
  first_feature_map_side(config.data.image_size, settings.decoder_widths,
                         "config.frame_prediction.decoder_widths")
  return FramePredictor(encoder_widths=tuple(settings.encoder_widths),
                        code_dim=settings.code_dim, state_width=settings.state_width,
                        decoder_widths=tuple(settings.decoder_widths))


def scored_steps(num_frames: int, context_frames: int) -> jax.Array:
  """[T - 1] float: 1 where prediction t (of frame t + 1) is scored, t + 1 >= context_frames."""
  return (jnp.arange(1, num_frames) >= context_frames).astype(jnp.float32)


def prediction_loss(outputs: jax.Array, frames: jax.Array, context_frames: int,
                    likelihood: str) -> jax.Array:
  """The mean per-pixel loss of `outputs` [B, T - 1, H, W, C] (output t predicts frame t + 1)
  against `frames` [B, T, H, W, C] in [0, 1], over the frames after the context."""
  targets = frames[:, 1:]
  if likelihood == "bernoulli":
    per_pixel = jax.nn.softplus(outputs) - targets * outputs
    # softplus(l) - x l is the cross-entropy up to the target's own entropy, which makes a
    # perfect prediction of a grey pixel score 0 like the squared error does.
    per_pixel -= binary_entropy(targets)
  else:
    per_pixel = jnp.square(outputs - targets)
  weights = scored_steps(frames.shape[1], context_frames)
  per_step = jnp.mean(per_pixel, axis=(0, 2, 3, 4))
  return jnp.sum(per_step * weights) / jnp.sum(weights)


def binary_entropy(p: jax.Array) -> jax.Array:
  """-p log p - (1 - p) log(1 - p), 0 at p in {0, 1}. p is clipped to [0, 1] first: x / 255
  may be compiled as x * (1 / 255), which puts 255 a rounding error above 1."""
  p = jnp.clip(p, 0.0, 1.0)
  return -(jax.scipy.special.xlogy(p, p) + jax.scipy.special.xlogy(1 - p, 1 - p))


def build(config, length) -> Method:
  del length  # no schedule besides the optimizer's
  model = network(config)
  settings = config.frame_prediction
  context_frames = settings.context_frames
  likelihood, representation = settings.likelihood, settings.representation

  def predicted_frames(outputs: jax.Array) -> jax.Array:
    """The predicted pixels in [0, 1] (sigmoid of the logits; the squared-error outputs are
    clipped)."""
    if likelihood == "bernoulli":
      return jax.nn.sigmoid(outputs)
    return jnp.clip(outputs, 0.0, 1.0)

  def features(states: jax.Array) -> jax.Array:
    if representation == "context":
      return states[:, context_frames - 1]
    return jnp.mean(states, axis=1)

  def init(rng: jax.Array, batch: dict[str, jax.Array]) -> tuple[Any, Any]:
    return model.init(rng, batch["frames"])["params"], {}

  def loss(params, extra, batch, rng, step):
    del rng, step
    states, outputs, pooled = model.apply({"params": params}, batch["frames"], with_pooled=True)
    value = prediction_loss(outputs, batch["frames"], context_frames, likelihood)
    error = prediction_loss(predicted_frames(outputs), batch["frames"], context_frames, "mse")
    online = pooled if representation == "pooled" else features(states)
    return value, StepOutput(extra, {"prediction_mse": error}, online)

  def represent(params, extra, inputs):
    del extra
    if representation == "pooled":
      return model.apply({"params": params}, inputs["frames"],
                         method=FramePredictor.pooled_features)
    return features(model.apply({"params": params}, inputs["frames"],
                                method=FramePredictor.states))

  def test_metrics(params, extra, inputs, rng):
    """Sums over the real clips (mask) and scored frames; see the module docstring."""
    del extra, rng
    frames = inputs["frames"]
    _, outputs = model.apply({"params": params}, frames)
    mask = inputs.get("mask", jnp.ones(frames.shape[:1], bool)).astype(jnp.float32)
    weights = scored_steps(frames.shape[1], context_frames)[None, :] * mask[:, None]
    frame_mse = jnp.mean(jnp.square(predicted_frames(outputs) - frames[:, 1:]), axis=(2, 3, 4))
    copy_mse = jnp.mean(jnp.square(frames[:, :-1] - frames[:, 1:]), axis=(2, 3, 4))
    psnr = -10.0 * jnp.log10(jnp.maximum(frame_mse, 1e-10))
    count = jnp.sum(weights)
    return {"mse": (jnp.sum(frame_mse * weights), count),
            "psnr": (jnp.sum(psnr * weights), count),
            "copy_last_frame_mse": (jnp.sum(copy_mse * weights), count)}

  def pictures(params, extra, inputs, rng):
    del extra, rng
    frames = inputs["frames"]
    _, outputs = model.apply({"params": params}, frames)
    predicted = jnp.concatenate([jnp.zeros_like(frames[:, :1]), predicted_frames(outputs)],
                                axis=1)
    rows = jnp.stack([frames, predicted], axis=1)  # [n, 2, T, H, W, C]
    return {"predicted_frames": rows.reshape((-1,) + rows.shape[2:])}

  # A mean over clips (every clip scores as many frames): microbatches accumulate exactly.
  return Method(init=init, loss=loss, represent=represent, pictures=pictures,
                test_metrics=test_metrics, coupling="")
