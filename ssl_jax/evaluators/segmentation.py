"""Dense evaluation: the linear segmentation probe (`ssl_jax.eval.segmentation`, DINOv2's
"linear" protocol) on the frozen feature map of `Method.represent_dense`, for each network
feature source, and per-pixel colour as the raw baseline. Reported as two result rows per
source, `segmentation_miou` and `segmentation_pixel_accuracy` (cells `segmentation_miou@all`
...), a "segmentation" section with each class's IoU, and `eval/segmentation.png` (test
images, their truth and each source's prediction).

Per-pixel labels come from one of two places:
- `mask_key` empty (the embedded default): made from the probe dataset's images and labels,
  known by construction: a pixel brighter than `ink_threshold` of the image's brightest
  belongs to the image's class (label + 1), every other pixel to the background (0). On the
  digits this asks which digit each stroke belongs to, which pixel colour alone cannot say.
- `mask_key` set: a TFDS dataset with a per-pixel label image, e.g. `scene_parse150`
  (ADE20k's 150 classes; `mask_key="annotation"`, class in channel 0, 0 = unlabelled, so
  `ignore_label=0`, `num_classes=151`), images resized to `image_size` (bilinear) and masks
  (nearest).

Settings (`config.evals.<name>`, type "segmentation"): enabled, dataset ("" = the probe
dataset), train_split / test_split ("" = config.data's), image_key, mask_key, mask_channel,
ink_threshold, num_classes (0 = the probe dataset's classes + 1, with ink masks), ignore_label
(None or a class index), image_size (0 = config.data.image_size), max_train_images,
max_test_images, epochs, lr, batch_size, num_pictures.
"""
from typing import Any

import jax
import numpy as np

from ssl_jax.config_lib import check_number
from ssl_jax.errors import UserError
from ssl_jax.evaluators import NETWORK_SOURCES, Context, Evaluator as EvaluatorBase, Output

