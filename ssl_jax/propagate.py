r"""Label the rest of your own texts or images from a few labelled ones: frozen features, then
label propagation.

    python -m ssl_jax.propagate --pretrained=distilbert-base-uncased \
        --input=reviews.csv --out=predicted.csv
    python -m ssl_jax.propagate --workdir=runs/simclr_digits \
        --input=scans/ --labels=some_labels.csv --out=predicted.csv

The SSL introductions' example (frozen embeddings of a pretrained encoder, then scikit-learn's
label propagation labelling the rest of a small set) on the user's own files, offline:

  - Input: a CSV or JSONL file of texts with a text column and a label column, where an empty
    label, -1 or a missing field means unlabelled; or an image folder (every PNG / JPEG / BMP /
    GIF / WebP below it, in sorted order) with `--labels=CSV` holding `file,label` rows for
    some of the files (paths relative to the folder). Labels are integers or names.
  - Features: with `--workdir`, the run's own `represent` (any image or text method), its
    inputs preprocessed as its evaluation pipeline does; with `--pretrained` (texts), the
    published encoder's last hidden states mean-pooled over each text's tokens
    (`ssl_jax.pretrained`).
  - Propagation: `eval.label_propagation` on the features as they come (as the probes use
    them): label spreading over the kNN graph (Zhou et al. 2004, scikit-learn's
    `LabelSpreading(kernel="knn")`) by default, or `--kernel=rbf` for scikit-learn's
    `LabelPropagation(kernel="rbf")` (Zhu and Ghahramani 2002), a dense graph for small sets.
  - Output: `--out` CSV with every row's text or file, its given label (empty when none), the
    predicted label and its confidence (the row's share of the propagated label mass). With a
    column of true labels (`--truth_column`), the accuracy on the rows that were unlabelled is
    printed.

A bad row (an unreadable image, an empty text, a label that is neither an integer nor a name)
is a one-line error naming it; nothing is written then.
"""
import csv
import dataclasses
import json
import os
import sys

from ssl_jax import tensorflow_quiet

tensorflow_quiet.silence_start_up()  # before anything imports TensorFlow

from absl import app, flags, logging  # pylint: disable=g-import-not-at-top

from ssl_jax.errors import UserError, exit_on_user_error  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
UNLABELLED = ("", "-1", None)
KERNELS = ("knn", "rbf")


def _define_flags():
  """Defined when run as a program, not at import (tests import the module)."""
  flags.DEFINE_string("workdir", None, "A run whose representation embeds the rows.")
  flags.DEFINE_string("pretrained", None, "A published text encoder (folder or a name in the "
                      "local Hugging Face cache) whose mean-pooled states embed the rows.")
  flags.DEFINE_string("input", None, "A CSV / JSONL file of texts, or a folder of images.")
  flags.DEFINE_string("labels", None, "For an image folder: a CSV of file,label rows.")
  flags.DEFINE_string("out", None, "Where to write the predictions (CSV).")
  flags.DEFINE_string("text_column", "text", "The texts' column / field.")
  flags.DEFINE_string("label_column", "label", "The given labels' column / field.")
  flags.DEFINE_string("truth_column", None, "A column of true labels to score the predictions.")
  flags.DEFINE_enum("kernel", "knn", KERNELS, "kNN label spreading or RBF propagation.")
  flags.DEFINE_integer("n_neighbors", 7, "kNN graph: neighbours of each row (itself included).")
  flags.DEFINE_float("alpha", 0.2, "kNN label spreading: the share taken from neighbours.")
  flags.DEFINE_float("gamma", 20.0, "RBF propagation: exp(-gamma * squared distance).")
  flags.DEFINE_integer("batch_size", 64, "Rows embedded at a time.")


@dataclasses.dataclass
class Rows:
  """What to embed and the labels given: `items` are texts or image paths; `names` how each
  is written in the output (the text, or the path relative to the folder)."""
  kind: str  # "text" or "image"
  items: list
  names: list[str]
  given: list[str | None]
  truth: list[str | None] | None


def _label(value, where: str) -> str | None:
  """A label cell as text, None when unlabelled; lists, objects and fractions are refused."""
  if isinstance(value, bool) or isinstance(value, (list, dict)) or (
      isinstance(value, float) and not value.is_integer()):
    raise UserError(f"{where}: label {value!r} is neither an integer nor a name")
  if isinstance(value, float):
    value = int(value)
  text = None if value is None else str(value).strip()
  return None if text in UNLABELLED else text


def _table(path: str) -> list[dict]:
  """Rows of a CSV (header row) or JSONL file as dicts."""
  try:
    with open(path, encoding="utf-8", newline="") as f:
      if path.lower().endswith(".jsonl"):
        rows = []
        for number, line in enumerate(f, 1):
          if line.strip():
            try:
              row = json.loads(line)
            except json.JSONDecodeError as e:
              raise UserError(f"{path} line {number}: not JSON ({e.msg})") from None
            if not isinstance(row, dict):
              raise UserError(f"{path} line {number}: not a JSON object")
            rows.append(row)
        return rows
      return list(csv.DictReader(f))
  except (OSError, UnicodeDecodeError) as e:
    raise UserError(f"cannot read {path}: {e}") from None


