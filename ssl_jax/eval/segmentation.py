"""The linear segmentation probe: what frozen dense features know per pixel.

DINOv2's "linear" protocol (Oquab et al. 2024, Sec. 7.4; also VISSL's and mmselfsup's dense
transfer): a linear classifier on every position of a frozen feature map ([n, h, w, d]: a
ViT's patch tokens, a CNN's last map), its logits bilinearly upsampled to the label
resolution and trained with a pixel-wise cross-entropy that skips the ignore label. Scored by
the mean intersection-over-union over classes (mIoU) and the pixel accuracy on the test split.

Upsampling the logits is the same as upsampling the features and then classifying (bilinear
interpolation and a linear map commute, and the weights of an interpolation sum to 1 so the
bias passes through); the logits have fewer channels. Features are standardised per dimension
with the training split's statistics, as the other probes do.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssl_jax import losses


class Scores(NamedTuple):
  miou: float  # mean over the classes that occur in the truth or the prediction
  pixel_accuracy: float
  iou: np.ndarray  # [classes], NaN for a class in neither


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, num_classes: int,
                     ignore_label: int | None) -> np.ndarray:
  """[classes, classes] pixel counts, rows the true class; ignored pixels left out."""
  truth, predicted = np.asarray(truth).ravel(), np.asarray(predicted).ravel()
  keep = truth != ignore_label if ignore_label is not None else np.ones_like(truth, bool)
  keep &= (truth >= 0) & (truth < num_classes)
  return np.bincount(num_classes * truth[keep] + predicted[keep],
                     minlength=num_classes**2).reshape(num_classes, num_classes)


def scores(confusion: np.ndarray, ignore_label: int | None = None) -> Scores:
  """IoU_c = TP / (TP + FP + FN) per class; mIoU over the classes present (the ignore label
  is not a class); pixel accuracy = correct / counted pixels."""
  confusion = np.asarray(confusion, np.float64)
  true_positive = np.diag(confusion)
  union = confusion.sum(0) + confusion.sum(1) - true_positive
  with np.errstate(invalid="ignore", divide="ignore"):
    iou = np.where(union > 0, true_positive / union, np.nan)
  if ignore_label is not None and 0 <= ignore_label < len(iou):
    iou[ignore_label] = np.nan
  total = confusion.sum()
  return Scores(miou=float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else 0.0,
                pixel_accuracy=float(true_positive.sum() / total) if total else 0.0, iou=iou)


def _logits(params, features: jax.Array, size: tuple[int, int]) -> jax.Array:
  logits = features @ params["kernel"] + params["bias"]
  return jax.image.resize(logits, logits.shape[:1] + size + logits.shape[-1:], "bilinear")


def train(features: np.ndarray, masks: np.ndarray, num_classes: int, ignore_label: int | None,
          *, epochs: int, lr: float, batch_size: int, seed: int) -> dict:
  """A 1x1 linear classifier on `features` [n, h, w, d] for `masks` [n, H, W] (Adam, cosine
  decay, minibatches); returns its parameters, with the standardisation folded in."""
  features = np.asarray(features, np.float32)
  mean = features.reshape(-1, features.shape[-1]).mean(0)
  std = features.reshape(-1, features.shape[-1]).std(0) + 1e-6
  size = tuple(masks.shape[1:3])
  n, batch_size = len(features), min(batch_size, len(features))
  steps = max(1, epochs * (n // batch_size))
  tx = optax.adam(optax.cosine_decay_schedule(lr, steps))
  params = {"kernel": jnp.zeros((features.shape[-1], num_classes)),
            "bias": jnp.zeros((num_classes,))}
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, x, y):
    def objective(p):
      logits = _logits(p, (x - mean) / std, size)
      valid = (y != ignore_label) if ignore_label is not None else jnp.ones_like(y, bool)
      per_pixel = losses.softmax_cross_entropy(logits, jnp.where(valid, y, 0))
      return jnp.sum(per_pixel * valid) / jnp.maximum(jnp.sum(valid), 1)
    grads = jax.grad(objective)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  rng = np.random.default_rng(seed)
  order = np.zeros(0, int)
  for _ in range(steps):
    if len(order) < batch_size:
      order = np.concatenate([order, rng.permutation(n)])
    chosen, order = order[:batch_size], order[batch_size:]
    params, opt_state = step(params, opt_state, features[chosen], masks[chosen])
  # Folded standardisation: ((x - mean) / std) W + b = x (W / std) + (b - (mean / std) W).
  kernel = np.asarray(params["kernel"]) / std[:, None]
  return {"kernel": kernel, "bias": np.asarray(params["bias"]) - mean @ kernel}


def predict(params: dict, features: np.ndarray, size: tuple[int, int],
            batch_size: int = 64) -> np.ndarray:
  """Per-pixel classes [n, H, W] of `features` [n, h, w, d]."""
  predict_batch = jax.jit(lambda p, x: jnp.argmax(_logits(p, x, size), axis=-1))
  return np.concatenate([np.asarray(predict_batch(params, features[i:i + batch_size]))
                         for i in range(0, len(features), batch_size)])


def evaluate(train_split: tuple[np.ndarray, np.ndarray],
             test_split: tuple[np.ndarray, np.ndarray], num_classes: int,
             ignore_label: int | None, *, epochs: int, lr: float, batch_size: int, seed: int
             ) -> tuple[Scores, np.ndarray]:
  """Trains the probe on (features, masks) of the training split; returns the test scores
  and the test predictions [n, H, W]."""
  params = train(*train_split, num_classes, ignore_label, epochs=epochs, lr=lr,
                 batch_size=batch_size, seed=seed)
  features, masks = test_split
  predicted = predict(params, np.asarray(features, np.float32), tuple(masks.shape[1:3]))
  return scores(confusion_matrix(masks, predicted, num_classes, ignore_label),
                ignore_label), predicted