PROTOCOLS = ("segmentation_miou", "segmentation_pixel_accuracy")
# A fixed palette: background black, then well-separated hues.
_PALETTE = np.array([(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
                     (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230),
                     (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
                     (170, 110, 40), (255, 250, 200), (128, 0, 0)], np.uint8)


def ink_masks(images: np.ndarray, labels: np.ndarray, threshold: float) -> np.ndarray:
  """[n, H, W] masks: label + 1 where a pixel's brightest channel exceeds `threshold` of the
  image's brightest pixel, else 0 (background)."""
  brightness = np.asarray(images, np.float32).max(axis=-1)
  peak = brightness.reshape(len(images), -1).max(axis=1)[:, None, None]
  return np.where(brightness > threshold * np.maximum(peak, 1e-6),
                  np.asarray(labels)[:, None, None] + 1, 0).astype(np.int32)


def colour(masks: np.ndarray, ignore_label: int | None) -> np.ndarray:
  """Class masks [..., H, W] as RGB [..., H, W, 3] (ignored pixels grey)."""
  rgb = _PALETTE[np.asarray(masks) % len(_PALETTE)]
  if ignore_label is not None:
    rgb = np.where((np.asarray(masks) == ignore_label)[..., None], np.uint8(128), rgb)
  return rgb


class Evaluator(EvaluatorBase):
  """mIoU and pixel accuracy of a linear probe on each source's dense features."""

  needs_labels = False

  def check(self) -> None:
    settings, key = self.settings, f"config.evals.{self.name}"
    if not isinstance(settings.enabled, bool):
      raise UserError(f"{key}.enabled must be True or False, got {settings.enabled!r}")
    if not settings.enabled:
      return
    check_number(f"{key}.ink_threshold", settings.ink_threshold, above=0, below=1)
    check_number(f"{key}.num_classes", settings.num_classes, minimum=0, integer=True)
    check_number(f"{key}.image_size", settings.image_size, minimum=0, integer=True)
    check_number(f"{key}.mask_channel", settings.mask_channel, minimum=0, integer=True)
    for name in ("max_train_images", "max_test_images", "epochs", "batch_size"):
      check_number(f"{key}.{name}", settings[name], minimum=1, integer=True)
    check_number(f"{key}.lr", settings.lr, above=0)
    check_number(f"{key}.num_pictures", settings.num_pictures, minimum=0, integer=True)
    if settings.ignore_label is not None:
      check_number(f"{key}.ignore_label", settings.ignore_label, minimum=0, integer=True)
    if settings.mask_key and not settings.num_classes:
      raise UserError(f"{key}.num_classes must be set (> 0) with {key}.mask_key "
                      f"'{settings.mask_key}': the classes of its per-pixel labels")
    if settings.dataset:
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
      if settings.dataset.split(":")[0].split("/")[0] not in tfds.list_builders():
        raise UserError(f"{key}.dataset '{settings.dataset}' is not a TFDS dataset")
      if not settings.mask_key:
        raise UserError(f"{key}.dataset '{settings.dataset}' needs {key}.mask_key (its "
                        "per-pixel label feature); ink masks come from the probe dataset")

  def applies(self, context: Context) -> bool:
    return bool(self.settings.enabled) and context.method.represent_dense is not None

  # -- data ------------------------------------------------------------------------------

  def _split_names(self, config: Any) -> tuple[str, str]:
    settings = self.settings
    return (settings.train_split or config.data.train_split,
            settings.test_split or config.data.test_split)

  def _ink_split(self, context: Context, split: str, limit: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Up to `limit` images [n, H, W, C] of the probe dataset and their ink masks."""
    if context.num_classes is None:
      raise UserError(f"config.evals.{self.name}: ink masks need the probe dataset's labels; "
                      f"'{context.config.dataset}' has none (set mask_key and dataset)")
    modality, images, labels, count = context.probe_inputs.modality, [], [], 0
    for batch in context.batches(context.probe_inputs, split):
      keep = np.asarray(batch["mask"], bool)
      images.append(np.asarray(modality.eval_inputs(batch))[keep])
      labels.append(np.asarray(batch["label"])[keep])
      count += int(keep.sum())
      if count >= limit:
        break
    images, labels = np.concatenate(images)[:limit], np.concatenate(labels)[:limit]
    return images, ink_masks(images, labels, self.settings.ink_threshold)

  def _tfds_split(self, config: Any, split: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to `limit` (image, per-pixel label) pairs of a TFDS dataset, resized."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    settings = self.settings
    size = settings.image_size or config.data.image_size
    builder = tfds.builder(settings.dataset or config.dataset, data_dir=config.data.data_dir)
    try:
      dataset = builder.as_dataset(split=split, shuffle_files=False)
    except (AssertionError, ValueError, tf.errors.NotFoundError) as e:
      raise UserError(f"config.evals.{self.name}: cannot read split '{split}' of "
                      f"'{builder.name}' ({str(e).splitlines()[0]}); prepare it with "
                      f"`tfds build {builder.name}`") from None
    for key in (settings.image_key, settings.mask_key):
      if key not in builder.info.features:
        raise UserError(f"config.evals.{self.name}: '{builder.name}' has no feature '{key}' "
                        f"(it has {', '.join(builder.info.features)})")

    def prepare(example):
      image = tf.image.resize(example[settings.image_key], (size, size), "bilinear")
      mask = example[settings.mask_key]
      mask = mask[..., settings.mask_channel:settings.mask_channel + 1] if mask.shape.rank == 3 \
          else mask[..., None]
      mask = tf.image.resize(mask, (size, size), "nearest")[..., 0]
      return tf.cast(tf.round(image), tf.uint8), tf.cast(mask, tf.int32)

    pairs = list(tfds.as_numpy(dataset.take(limit).map(prepare)))
    if not pairs:
      raise UserError(f"config.evals.{self.name}: split '{split}' of '{builder.name}' is empty")
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

  # -- features --------------------------------------------------------------------------

  def _dense_features(self, context: Context, source: str, images: np.ndarray) -> np.ndarray:
    config, modality = context.config, context.probe_inputs.modality
    if source == "raw":  # per-pixel colour, normalised as the networks see it
      return np.asarray(modality.normalize(images, config), np.float32)
    state = context.network_state(source)
    params, extra = state["params"]["model"], state["extra"]
    dense = jax.jit(lambda x: context.method.represent_dense(params, extra,
                                                            modality.normalize(x, config)))
    size = self.settings.batch_size
    return np.concatenate([np.asarray(dense(images[i:i + size]), np.float32)
                           for i in range(0, len(images), size)])

  def run(self, context: Context) -> Output:
    from ssl_jax.eval import segmentation  # pylint: disable=g-import-not-at-top
    self.check()
    settings, config = self.settings, context.config
    train_split, test_split = self._split_names(config)
    if settings.mask_key:
      read = lambda split, limit: self._tfds_split(config, split, limit)  # pylint: disable=unnecessary-lambda-assignment
      num_classes = settings.num_classes
    else:
      read = lambda split, limit: self._ink_split(context, split, limit)  # pylint: disable=unnecessary-lambda-assignment
      num_classes = settings.num_classes or context.num_classes + 1
    (train_images, train_masks) = read(train_split, settings.max_train_images)
    (test_images, test_masks) = read(test_split, settings.max_test_images)
    ignore = settings.ignore_label
    for masks in (train_masks, test_masks):
      bad = (masks >= num_classes) & (masks != ignore) | (masks < 0)
      if bad.any():
        raise UserError(f"config.evals.{self.name}: per-pixel label {int(masks[bad][0])} is "
                        f"outside 0..{num_classes - 1} and not the ignore label ({ignore}): "
                        "set num_classes or ignore_label")
    sources = [s for s in config.eval.feature_sources if s in NETWORK_SOURCES + ("raw",)]
    rows, per_class, predictions = [], {}, {}
    for source in sources:
      result, predicted = segmentation.evaluate(
          (self._dense_features(context, source, train_images), train_masks),
          (self._dense_features(context, source, test_images), test_masks), num_classes,
          ignore, epochs=settings.epochs, lr=settings.lr, batch_size=settings.batch_size,
          seed=config.seed)
      for protocol, value in zip(PROTOCOLS, (result.miou, result.pixel_accuracy)):
        rows.append({"features": source, "protocol": protocol, "labels_per_class": None,
                     "accuracy": value, "std": 0.0, "seeds": 1})
      per_class[source] = [None if np.isnan(v) else float(v) for v in result.iou]
      predictions[source] = predicted
    section = {"dataset": settings.dataset or config.dataset, "split": test_split,
               "classes": num_classes, "ignore_label": ignore,
               "train_images": len(train_images), "test_images": len(test_images),
               "masks": f"'{settings.mask_key}'" if settings.mask_key else
                        f"ink (threshold {settings.ink_threshold})", "iou": per_class}
    images = {}
    if settings.num_pictures:
      images = {"plots": {"segmentation": self._picture(test_images, test_masks, predictions)}}
    return Output(rows=rows, sections={"segmentation": section}, images=images)

  def _picture(self, images: np.ndarray, masks: np.ndarray,
               predictions: dict[str, np.ndarray]) -> np.ndarray:
    """Rows of test examples: image, truth, then each source's prediction; nearest-upscaled
    to at least 64 px, 2 px white gaps."""
    count = min(self.settings.num_pictures, len(images))
    side = images.shape[1]
    scale = max(1, -(-64 // side))
    ignore = self.settings.ignore_label
    gray = images[:count]
    if gray.shape[-1] == 1:
      gray = np.repeat(gray, 3, axis=-1)
    columns = [gray.astype(np.uint8), colour(masks[:count], ignore)]
    columns += [colour(predictions[s][:count], ignore) for s in predictions]
    tiles = [[np.kron(column[i], np.ones((scale, scale, 1), np.uint8)) for column in columns]
             for i in range(count)]
    gap = 2
    tile = side * scale
    grid = np.full((count * (tile + gap) - gap, len(columns) * (tile + gap) - gap, 3), 255,
                   np.uint8)
    for r, row in enumerate(tiles):
      for c, cell in enumerate(row):
        grid[r * (tile + gap):r * (tile + gap) + tile, c * (tile + gap):c * (tile + gap) + tile] = cell
    return grid
