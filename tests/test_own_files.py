"""Pre-training on the user's own files (`--config.dataset=folder:PATH`): the image and text
folder builders (layouts, the fixed split, unreadable files, stored statistics), runs end to
end on them, and one-line errors for bad inputs."""
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from configs import mlm
from ssl_jax import run as run_lib, train
from ssl_jax.data import image_pipeline, stream, text_pipeline
from ssl_jax.data.builders import user_files
from ssl_jax.errors import UserError
from ssl_jax.modalities import image as image_modality
from tests.tiny_configs import override, tiny_digits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("bird", "cat", "dog")
COLOURS = {"bird": (220, 200, 40), "cat": (200, 40, 40), "dog": (40, 60, 210)}
PER_CLASS = 10  # readable images of each class
UNREADABLE = ("cat/truncated.jpg", "dog/text.jpg")


def _write_images(folder: str, classes=CLASSES, per_class: int = PER_CLASS, seed: int = 0,
                  odd_ones: bool = True) -> None:
  """`folder/<class>/<i>.png|jpg` of random sizes, tinted by class; with `odd_ones` one of
  each of grayscale, RGBA and palette images, a truncated JPEG, a text file named .jpg and a
  note that is no image."""
  rng = np.random.default_rng(seed)
  for name in classes:
    os.makedirs(os.path.join(folder, name), exist_ok=True)
    for i in range(per_class - (odd_ones and name == "bird") * 3):
      height, width = rng.integers(5, 40, 2)
      pixels = np.clip(rng.normal(COLOURS.get(name, (128, 128, 128)), 40, (height, width, 3)),
                       0, 255).astype(np.uint8)
      Image.fromarray(pixels).save(os.path.join(folder, name, f"{i}.{'png' if i % 2 else 'jpg'}"))
  if not odd_ones:
    return
  gray = rng.integers(0, 256, (12, 20), np.uint8)
  Image.fromarray(gray, "L").save(os.path.join(folder, "bird", "gray.png"))
  Image.fromarray(rng.integers(0, 256, (16, 9, 4), np.uint8), "RGBA").save(
      os.path.join(folder, "bird", "alpha.png"))
  Image.fromarray(rng.integers(0, 256, (30, 30, 3), np.uint8)).convert("P").save(
      os.path.join(folder, "bird", "palette.gif"))
  Image.fromarray(rng.integers(0, 256, (64, 64, 3), np.uint8)).save(
      os.path.join(folder, "cat", "truncated.jpg"), quality=95)
  with open(os.path.join(folder, "cat", "truncated.jpg"), "r+b") as f:
    f.truncate(os.path.getsize(f.name) // 2)
  with open(os.path.join(folder, "dog", "text.jpg"), "w") as f:
    f.write("this is not a JPEG")
  with open(os.path.join(folder, "notes.txt"), "w") as f:
    f.write("not an image, ignored")


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> str:
  folder = str(tmp_path_factory.mktemp("pictures"))
  _write_images(folder)
  return folder


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
  return str(tmp_path_factory.mktemp("tfds"))


def _image_config(data_dir: str, folder: str, **dotted):
  """The digits SimCLR recipe, tiny, on `folder` (8x8 views) normalised with its own
  statistics."""
  return tiny_digits(data_dir, **{"dataset": f"folder:{folder}", "data.statistics": "dataset",
                                  "batch_size": 8, **dotted})


def _splits(builder) -> dict[str, dict[str, np.ndarray]]:
  return {split: tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
          for split in ("train", "test")}


def _files(examples) -> set[str]:
  return {f.decode() for f in examples["file"]}


def _warnings(caplog, text: str) -> list[str]:
  return [r.getMessage() for r in caplog.records
          if r.levelno == logging.WARNING and text in r.getMessage()]


# The image builder.


def test_image_folder_reads_mixed_images_and_skips_unreadable_ones(pictures, data_dir, caplog):
  with caplog.at_level(logging.WARNING):
    builder = stream.load_builder(_image_config(data_dir, pictures))
  for name in UNREADABLE:  # one line each, naming the file
    assert len(_warnings(caplog, os.path.join(pictures, name))) == 1
  assert builder.info.features["label"].names == list(CLASSES)
  splits = _splits(builder)
  files = _files(splits["train"]) | _files(splits["test"])
  assert len(files) == len(CLASSES) * PER_CLASS and not set(UNREADABLE) & files
  assert {"bird/gray.png", "bird/alpha.png", "bird/palette.gif"} <= files
  for examples in splits.values():
    assert examples["image"].shape[1:] == (8, 8, 3) and examples["image"].dtype == np.uint8
    for path, label in zip(examples["file"], examples["label"]):
      assert CLASSES[label] == path.decode().split("/")[0]
    gray = [i for i, f in enumerate(examples["file"]) if f == b"bird/gray.png"]
    for i in gray:  # stored as RGB, three equal channels
      np.testing.assert_array_equal(examples["image"][i][..., 0], examples["image"][i][..., 2])
  info = image_pipeline.dataset_info(_image_config(data_dir, pictures))
  assert (info.num_classes, info.class_names, info.input_shape) == (3, CLASSES, (8, 8, 3))
  assert info.num_train_examples + info.num_test_examples == len(files)


def _expected_test_files(folder: str) -> set[str]:
  """The fixed split written out: per class, the first 20% of the files in the order of the
  SHA-1 of their relative paths."""
  expected = set()
  for name in CLASSES:
    paths = sorted(f"{name}/{f}" for f in os.listdir(os.path.join(folder, name)))
    ranked = sorted(paths, key=lambda p: hashlib.sha1(p.encode()).hexdigest())
    expected |= set(ranked[:round(0.2 * len(paths))])
  return expected - set(UNREADABLE)


def test_fixed_split_is_20_percent_per_class_by_path_and_deterministic(
    pictures, data_dir, tmp_path):
  splits = _splits(stream.load_builder(_image_config(data_dir, pictures)))
  assert _files(splits["test"]) == _expected_test_files(pictures)
  copy = str(tmp_path / "elsewhere")
  shutil.copytree(pictures, copy)
  again = _splits(stream.load_builder(_image_config(str(tmp_path / "tfds"), copy)))
  for split in ("train", "test"):
    assert _files(again[split]) == _files(splits[split])
  assert user_files.held_out(["a"]) == [False] and sum(user_files.held_out(list("ab"))) == 1


def test_stored_statistics_are_those_of_the_stored_train_images(pictures, data_dir):
  config = _image_config(data_dir, pictures)
  builder = stream.load_builder(config)
  pixels = _splits(builder)["train"]["image"].reshape(-1, 3) / 255.0
  mean, std = stream.pixel_statistics(config)
  np.testing.assert_allclose(mean, pixels.mean(axis=0), rtol=1e-9)
  np.testing.assert_allclose(std, pixels.std(axis=0), rtol=1e-9)
  resolved = image_modality.MODALITY.resolve_config(config)
  np.testing.assert_allclose(resolved.augment.mean, pixels.mean(axis=0), atol=1e-6)
  np.testing.assert_allclose(resolved.augment.std, pixels.std(axis=0), atol=1e-6)
  assert resolved.augment.mean != config.augment.mean  # the config itself is left as it was
  recipe = override(_image_config(data_dir, pictures), **{"data.statistics": "augment"})
  assert image_modality.MODALITY.resolve_config(recipe) is recipe
  with pytest.raises(UserError, match="stores no pixel statistics"):
    image_modality.MODALITY.resolve_config(tiny_digits(data_dir, **{"data.statistics": "dataset"}))


def test_a_changed_folder_is_prepared_again(data_dir, tmp_path):
  folder = str(tmp_path / "changing")
  _write_images(folder, per_class=3, odd_ones=False)
  config = _image_config(data_dir, folder)
  first = stream.load_builder(config).data_dir
  assert stream.load_builder(config).data_dir == first  # read, not prepared again
  _write_images(os.path.join(folder, "more"), classes=("cat",), per_class=1, seed=1,
                odd_ones=False)
  assert stream.load_builder(config).data_dir != first


def test_train_and_test_folders_are_the_splits(data_dir, tmp_path):
  folder = str(tmp_path / "given")
  _write_images(os.path.join(folder, "train"), classes=("cat", "dog"), per_class=4,
                odd_ones=False)
  _write_images(os.path.join(folder, "test"), classes=("cat", "dog"), per_class=2, seed=1,
                odd_ones=False)
  splits = _splits(stream.load_builder(_image_config(data_dir, folder)))
  assert {f.split("/")[0] for f in _files(splits["train"])} == {"train"}
  assert len(splits["train"]["file"]) == 8 and len(splits["test"]["file"]) == 4
  assert sorted(np.bincount(splits["test"]["label"])) == [2, 2]
  os.rename(os.path.join(folder, "test"), os.path.join(folder, "held_out"))
  with pytest.raises(UserError, match="no 'test' beside it"):
    stream.load_builder(_image_config(data_dir, folder))


def test_a_flat_folder_is_unlabelled(data_dir, tmp_path):
  folder = str(tmp_path / "flat")
  _write_images(folder, classes=("images",), per_class=10, odd_ones=False)
  config = _image_config(data_dir, folder)  # one subfolder is no classes: unlabelled
  builder = stream.load_builder(config)
  assert "label" not in builder.info.features
  info = image_pipeline.dataset_info(config)
  assert (info.num_classes, info.class_names) == (None, None)
  assert (info.num_train_examples, info.num_test_examples) == (8, 2)
  batch = next(image_pipeline.train_batches(config, start_step=0, process_index=0,
                                            process_count=1))
  assert set(batch) == {"views"} and batch["views"].shape == (8, 2, 8, 8, 3)


# Errors: one line, before training.


def test_bad_folders_are_one_line_errors(data_dir, tmp_path):
  missing = str(tmp_path / "missing")
  with pytest.raises(UserError, match=f"{re.escape(missing)} does not exist"):
    stream.load_builder(_image_config(data_dir, missing))
  empty = tmp_path / "empty"
  (empty / "sub").mkdir(parents=True)
  (empty / "readme.md").write_text("no images here")
  with pytest.raises(UserError, match=f"no images .* in {re.escape(str(empty))}$"):
    stream.load_builder(_image_config(data_dir, str(empty)))
  lonely = tmp_path / "lonely"
  _write_images(str(lonely), classes=("cat", "dog"), per_class=1, odd_ones=False)
  with pytest.raises(UserError, match="the test split has no images"):
    stream.load_builder(_image_config(data_dir, str(lonely)))
  sequences = override(_image_config(data_dir, str(lonely)), **{"data.modality": "sequence"})
  with pytest.raises(UserError, match="sequence inputs cannot be read from a folder"):
    stream.load_builder(sequences)


def _text_config(data_dir: str, path: str, **dotted):
  config = mlm.get_config("python_docs,runlocal=True")
  config.unlock()
  return override(config, **{"dataset": f"folder:{path}", "data.data_dir": data_dir,
                             "batch_size": 16, "total_steps": 3, "evaluate_at_end": False,
                             "mesh": "data:1", **dotted})


def _write_jsonl(path: str, rows: list) -> None:
  with open(path, "w") as f:
    f.write("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")


def test_bad_jsonl_rows_are_one_line_errors(data_dir, tmp_path):
  cases = {"no_text.jsonl": ([{"text": "fine"}, {"body": "no text field"}], ":2: the row has no "
                             "'text' string \\(its fields: body\\)"),
           "not_json.jsonl": (['{"text": "fine"}', "{oops"], ":2: not a JSON line"),
           "some_labels.jsonl": ([{"text": "a", "label": "x"}, {"text": "b"}], ":2 has no label "
                                 "while .*:1 has one"),
           "bad_label.jsonl": ([{"text": "a", "label": [1]}], ":1: 'label' must be a string")}
  for name, (rows, message) in cases.items():
    path = str(tmp_path / name)
    _write_jsonl(path, rows)
    with pytest.raises(UserError, match=message):
      stream.load_builder(_text_config(data_dir, path))


@pytest.mark.slow
def test_a_missing_folder_is_one_line_from_the_command_line(tmp_path):
  missing = str(tmp_path / "nowhere")
  result = subprocess.run(
      [sys.executable, "-m", "ssl_jax.main", "--config=configs/simclr.py:digits",
       f"--workdir={tmp_path / 'run'}", f"--config.dataset=folder:{missing}",
       f"--config.data.data_dir={tmp_path / 'tfds'}"],
      capture_output=True, text=True, cwd=ROOT, timeout=300,
      env={**os.environ, "PYTHONPATH": ROOT})
  assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert errors == [f"error: dataset 'folder:{missing}': {missing} does not exist"]


# Texts.


def test_a_folder_of_txt_files_builds_one_example_per_paragraph(data_dir, tmp_path, caplog):
  folder = tmp_path / "texts"
  (folder / "sub").mkdir(parents=True)
  paragraphs = [f"Paragraph {i} is about   topic {i % 3}.\nIt goes on." for i in range(12)]
  (folder / "a.txt").write_text("\n\n".join(paragraphs[:7]) + "\n")
  (folder / "sub" / "b.txt").write_text("\n \n".join(paragraphs[7:]))
  (folder / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
  config = _text_config(data_dir, str(folder))
  with caplog.at_level(logging.WARNING):
    splits = _splits(stream.load_builder(config))
  assert len(_warnings(caplog, str(folder / "latin1.txt"))) == 1
  texts = sorted(t.decode() for split in splits.values() for t in split["text"])
  assert texts == sorted(" ".join(p.split()) for p in paragraphs)
  assert (len(splits["train"]["text"]), len(splits["test"]["text"])) == (10, 2)
  assert "label" not in splits["train"]
  info = text_pipeline.dataset_info(config)
  assert (info.num_classes, info.input_shape) == (None, (config.data.max_length,))


def test_train_and_test_jsonl_files_are_the_splits(data_dir, tmp_path):
  _write_jsonl(str(tmp_path / "train.jsonl"), [{"text": f"train text {i}", "label": "a" if i % 2
                                                else "b"} for i in range(6)])
  _write_jsonl(str(tmp_path / "test.jsonl"), [{"text": "test text", "label": "b"}])
  splits = _splits(stream.load_builder(_text_config(data_dir, str(tmp_path))))
  assert {split: sorted(t.decode() for t in examples["text"])
          for split, examples in splits.items()} == {
              "train": [f"train text {i}" for i in range(6)], "test": ["test text"]}
  assert splits["test"]["label"].tolist() == [1]


@pytest.mark.slow
def test_mlm_trains_on_a_jsonl_file(data_dir, tmp_path):
  path = str(tmp_path / "reviews.jsonl")
  words = ["good", "bad", "fine", "plot", "actors", "music", "long", "short", "story"]
  rng = np.random.default_rng(0)
  _write_jsonl(path, [{"text": " ".join(rng.choice(words, 12)), "label": int(i % 3)}
                      for i in range(60)])
  config = _text_config(data_dir, path)
  info = text_pipeline.dataset_info(override(config.copy_and_resolve_references(),
                                             **{"data.label_key": "label"}))
  assert (info.num_train_examples, info.num_test_examples) == (48, 12)
  assert info.num_classes == 3
  assert stream.load_builder(config).info.features["label"].names == ["0", "1", "2"]
  workdir = str(tmp_path / "run")
  outcome = train.train(config, workdir)
  assert outcome.completed and int(outcome.state["step"]) == 3
  assert os.path.exists(os.path.join(workdir, "tokenizer.json"))
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert rows and all(np.isfinite(r["loss"]) for r in rows)


# Runs end to end.


def _tiny_evaluation(**dotted) -> dict:
  return {"evaluate_at_end": True, "total_steps": 2, "log_every_steps": 1,
          "checkpoint_every_steps": 2, "evals.probes.protocols": ("linear", "knn"),
          "evals.probes.labels_per_class": (1, 0), "evals.probes.seeds": 1, **dotted}


@pytest.mark.slow
def test_pretraining_on_a_folder_end_to_end(pictures, data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  config = _image_config(data_dir, pictures, **_tiny_evaluation())
  run_lib.run(config, workdir)
  report = json.load(open(os.path.join(workdir, "eval", "report.json")))
  assert report["dataset"] == f"folder:{pictures}"
  cells = {(r["features"], r["protocol"], r["labels_per_class"]) for r in report["results"]}
  assert cells == {(s, p, n) for s in ("ssl", "random_init", "raw") for p in ("linear", "knn")
                   for n in (1, None)}
  saved = json.load(open(os.path.join(workdir, "config.json")))
  mean, std = stream.pixel_statistics(config)
  np.testing.assert_allclose(saved["augment"]["mean"], mean, atol=1e-6)
  np.testing.assert_allclose(saved["augment"]["std"], std, atol=1e-6)


@pytest.mark.slow
def test_a_flat_folder_trains_and_its_evaluation_needs_eval_dataset(data_dir, tmp_path):
  folder = str(tmp_path / "flat")
  _write_images(folder, classes=("all",), per_class=20, odd_ones=False)
  workdir = str(tmp_path / "run")
  with pytest.raises(UserError, match="has no labels to evaluate simclr with: set "
                                      "--config.eval.dataset"):
    run_lib.run(_image_config(data_dir, folder, **_tiny_evaluation()), workdir)
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))  # refused before training
  outcome = train.train(_image_config(data_dir, folder, total_steps=2, log_every_steps=1),
                        workdir)
  assert outcome.completed and "probe" not in outcome.state["params"]
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["step"] for r in rows] == [1, 2] and "probe_accuracy" not in rows[0]


def test_folder_names():
  assert user_files.config_name("/data/My Pets!/", "32px", "abc") == "my_pets_32px_abc"
  assert user_files.config_name("/data/tickets.jsonl", "abc") == "tickets_abc"
  assert user_files.folder_path("folder:~/x") == os.path.expanduser("~/x")
  assert user_files.folder_path("cifar10") is None
  with pytest.raises(UserError, match="names no path"):
    user_files.folder_path("folder:")
