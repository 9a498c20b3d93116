"""The evaluation's figures: a 2-D map of the test features and accuracy-vs-labels curves.

* `feature_map`: t-SNE (van der Maaten & Hinton 2008, "Visualizing Data using t-SNE") of each
  feature source's test features, coloured by class, one panel per source side by side. The
  features are L2-normalised (the geometry the kNN probe uses) and reduced to at most 50
  dimensions by PCA first, the usual preprocessing that makes t-SNE faster and less noisy; at
  most `max_points` rows, a fixed random subset, are embedded, since t-SNE is O(n log n) per
  iteration on 2 CPU cores. (UMAP would need the `umap-learn` package, which is not a
  dependency; t-SNE ships with scikit-learn.) A map is a picture, not a measurement: its
  distances between far clusters mean little, and the report's accuracies are the numbers.
* `accuracy_curves`: for each protocol, test accuracy against labelled examples per class
  (log scale; "all" is placed at the training set's mean class size), one line per feature
  source with the spread over seeds as error bars.

* `anomaly_aurocs`: the anomaly protocols' AUROC for each class as the normal one, a panel
  per protocol (deep kNN, reconstruction error) and a bar per feature source, each source in
  the same colour in every panel.

All return an RGB uint8 array, which `pictures.write`'s PNG writer saves beside the report.
"""
import io

import matplotlib

matplotlib.use("Agg")  # no display: figures are rendered to PNG bytes

import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
from PIL import Image  # pylint: disable=g-import-not-at-top,wrong-import-position
from sklearn.decomposition import PCA  # pylint: disable=g-import-not-at-top,wrong-import-position
from sklearn.manifold import TSNE  # pylint: disable=g-import-not-at-top,wrong-import-position

import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position

from ssl_jax import losses  # pylint: disable=g-import-not-at-top,wrong-import-position


def _render(figure) -> np.ndarray:
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
  plt.close(figure)
  buffer.seek(0)
  return np.asarray(Image.open(buffer).convert("RGB"))


def embed_2d(features: np.ndarray, seed: int = 0) -> np.ndarray:
  """(n, d) features -> (n, 2) t-SNE coordinates of the L2-normalised, PCA-reduced rows."""
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or features.shape[0] < 3:
    raise ValueError(f"a 2-D map needs at least 3 rows of features, got shape {features.shape}")
  features = np.asarray(losses.l2_normalize(jnp.asarray(features, jnp.float32), axis=1),
                        np.float64)
  components = min(50, features.shape[0] - 1, features.shape[1])
  if features.shape[1] > components:
    features = PCA(components, random_state=seed).fit_transform(features)
  perplexity = min(30.0, (features.shape[0] - 1) / 3.0)
  return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)


def feature_map(sources: dict[str, tuple[np.ndarray, np.ndarray]], max_points: int = 2000,
                seed: int = 0) -> np.ndarray:
  """{source: (test features, test labels)} -> one RGB image, a t-SNE panel per source."""
  figure, axes = plt.subplots(1, len(sources), figsize=(4.2 * len(sources), 4.2), squeeze=False)
  num_classes = len(np.unique(np.concatenate([labels for _, labels in sources.values()])))
  for axis, (source, (features, labels)) in zip(axes[0], sources.items()):
    rows = np.arange(len(labels))
    if len(rows) > max_points:
      rows = np.sort(np.random.default_rng(seed).choice(rows, max_points, replace=False))
    points = embed_2d(features[rows], seed)
    classes = labels[rows]
    colours = plt.get_cmap("tab10" if num_classes <= 10 else "tab20")
    for cls in np.unique(classes):
      members = classes == cls
      axis.scatter(points[members, 0], points[members, 1], s=4, color=colours(cls % 20),
                   label=str(cls))
    axis.set_title(f"{source} ({len(rows)} test images)")
    axis.set_xticks([])
    axis.set_yticks([])
  if num_classes <= 20:
    axes[0][-1].legend(title="class", loc="center left", bbox_to_anchor=(1.0, 0.5),
                       markerscale=3, fontsize=8)
  figure.suptitle("t-SNE of the test features")
  return _render(figure)


def accuracy_curves(results: list[dict], all_labels_x: float) -> np.ndarray:
  """Report rows -> one RGB image: accuracy vs labels per class, a panel per protocol.

  Rows with `labels_per_class` None (all labels) are drawn at `all_labels_x`; rows of other
  shapes (fine-tuning on a label fraction, zero-shot with 0 labels, another metric such as
  the anomaly rows' AUROC) are left out.
  """
  rows = [r for r in results if "label_fraction" not in r and r["labels_per_class"] != 0
          and r.get("metric", "accuracy") == "accuracy"]
  protocols = list(dict.fromkeys(r["protocol"] for r in rows))
  if not protocols:
    raise ValueError("no accuracy rows to draw")
  figure, axes = plt.subplots(1, len(protocols), figsize=(4.2 * len(protocols), 3.6),
                              squeeze=False, sharey=True)
  for axis, protocol in zip(axes[0], protocols):
    for source in dict.fromkeys(r["features"] for r in rows):
      cells = sorted(((r["labels_per_class"] or all_labels_x), r) for r in rows
                     if r["protocol"] == protocol and r["features"] == source)
      if not cells:
        continue
      x = [c[0] for c in cells]
      axis.errorbar(x, [100 * c[1]["accuracy"] for c in cells],
                    yerr=[100 * c[1]["std"] for c in cells], marker="o", capsize=3,
                    label=source)
    axis.set_xscale("log")
    axis.set_title(protocol)
    axis.set_xlabel("labels per class (rightmost: all)")
    axis.grid(alpha=0.3)
  axes[0][0].set_ylabel("test accuracy (%)")
  axes[0][-1].legend(loc="lower right", fontsize=8)
  return _render(figure)


def anomaly_aurocs(rows: list[dict], titles: dict[str, str] | None = None) -> np.ndarray:
  """The anomaly protocols' rows -> one RGB image: a panel per protocol (titled by `titles`,
  else its name) with each class's AUROC as the normal class, a group of bars per class and a
  bar per feature source, chance (50%) dashed."""
  protocols = list(dict.fromkeys(r["protocol"] for r in rows))
  sources = list(dict.fromkeys(r["features"] for r in rows))
  num_classes = len(rows[0]["per_class"])
  classes = np.arange(num_classes)
  colours = plt.get_cmap("tab10")
  figure, axes = plt.subplots(len(protocols), 1, squeeze=False, sharex=True,
                              figsize=(max(5.0, 0.6 * num_classes + 2), 3.6 * len(protocols)))
  for axis, protocol in zip(axes[:, 0], protocols):
    panel = [r for r in rows if r["protocol"] == protocol]
    width = 0.8 / len(panel)
    for i, row in enumerate(panel):
      values = [np.nan if v is None else 100 * v for v in row["per_class"]]
      axis.bar(classes + (i - (len(panel) - 1) / 2) * width, values, width,
               color=colours(sources.index(row["features"]) % 10),
               label=f"{row['features']} (mean {100 * row['accuracy']:.1f})")
    axis.axhline(50, color="grey", linestyle="--", linewidth=1)
    axis.set_xticks(classes)
    axis.set_ylabel("AUROC (%)")
    axis.set_ylim(0, 100)
    axis.set_title((titles or {}).get(protocol, protocol))
    # Outside the axes: with AUROCs near 100% the bars fill the panel.
    axis.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    axis.grid(alpha=0.3, axis="y")
  axes[-1, 0].set_xlabel("normal class")
  figure.suptitle("one-class anomaly detection")
  return _render(figure)
