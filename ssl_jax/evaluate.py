r"""Downstream evaluation of a trained run: `python -m ssl_jax.evaluate --workdir=W`.

Restores the newest checkpoint in W, extracts frozen features of the train and test splits,
and runs the configured protocols (linear probe, weighted kNN, label propagation) with a few
labelled examples per class and with all labels, several seeds each, on three feature sources
side by side: `ssl` (the checkpoint), `random_init` (the same network at its initialisation,
untrained) and `raw` (the input pixels). Writes W/eval/report.json and W/eval/report.md, and,
for a method that draws (`Method.pictures`: reconstructions, samples, colourised images),
W/eval/<name>.png for each of its pictures, listed in the report and shown in report.md.

Labelled subsets are drawn per class from the train split with seeds 0..seeds-1; the
accuracy is measured on the whole test split. Label propagation is transductive: its graph
spans train and test features, with only the drawn train labels known.
"""
import json
import os
import sys
import time
from typing import Any, NamedTuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow only feeds data here.

import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
from absl import app, flags, logging  # pylint: disable=g-import-not-at-top

from ssl_jax.errors import UserError  # pylint: disable=g-import-not-at-top


def labelled_subset(labels: np.ndarray, per_class: int, num_classes: int, seed: int) -> np.ndarray:
  """Indices of `per_class` random examples of each class (all indices when per_class == 0)."""
  if per_class == 0:
    return np.arange(len(labels))
  rng = np.random.default_rng(seed)
  chosen = []
  for cls in range(num_classes):
    members = np.flatnonzero(labels == cls)
    if len(members) < per_class:
      raise UserError(f"class {cls} has {len(members)} training examples, fewer than "
                      f"labels_per_class={per_class}")
    chosen.append(rng.choice(members, per_class, replace=False))
  return np.sort(np.concatenate(chosen))


def run_protocol(protocol: str, train: tuple, test: tuple, labelled: np.ndarray,
                 num_classes: int, eval_config) -> float:
  """Test accuracy of one protocol given the labelled train indices."""
  from ssl_jax.eval import knn, label_propagation, linear_probe  # pylint: disable=g-import-not-at-top
  (train_x, train_y), (test_x, test_y) = train, test
  if protocol == "linear":
    l2 = 1.0 / (eval_config.linear_c * len(labelled))  # scikit-learn's C, per example
    predictions = linear_probe.linear_probe(
        train_x[labelled], train_y[labelled], test_x, num_classes=num_classes, l2=l2,
        max_iter=eval_config.linear_max_iter)
  elif protocol == "knn":
    predictions = knn.knn_predict(
        train_x[labelled], train_y[labelled], test_x, num_classes=num_classes,
        k=eval_config.knn_k, temperature=eval_config.knn_temperature)
  elif protocol == "label_propagation":
    known = np.full(len(train_x) + len(test_x), -1, np.int64)
    known[labelled] = train_y[labelled]
    predictions = label_propagation.label_spreading(
        np.concatenate([train_x, test_x]), known, num_classes=num_classes,
        n_neighbors=eval_config.propagation_neighbors, alpha=eval_config.propagation_alpha,
        max_iter=eval_config.propagation_max_iter,
        tol=eval_config.propagation_tol)[len(train_x):]
  else:
    raise UserError(f"unknown eval protocol '{protocol}': use linear, knn or label_propagation")
  return float(np.mean(np.asarray(predictions) == test_y))


class Restored(NamedTuple):
  """A run's method, its trained and untrained states, and what evaluation needs to know."""
  method: Any
  trained: dict
  untrained: dict
  step: int
  num_classes: int
  mesh: jax.sharding.Mesh


def restore(config, workdir: str) -> Restored:
  """The newest checkpoint in `workdir` and the same network at its initialisation."""
  from ssl_jax import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  from ssl_jax import config_lib, methods, parallel, train  # pylint: disable=g-import-not-at-top
  from ssl_jax.data import pipeline  # pylint: disable=g-import-not-at-top

  info = pipeline.dataset_info(config)
  if info.num_classes is None:
    raise UserError(f"dataset '{config.dataset}' has no labels to evaluate with")
  mesh = parallel.make_mesh(config.mesh_data_axis)
  length = config_lib.training_length(config, info.num_train_examples)
  method = methods.build(config, length)
  trainer = train.Trainer(config, method, mesh, info.image_shape, info.num_classes, length)
  checkpoints = checkpoint_lib.Checkpointer(workdir, read_only=True)
  step = checkpoints.latest_step()
  if step is None:
    raise UserError(f"no checkpoint in '{checkpoint_lib.checkpoint_dir(workdir)}'")
  trained = checkpoints.restore(trainer.abstract_state, step)
  checkpoints.close()
  return Restored(method, trained, trainer.create_state(config.seed), int(step),
                  info.num_classes, mesh)


def _batches(config, split: str, mesh: jax.sharding.Mesh):
  from ssl_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  batch_size = config.eval.batch_size - config.eval.batch_size % mesh.size or mesh.size
  return pipeline.eval_batches(config, split, batch_size=batch_size // jax.process_count(),
                               process_index=jax.process_index(),
                               process_count=jax.process_count())


