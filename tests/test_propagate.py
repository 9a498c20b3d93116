"""`python -m ssl_jax.propagate`: the user's own texts or images labelled from a few, with a
run's features or a published encoder's; the predictions are `eval.label_propagation`'s on
the same features, which scikit-learn's label spreading / propagation agree with, and bad
rows are one-line errors.
"""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn.semi_supervised import LabelPropagation, LabelSpreading

from ssl_jax import propagate, restore, train
from ssl_jax.errors import UserError
from ssl_jax.eval import label_propagation
from tiny_configs import tiny_digits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_csv(path):
  with open(path, newline="", encoding="utf-8") as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
  """A 2-step digits SimCLR run and 60 of its test images written as PNG files."""
  base = tmp_path_factory.mktemp("propagate")
  config = tiny_digits(str(base / "tfds"), total_steps=2, checkpoint_every_steps=2,
                       mesh="data:1")
  workdir = str(base / "run")
  train.run(config, workdir)
  checkpoint = restore.latest(config, workdir)
  batch = next(checkpoint.inputs.eval_batches("test", batch_size=60))
  folder = base / "scans"
  from PIL import Image  # pylint: disable=g-import-not-at-top
  for i, (image, label) in enumerate(zip(batch["image"], batch["label"])):
    (folder / str(label)).mkdir(parents=True, exist_ok=True)  # subfolders are not labels
    Image.fromarray(image[..., 0]).save(folder / str(label) / f"{i:02d}.png")
  return config, workdir, checkpoint, batch, folder


def test_an_image_folder_is_labelled_with_the_runs_features(digits_run, tmp_path):
  config, workdir, checkpoint, batch, folder = digits_run
  files = sorted(f"{label}/{i:02d}.png" for i, label in enumerate(batch["label"]))
  truth = {f"{label}/{i:02d}.png": int(label) for i, label in enumerate(batch["label"])}
  given = {}
  for name in files:  # two labelled files of each class
    if sum(truth[g] == truth[name] for g in given) < 2:
      given[name] = truth[name]
  with open(tmp_path / "labels.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["file", "label", "digit"])
    for name in files:
      writer.writerow([name, given.get(name, ""), truth[name]])
  result = propagate.run(workdir=workdir, pretrained_model=None, input_path=str(folder),
                         labels_path=str(tmp_path / "labels.csv"), out=str(tmp_path / "p.csv"),
                         truth_column="digit", batch_size=16)
  # The PNGs, read and preprocessed as the run's evaluation does, give the dataset's features.
  state = checkpoint.state
  modality = checkpoint.inputs.modality
  order = [int(name.split("/")[1][:2]) for name in files]
  expected = np.asarray(checkpoint.method.represent(
      state["params"]["model"], state["extra"],
      modality.normalize(modality.eval_inputs(batch), config)))[order]
  np.testing.assert_allclose(result["features"], expected, rtol=1e-5, atol=1e-5)
  names = [str(c) for c in range(10)]
  assert result["classes"] == names
  known = np.array([given.get(name, -1) for name in files])
  spread = label_propagation.label_spreading(result["features"], known, num_classes=10)
  assert result["predicted"] == [names[p] for p in spread]
  sklearn = LabelSpreading(kernel="knn", n_neighbors=7, alpha=0.2, max_iter=30, tol=1e-3)
  np.testing.assert_array_equal(sklearn.fit(result["features"], known).transduction_, spread)
  rows = read_csv(tmp_path / "p.csv")
  assert [r["file"] for r in rows] == files and [r["predicted_label"] for r in rows] == \
      result["predicted"]
  assert all(0 < float(r["confidence"]) <= 1 for r in rows)
  unlabelled = [i for i, name in enumerate(files) if name not in given]
  assert result["scored"] == len(unlabelled) == 40
  assert result["accuracy"] == pytest.approx(np.mean(
      [int(result["predicted"][i]) == truth[files[i]] for i in unlabelled]))


def test_texts_with_a_published_encoder_and_the_rbf_kernel(tmp_path):
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  import hf_models  # pylint: disable=g-import-not-at-top
  from ssl_jax import pretrained  # pylint: disable=g-import-not-at-top
  folder = str(tmp_path / "distilbert")
  hf_models.save("distilbert_base_model", folder)
  texts = hf_models.CORPUS + ["Lyon, Paris and the Seine.", "Hello, hello world!",
                              "Accents: café, naïve, résumé.", "A river is a river."]
  labels = ["geo", "", "geo", "", "greet", "", "-1"]
  with open(tmp_path / "texts.jsonl", "w") as f:
    for text, label in zip(texts, labels):
      f.write(json.dumps({"text": text, "label": label}) + "\n")
  result = propagate.run(workdir=None, pretrained_model=folder,
                         input_path=str(tmp_path / "texts.jsonl"), labels_path=None,
                         out=str(tmp_path / "p.csv"), kernel="rbf", gamma=0.05)
  features = pretrained.embed(pretrained.load(folder, dropout=0.0), texts)
  np.testing.assert_allclose(result["features"], features, rtol=1e-6)
  known = np.array([{"geo": 0, "greet": 1}.get(label, -1) for label in labels])
  expected = label_propagation.rbf_label_propagation(features, known, num_classes=2, gamma=0.05)
  assert result["predicted"] == [["geo", "greet"][p] for p in expected]
  sklearn = LabelPropagation(kernel="rbf", gamma=0.05, max_iter=1000, tol=1e-3)
  np.testing.assert_array_equal(sklearn.fit(features, known).transduction_, expected)
  assert [r["text"] for r in read_csv(tmp_path / "p.csv")] == texts


@pytest.mark.parametrize("content,cause", [
    ('{"text": "", "label": "a"}\n', "line 1: no text in 'text'"),
    ('{"text": "a", "label": [1]}\n', "line 1: label [1] is neither an integer nor a name"),
    ('{"text": "a", "label": -1}\n', "no labelled row"),
])
def test_bad_text_rows_are_named(content, cause, tmp_path):
  (tmp_path / "t.jsonl").write_text(content)
  with pytest.raises(UserError, match=cause.replace("[", r"\[").replace("]", r"\]")):
    propagate.run(workdir=None, pretrained_model="unused", input_path=str(tmp_path / "t.jsonl"),
                  labels_path=None, out=str(tmp_path / "p.csv"))
  assert not os.path.exists(tmp_path / "p.csv")


def test_an_unreadable_image_is_one_line_and_nothing_is_written(digits_run, tmp_path):
  _, workdir, _, _, folder = digits_run
  scans = tmp_path / "scans"
  scans.mkdir()
  (scans / "a.png").write_bytes((folder / os.listdir(folder)[0] /
                                 os.listdir(folder / os.listdir(folder)[0])[0]).read_bytes())
  (scans / "broken.png").write_text("not an image")
  (tmp_path / "labels.csv").write_text("file,label\na.png,3\n")
  result = subprocess.run(
      [sys.executable, "-m", "ssl_jax.propagate", f"--workdir={workdir}", f"--input={scans}",
       f"--labels={tmp_path / 'labels.csv'}", f"--out={tmp_path / 'p.csv'}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert errors == [f"error: cannot read image {scans / 'broken.png'}: " + errors[0].split(
      ": ", 2)[2]] and "broken.png" in errors[0]
  assert not os.path.exists(tmp_path / "p.csv")