def _column(rows: list[dict], column: str | None, path: str, name: str, row_word: str):
  if column is None:
    return None
  if rows and not any(column in row for row in rows):
    raise UserError(f"{path} has no {name} column '{column}' (it has {', '.join(rows[0])})")
  return [_label(row.get(column), f"{path} {row_word} {i}") for i, row in enumerate(rows, 1)]


def read_texts(path: str, text_column: str, label_column: str, truth_column: str | None
               ) -> Rows:
  rows = _table(path)
  if not rows:
    raise UserError(f"{path} has no rows")
  row_word = "line" if path.lower().endswith(".jsonl") else "row"
  texts = []
  for i, row in enumerate(rows, 1):
    text = row.get(text_column)
    if not isinstance(text, str) or not text.strip():
      raise UserError(f"{path} {row_word} {i}: no text in '{text_column}'")
    texts.append(text)
  return Rows("text", texts, texts, _column(rows, label_column, path, "label", row_word),
              _column(rows, truth_column, path, "truth", row_word))


def read_image_folder(folder: str, labels_path: str | None, label_column: str,
                      truth_column: str | None) -> Rows:
  files = sorted(os.path.relpath(os.path.join(base, name), folder).replace(os.sep, "/")
                 for base, dirs, names in os.walk(folder) for name in names
                 if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."))
  if not files:
    raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
  given, truth = {}, {}
  if labels_path:
    table = _table(labels_path)
    for i, row in enumerate(table, 1):
      name = (row.get("file") or "").strip()
      if name not in files:
        raise UserError(f"{labels_path} row {i}: file {name!r} is not an image in {folder}")
      given[name] = _label(row.get(label_column), f"{labels_path} row {i}")
      if truth_column:
        truth[name] = _label(row.get(truth_column), f"{labels_path} row {i}")
  return Rows("image", [os.path.join(folder, f) for f in files], files,
              [given.get(f) for f in files],
              [truth.get(f) for f in files] if truth_column else None)


def read_rows(path: str, labels_path: str | None, text_column: str, label_column: str,
              truth_column: str | None) -> Rows:
  if os.path.isdir(path):
    return read_image_folder(path, labels_path, label_column, truth_column)
  if not os.path.isfile(path):
    raise UserError(f"--input {path} does not exist")
  if not path.lower().endswith((".csv", ".jsonl")):
    raise UserError(f"--input {path}: give a .csv or .jsonl file of texts, or an image folder")
  if labels_path:
    raise UserError("--labels is for an image folder; a text file holds its own labels")
  return read_texts(path, text_column, label_column, truth_column)


def class_names(given: list[str | None]) -> list[str]:
  """The classes, sorted: numerically when every given label is an integer."""
  names = sorted({label for label in given if label is not None})
  if all(name.lstrip("-").isdigit() for name in names):
    names.sort(key=int)
  return names


def decode_image(path: str):
  """The image at `path` as uint8 RGB [h, w, 3]; a one-line error when it cannot be read."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image, UnidentifiedImageError  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as image:
      return np.asarray(image.convert("RGB"))
  except (OSError, UnidentifiedImageError, ValueError) as e:
    raise UserError(f"cannot read image {path}: {e}") from None


def run_embedder(workdir: str, kind: str, batch_size: int):
  """A function from a list of items (texts or image paths) to the run's features."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from ssl_jax import config_lib, restore  # pylint: disable=g-import-not-at-top

  config = config_lib.load_saved(workdir)
  checkpoint = restore.latest(config, workdir)
  inputs = checkpoint.inputs
  modality = inputs.modality
  if modality.kind != kind:
    raise UserError(f"'{workdir}' is a {modality.kind} run ({config.method} on "
                    f"{config.dataset}); --input holds {kind}s")
  params, extra = checkpoint.state["params"]["model"], checkpoint.state["extra"]
  represent = jax.jit(lambda batch: checkpoint.method.represent(
      params, extra, modality.normalize(modality.eval_inputs(batch), config)))

  def embed(items: list) -> np.ndarray:
    count = len(items)
    items = items + items[-1:] * (batch_size - count)  # one compiled shape
    if kind == "text":
      batch = modality.encode_texts(inputs, items)
    else:
      batch = modality.encode_images(inputs, [decode_image(path) for path in items])
    return np.asarray(represent(batch))[:count]
  return embed


def pretrained_embedder(name_or_path: str, kind: str, batch_size: int):
  from ssl_jax import pretrained  # pylint: disable=g-import-not-at-top
  if kind != "text":
    raise UserError("--pretrained embeds texts; for images give --workdir of an image run")
  model = pretrained.load(name_or_path, dropout=0.0)
  return lambda items: pretrained.embed(model, items, batch_size)


def embed_rows(embed, items: list, batch_size: int):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from ssl_jax.eval import features  # pylint: disable=g-import-not-at-top
  starts = range(0, len(items), batch_size)
  return np.concatenate([embed(items[start:start + batch_size])
                         for start in features.progress(starts, "embedding", "batch")])


def propagate(features, given: list[str | None], names: list[str], kernel: str,
              n_neighbors: int, alpha: float, gamma: float):
  """(predicted class index [n], confidence [n]) of every row."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from ssl_jax.eval import label_propagation  # pylint: disable=g-import-not-at-top
  index = {name: i for i, name in enumerate(names)}
  known = np.array([-1 if label is None else index[label] for label in given], np.int64)
  if kernel == "knn":
    distributions = label_propagation.label_distributions(
        features, known, num_classes=len(names), n_neighbors=n_neighbors, alpha=alpha)
  else:
    distributions = label_propagation.rbf_label_distributions(
        features, known, num_classes=len(names), gamma=gamma)
  predicted = label_propagation.transduction(distributions, known, len(names))
  return predicted, distributions[np.arange(len(predicted)), predicted]


def write_predictions(path: str, rows: Rows, names: list[str], predicted, confidence) -> None:
  """The CSV, written to a temporary file first so that a failure leaves no half file."""
  column = "text" if rows.kind == "text" else "file"
  header = [column, "given_label", "predicted_label", "confidence"]
  header += ["true_label"] if rows.truth is not None else []
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  with open(path + ".tmp", "w", encoding="utf-8", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    for i, name in enumerate(rows.names):
      line = [name, rows.given[i] or "", names[predicted[i]], f"{confidence[i]:.4f}"]
      writer.writerow(line + ([rows.truth[i] or ""] if rows.truth is not None else []))
  os.replace(path + ".tmp", path)


def run(*, workdir: str | None, pretrained_model: str | None, input_path: str,
        labels_path: str | None, out: str, text_column: str = "text",
        label_column: str = "label", truth_column: str | None = None, kernel: str = "knn",
        n_neighbors: int = 7, alpha: float = 0.2, gamma: float = 20.0,
        batch_size: int = 64) -> dict:
  """Reads, embeds, propagates and writes; returns {"classes", "predicted" (names),
  "confidence", "features", "accuracy" (on the unlabelled rows, with a truth column)}."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  if bool(workdir) == bool(pretrained_model):
    raise UserError("give one of --workdir (a run) or --pretrained (a published text encoder)")
  if not out:
    raise UserError("--out is required (the CSV of predictions)")
  if kernel not in KERNELS or n_neighbors < 1 or not 0 < alpha < 1 or gamma <= 0 \
      or batch_size < 1:
    raise UserError(f"--kernel must be one of {', '.join(KERNELS)}, --n_neighbors and "
                    "--batch_size >= 1, --alpha in (0, 1) and --gamma > 0")
  rows = read_rows(input_path, labels_path, text_column, label_column, truth_column)
  if rows.given is None or all(label is None for label in rows.given):
    raise UserError(f"no labelled row in {labels_path or input_path} (column "
                    f"'{label_column}'): label a few rows to propagate from")
  names = class_names(rows.given)
  embed = (run_embedder(workdir, rows.kind, batch_size) if workdir
           else pretrained_embedder(pretrained_model, rows.kind, batch_size))
  features = embed_rows(embed, rows.items, batch_size)
  predicted, confidence = propagate(features, rows.given, names, kernel, n_neighbors, alpha,
                                    gamma)
  write_predictions(out, rows, names, predicted, confidence)
  result = {"classes": names, "predicted": [names[p] for p in predicted],
            "confidence": confidence, "features": features, "accuracy": None}
  if rows.truth is not None:
    scored = [i for i, label in enumerate(rows.given) if label is None
              and rows.truth[i] is not None]
    if scored:
      result["accuracy"] = float(np.mean([result["predicted"][i] == rows.truth[i]
                                          for i in scored]))
      result["scored"] = len(scored)
  return result


@exit_on_user_error
def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.input:
    raise UserError("--input is required (a CSV / JSONL file of texts, or an image folder)")
  result = run(workdir=FLAGS.workdir, pretrained_model=FLAGS.pretrained, input_path=FLAGS.input,
               labels_path=FLAGS.labels, out=FLAGS.out, text_column=FLAGS.text_column,
               label_column=FLAGS.label_column, truth_column=FLAGS.truth_column,
               kernel=FLAGS.kernel, n_neighbors=FLAGS.n_neighbors, alpha=FLAGS.alpha,
               gamma=FLAGS.gamma, batch_size=FLAGS.batch_size)
  count = len(result["predicted"])
  print(f"labelled {count} rows into {len(result['classes'])} classes: {FLAGS.out}")
  if result["accuracy"] is not None:
    print(f"accuracy on the {result['scored']} unlabelled rows: {100 * result['accuracy']:.1f}%")
  sys.stdout.flush()


if __name__ == "__main__":
  _define_flags()
  logging.set_verbosity(logging.ERROR)
  app.run(main)