def feature_sets(config, restored: Restored) -> dict:
  """{source: ((train_x, train_y), (test_x, test_y))} for each configured feature source."""
  from ssl_jax.eval import features  # pylint: disable=g-import-not-at-top

  sources = {}
  for source in config.eval.feature_sources:
    if source == "raw":
      fn = features.raw_pixels_fn
    elif source in ("ssl", "random_init"):
      state = restored.trained if source == "ssl" else restored.untrained
      fn = features.representation_fn(restored.method.represent, state["params"]["model"],
                                      state["extra"], config)
    else:
      raise UserError(f"unknown feature source '{source}': use ssl, random_init or raw")
    started = time.perf_counter()
    sources[source] = (features.extract(fn, _batches(config, config.data.train_split,
                                                     restored.mesh), restored.mesh),
                       features.extract(fn, _batches(config, config.data.test_split,
                                                     restored.mesh), restored.mesh))
    logging.info("%s features %s in %.1fs", source, sources[source][0][0].shape,
                 time.perf_counter() - started)
  return sources


def draw_pictures(config, restored: Restored) -> dict[str, np.ndarray]:
  """The method's pictures of the first `eval.num_pictures` test images ({} if it has none)."""
  from ssl_jax.eval import pictures  # pylint: disable=g-import-not-at-top
  if restored.method.pictures is None or not config.eval.get("num_pictures", 0):
    return {}
  images = []
  for batch in _batches(config, config.data.test_split, restored.mesh):
    images.append(batch["image"][batch["mask"]])
    if sum(len(i) for i in images) >= config.eval.num_pictures:
      break
  images = np.concatenate(images)[:config.eval.num_pictures]
  state = restored.trained
  return pictures.draw(restored.method.pictures, state["params"]["model"], state["extra"],
                       images, config, config.seed)


def evaluate(config, restored: Restored) -> dict:
  """Runs every (source, protocol, labels per class) cell; returns the report dict."""
  sources, num_classes = feature_sets(config, restored), restored.num_classes
  results = []
  for source, (train, test) in sources.items():
    for protocol in config.eval.protocols:
      for per_class in config.eval.labels_per_class:
        seeds = config.eval.seeds  # with all labels every seed sees the same subset (std 0)
        accuracies = [run_protocol(protocol, train, test,
                                   labelled_subset(train[1], per_class, num_classes, seed),
                                   num_classes, config.eval) for seed in range(seeds)]
        results.append({"features": source, "protocol": protocol,
                        "labels_per_class": per_class or None,
                        "accuracy": round(float(np.mean(accuracies)), 6),
                        "std": round(float(np.std(accuracies)), 6), "seeds": seeds})
        logging.info("%-11s %-17s labels/class %-4s accuracy %.4f", source, protocol,
                     per_class or "all", results[-1]["accuracy"])
  return {"dataset": config.dataset, "checkpoint_step": restored.step, "results": results}


def markdown_table(report: dict) -> str:
  """One row per (protocol, labels per class), one column per feature source."""
  sources = list(dict.fromkeys(r["features"] for r in report["results"]))
  cells = {(r["protocol"], r["labels_per_class"], r["features"]): r for r in report["results"]}
  rows = list(dict.fromkeys((r["protocol"], r["labels_per_class"]) for r in report["results"]))
  lines = [f"# Evaluation: {report['dataset']}, checkpoint step {report['checkpoint_step']}", "",
           "Test accuracy (%), mean ± std over seeds of the labelled subset.", "",
           "| protocol | labels/class | " + " | ".join(sources) + " |",
           "|---|---|" + "---|" * len(sources)]
  for protocol, per_class in rows:
    values = []
    for source in sources:
      r = cells.get((protocol, per_class, source))
      values.append("" if r is None else f"{100 * r['accuracy']:.1f} ± {100 * r['std']:.1f}")
    lines.append(f"| {protocol} | {per_class or 'all'} | " + " | ".join(values) + " |")
  for name in report.get("pictures", []):
    lines += ["", f"## {os.path.splitext(name)[0]}", "", f"![{name}]({name})"]
  return "\n".join(lines) + "\n"


def run(workdir: str) -> dict:
  """Evaluates the run in `workdir` and writes its report files (process 0)."""
  from ssl_jax import config_lib  # pylint: disable=g-import-not-at-top
  from ssl_jax.eval import pictures  # pylint: disable=g-import-not-at-top
  config = config_lib.load_saved(workdir)
  restored = restore(config, workdir)
  report = evaluate(config, restored)
  drawn = draw_pictures(config, restored)
  if jax.process_index() == 0:
    out_dir = os.path.join(workdir, "eval")
    if drawn:
      report["pictures"] = pictures.write(drawn, out_dir)
    os.makedirs(out_dir, exist_ok=True)
    for name, text in (("report.json", json.dumps(report, indent=2)),
                       ("report.md", markdown_table(report))):
      tmp = os.path.join(out_dir, name + ".tmp")
      with open(tmp, "w") as f:
        f.write(text)
      os.replace(tmp, os.path.join(out_dir, name))
    logging.info("wrote %s", os.path.join(out_dir, "report.json"))
  return report


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    if not flags.FLAGS.workdir:
      raise UserError("--workdir is required")
    run(flags.FLAGS.workdir)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  # Defined here, not at import: the trainer imports this module under ssl_jax.main's flags.
  flags.DEFINE_string("workdir", None, "Run directory written by ssl_jax.main.")
  logging.set_verbosity(logging.INFO)
  app.run(main)
