r"""Downstream evaluation of a trained run: `python -m ssl_jax.evaluate --workdir=W`.

Restores the newest checkpoint in W, extracts frozen features of the train and test splits,
and runs the configured protocols (linear probe, weighted kNN, label propagation, ridge
few-shot) with a few labelled examples per class and with all labels, several seeds each, on
three feature sources side by side: `ssl` (the checkpoint), `random_init` (the same network
at its initialisation, untrained) and `raw` (the input pixels). A method that embeds text
next to images (CLIP, `Method.embed_texts`) also gets zero-shot classification rows (class
names turned into prompts) and, on image–caption data, image <-> text retrieval Recall@1/5.
When `eval.finetune.fractions` is set, it also fine-tunes the whole network on those
fractions of the labels (SimCLR's semi-supervised protocol) from the checkpoint and, as the
baseline, from the initialisation.

Writes W/eval/report.json and W/eval/report.md, plus PNGs linked from report.md: a t-SNE map
of each source's test features (`feature_map.png`), accuracy against labels per class
(`accuracy_vs_labels.png`) and, for a method that draws (`Method.pictures`:
reconstructions, samples, colourised images), one PNG per picture.

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
                 num_classes: int, eval_config, mesh: jax.sharding.Mesh | None = None,
                 seed: int = 0) -> float:
  """Test accuracy of one protocol given the labelled train indices. With `mesh`, kNN, label
  propagation and the linear probe shard their work over its devices."""
  from ssl_jax.eval import fewshot, knn, label_propagation, linear_probe  # pylint: disable=g-import-not-at-top
  (train_x, train_y), (test_x, test_y) = train, test
  if protocol == "fewshot":
    predictions = fewshot.ridge_classifier(train_x[labelled], train_y[labelled], test_x,
                                           num_classes=num_classes,
                                           l2=eval_config.get("fewshot_l2", 1.0))
  elif protocol == "linear":
    settings = dict(max_iter=eval_config.linear_max_iter,
                    tol=eval_config.get("linear_tol", 1e-4), mesh=mesh)
    if eval_config.get("linear_l2", "fixed") == "heldout":
      predictions, selection = linear_probe.linear_probe_with_selection(
          train_x[labelled], train_y[labelled], test_x, num_classes=num_classes, seed=seed,
          **settings)
      logging.info("linear probe: l2 %g chosen on %d held-out rows", selection.l2,
                   selection.num_holdout)
    else:
      l2 = 1.0 / (eval_config.linear_c * len(labelled))  # scikit-learn's C, per example
      predictions = linear_probe.linear_probe(
          train_x[labelled], train_y[labelled], test_x, num_classes=num_classes, l2=l2,
          **settings)
  elif protocol == "knn":
    predictions = knn.knn_predict(
        train_x[labelled], train_y[labelled], test_x, num_classes=num_classes,
        k=eval_config.knn_k, temperature=eval_config.knn_temperature, mesh=mesh)
  elif protocol == "label_propagation":
    known = np.full(len(train_x) + len(test_x), -1, np.int64)
    known[labelled] = train_y[labelled]
    predictions = label_propagation.label_spreading(
        np.concatenate([train_x, test_x]), known, num_classes=num_classes,
        n_neighbors=eval_config.propagation_neighbors, alpha=eval_config.propagation_alpha,
        max_iter=eval_config.propagation_max_iter,
        tol=eval_config.propagation_tol, mesh=mesh)[len(train_x):]
  else:
    raise UserError(f"unknown eval protocol '{protocol}': use linear, knn, label_propagation "
                    "or fewshot")
  return float(np.mean(np.asarray(predictions) == test_y))


class Restored(NamedTuple):
  """A run's method, its trained and untrained states, and what evaluation needs to know.

  `probe_inputs` read the dataset the probes run on (`eval.dataset`, or the training
  dataset); `train_inputs` read the training dataset, whose test split the method's own
  held-out metrics (`Method.test_metrics`) are measured on.
  """
  method: Any
  trained: dict
  untrained: dict
  step: int
  num_classes: int | None  # None: the probe dataset has no labels, the probes are skipped
  mesh: jax.sharding.Mesh
  probe_inputs: Any
  train_inputs: Any


def probe_config(config):
  """The config the probes read: the run's, with `eval.dataset` (its `eval.label_key`, and
  `eval.train_split` and `eval.modality` when set) in place of the training dataset when set
  (a language model trained on unlabelled text is probed on a labelled one; CLIP trained on
  COCO captions on CIFAR-10 images)."""
  dataset = config.eval.get("dataset")
  if not dataset:
    return config
  probed = config.copy_and_resolve_references()
  probed.unlock()
  probed.dataset = dataset
  probed.data.label_key = config.eval.get("label_key", "label")
  if config.eval.get("modality"):  # CLIP trained on captioned images, probed on plain ones
    probed.data.modality = config.eval.modality
  if config.eval.get("train_split"):
    probed.data.train_split = config.eval.train_split
  return probed


class Checkpoint(NamedTuple):
  """A run's newest checkpoint, with the method and trainer that read it."""
  method: Any
  trainer: Any
  state: dict
  step: int
  inputs: Any  # the training dataset's `Inputs`


def restore_checkpoint(config, workdir: str) -> Checkpoint:
  """The newest checkpoint in `workdir` (evaluation and the inference command lines)."""
  from ssl_jax import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  from ssl_jax import config_lib, methods, parallel, train  # pylint: disable=g-import-not-at-top
  from ssl_jax.data import inputs as inputs_lib  # pylint: disable=g-import-not-at-top

  inputs = inputs_lib.Inputs(config, workdir)
  info = inputs.info()
  mesh = parallel.make_mesh(config.mesh_data_axis)
  length = config_lib.training_length(config, info.num_train_examples)
  method = methods.build(config, length)
  trainer = train.Trainer(config, method, mesh, info.input_shape, info.num_classes, length)
  checkpoints = checkpoint_lib.Checkpointer(workdir, read_only=True)
  state, step = checkpoints.restore_newest(trainer.abstract_state) or (None, None)
  if step is None:
    raise UserError(f"no checkpoint in '{checkpoint_lib.checkpoint_dir(workdir)}'")
  checkpoints.close()
  return Checkpoint(method, trainer, state, int(step), inputs)


def restore(config, workdir: str) -> Restored:
  """The newest checkpoint in `workdir` and the same network at its initialisation.

  An unlabelled probe dataset (Moving MNIST) gives `num_classes` None: the probes are skipped
  and only the method's own held-out metrics and pictures are reported, or, for a method
  with neither, it is a UserError."""
  from ssl_jax.data import inputs as inputs_lib  # pylint: disable=g-import-not-at-top
  checkpoint = restore_checkpoint(config, workdir)
  probed = probe_config(config)
  probe_inputs = inputs_lib.Inputs(probed, workdir) if probed is not config else None
  num_classes = (probe_inputs or checkpoint.inputs).info().num_classes
  method = checkpoint.method
  if num_classes is None and not (method.test_metrics or method.pictures or method.embed_texts):
    raise UserError(f"dataset '{probed.dataset}' has no labels to evaluate with (set "
                    "eval.dataset to a labelled one)")
  return Restored(checkpoint.method, checkpoint.state,
                  checkpoint.trainer.create_state(config.seed), checkpoint.step, num_classes,
                  checkpoint.trainer.mesh, probe_inputs or checkpoint.inputs, checkpoint.inputs)


def _batches(inputs, config, split: str, mesh: jax.sharding.Mesh):
  batch_size = config.eval.batch_size - config.eval.batch_size % mesh.size or mesh.size
  return inputs.eval_batches(split, batch_size=batch_size // jax.process_count(),
                             process_index=jax.process_index(),
                             process_count=jax.process_count())


def feature_sets(config, restored: Restored) -> dict:
  """{source: ((train_x, train_y), (test_x, test_y))} for each configured feature source."""
  from ssl_jax.eval import features  # pylint: disable=g-import-not-at-top

  sources = {}
  for source in config.eval.feature_sources:
    if source == "raw":
      fn = features.raw_features_fn(config)
    elif source in ("ssl", "random_init"):
      state = _network_state(restored, source)
      fn = features.representation_fn(restored.method.represent, state["params"]["model"],
                                      state["extra"], config)
    else:
      raise UserError(f"unknown feature source '{source}': use ssl, random_init or raw")
    started = time.perf_counter()
    inputs = restored.probe_inputs
    sources[source] = (features.extract(fn, _batches(inputs, config, config.data.train_split,
                                                     restored.mesh), restored.mesh),
                       features.extract(fn, _batches(inputs, config, config.data.test_split,
                                                     restored.mesh), restored.mesh))
    logging.info("%s features %s in %.1fs", source, sources[source][0][0].shape,
                 time.perf_counter() - started)
  return sources


def draw_pictures(config, restored: Restored) -> dict[str, np.ndarray]:
  """The method's pictures of the first `eval.num_pictures` test images, or clips, ({} if it
  has none)."""
  from ssl_jax.eval import pictures  # pylint: disable=g-import-not-at-top
  if restored.method.pictures is None or not config.eval.get("num_pictures", 0):
    return {}
  from ssl_jax.eval import features  # pylint: disable=g-import-not-at-top
  chosen, count = [], 0
  for batch in _batches(restored.probe_inputs, config, config.data.test_split, restored.mesh):
    chosen.append(jax.tree.map(lambda x, mask=batch["mask"]: x[mask],
                               features.model_inputs(batch)))
    count += int(np.sum(batch["mask"]))
    if count >= config.eval.num_pictures:
      break
  inputs = jax.tree.map(lambda *rows: np.concatenate(rows)[:config.eval.num_pictures], *chosen)
  state = restored.trained
  return pictures.draw(restored.method.pictures, state["params"]["model"], state["extra"],
                       inputs, config, config.seed)


def finetune_results(config, restored: Restored, train_labels: np.ndarray,
                     test_labels: np.ndarray) -> list[dict]:
  """Fine-tunes each configured source's network on each label fraction; one row per pair."""
  from ssl_jax.eval import features, finetune  # pylint: disable=g-import-not-at-top
  settings, rows = config.eval.finetune, []
  if restored.probe_inputs.modality not in ("image", "image_text"):
    raise UserError("fine-tuning (eval.finetune) needs images: set eval.finetune.fractions=() "
                    f"for {restored.probe_inputs.modality} runs")
  if len(settings.epochs) != len(settings.fractions):
    raise UserError("eval.finetune.epochs needs one entry per eval.finetune.fractions entry")
  for fraction in settings.fractions:
    accuracies = {source: [] for source in settings.sources}
    for seed in range(settings.seeds):
      try:
        chosen = finetune.labelled_fraction(train_labels, fraction, restored.num_classes, seed)
      except ValueError as e:
        raise UserError(f"fine-tuning on {fraction:.0%} of the labels: {e}") from None
      images, labels = features.gather_rows(
          _batches(restored.probe_inputs, config, config.data.train_split, restored.mesh),
          restored.mesh, chosen)
      steps = finetune.num_steps(len(chosen), fraction, settings)
      for source in settings.sources:
        if source not in ("ssl", "random_init"):
          raise UserError(f"cannot fine-tune feature source '{source}': use ssl or random_init")
        state = _network_state(restored, source)
        try:
          predict = finetune.finetune(restored.method.represent, state["params"]["model"],
                                      state["extra"], config, images, labels,
                                      restored.num_classes, steps, seed)
        except ValueError as e:
          raise UserError(f"fine-tuning {source} on {fraction:.0%} of the labels: {e}") from None
        logits, truth = features.extract(
            predict, _batches(restored.probe_inputs, config, config.data.test_split,
                              restored.mesh), restored.mesh,
            f"fine-tuned {source} on the test split")
        if not np.array_equal(truth, test_labels):  # the same split, read in the same order
          raise RuntimeError("the test split changed order between two passes")
        accuracies[source].append(float(np.mean(np.argmax(logits, axis=1) == truth)))
    for source, values in accuracies.items():
      rows.append({"features": source, "protocol": "finetune",
                   "labels_per_class": round(len(chosen) / restored.num_classes, 2),
                   "label_fraction": fraction,
                   "accuracy": round(float(np.mean(values)), 6),
                   "std": round(float(np.std(values)), 6), "seeds": settings.seeds})
      logging.info("%-11s finetune on %-4s of the labels (%d steps): accuracy %.4f", source,
                   f"{fraction:.0%}", steps, rows[-1]["accuracy"])
  return rows


def held_out_metrics(config, restored: Restored) -> dict[str, float]:
  """The method's own measures on the training dataset's test split (`Method.test_metrics`,
  e.g. a language model's masked-token accuracy): each summed over the split and divided by
  its count. A mean negative log-likelihood per predicted token, "nll", is also reported as
  perplexity, exp(nll). {} when the method has none."""
  from ssl_jax import parallel  # pylint: disable=g-import-not-at-top
  from ssl_jax.eval import features  # pylint: disable=g-import-not-at-top
  test_metrics = restored.method.test_metrics
  if test_metrics is None or config.data.test_split is None:
    return {}
  params, extra = restored.trained["params"]["model"], restored.trained["extra"]
  compiled = jax.jit(lambda inputs, rng: test_metrics(
      params, extra, features.normalised_inputs(inputs, config), rng))
  rng = jax.random.PRNGKey(config.seed)
  totals: dict[str, list[float]] = {}
  batches = _batches(restored.train_inputs, config, config.data.test_split, restored.mesh)
  for index, batch in enumerate(features.progress(batches, "held-out metrics")):
    batch = parallel.global_batch(batch, restored.mesh)
    sums = jax.device_get(compiled(features.model_inputs(batch), jax.random.fold_in(rng, index)))
    for name, (total, count) in sums.items():
      running = totals.setdefault(name, [0.0, 0.0])
      running[0] += float(total)
      running[1] += float(count)
  means = {name: total / max(count, 1.0) for name, (total, count) in totals.items()}
  if "nll" in means:
    means["perplexity"] = float(np.exp(means["nll"]))
  for name, value in means.items():
    logging.info("held-out %s %.4f", name, value)
  return {name: round(value, 6) for name, value in means.items()}


def _network_state(restored: Restored, source: str) -> dict:
  """The state of a network feature source: "ssl" the checkpoint, "random_init" its init."""
  return restored.trained if source == "ssl" else restored.untrained


def _model_states(config, restored: Restored) -> dict[str, dict]:
  """{source: state} of the configured sources that are networks (ssl, random_init)."""
  return {source: _network_state(restored, source) for source in config.eval.feature_sources
          if source in ("ssl", "random_init")}


def zero_shot_results(config, restored: Restored) -> list[dict]:
  """Zero-shot accuracy on the probe dataset's test split, one row per network source, for a
  method that embeds text next to images (`Method.embed_texts`): each class is the mean
  embedding of `eval.zero_shot_prompts` filled with its name (`eval.class_names`, or the
  dataset's label names), and an image is given the class most similar to it (CLIP, Radford
  et al. 2021, Sec. 3.1). [] for other methods."""
  from ssl_jax.data import text_pipeline  # pylint: disable=g-import-not-at-top
  from ssl_jax.eval import cross_modal, features  # pylint: disable=g-import-not-at-top
  method = restored.method
  if method.embed_texts is None or not config.eval.get("zero_shot_prompts"):
    return []
  names = tuple(config.eval.get("class_names") or ()) or \
      restored.probe_inputs.info().class_names
  if not names or len(names) != restored.num_classes:
    raise UserError(f"zero-shot classification needs one name per class ({restored.num_classes}"
                    f"): set eval.class_names (the dataset gives {names})")
  try:
    prompts = cross_modal.prompt_texts(names, config.eval.zero_shot_prompts)
  except ValueError as e:
    raise UserError(str(e)) from None
  rows = text_pipeline.encode_texts(restored.train_inputs.tokenizer, prompts, None,
                                    config.data.max_length)
  text = {"tokens": rows["tokens"], "attention_mask": rows["attention_mask"]}
  results = []
  for source, state in _model_states(config, restored).items():
    params, extra = state["params"]["model"], state["extra"]
    classes = cross_modal.zero_shot_classifier(
        np.asarray(jax.jit(method.embed_texts)(params, extra, text)), restored.num_classes)
    embeddings, labels = features.extract(
        features.representation_fn(method.embed_images, params, extra, config),
        _batches(restored.probe_inputs, config, config.data.test_split, restored.mesh),
        restored.mesh, f"{source} image embeddings")
    accuracy = float(np.mean(cross_modal.zero_shot_predict(embeddings, classes) == labels))
    results.append({"features": source, "protocol": "zero_shot", "labels_per_class": 0,
                    "accuracy": round(accuracy, 6), "std": 0.0, "seeds": 1})
    logging.info("%-11s zero_shot (%d prompts a class): accuracy %.4f", source,
                 len(config.eval.zero_shot_prompts), accuracy)
  return results


def with_retrieval(config, restored: Restored, report: dict) -> dict:
  """`report` with image <-> text Recall@1/5 on the training dataset's test split, one row per
  network source, for a method with `embed_texts` trained on image–caption pairs."""
  from ssl_jax.eval import cross_modal, features  # pylint: disable=g-import-not-at-top
  method, inputs = restored.method, restored.train_inputs
  states = _model_states(config, restored)
  if method.embed_texts is None or inputs.modality != "image_text" or \
      config.data.test_split is None or not states:
    return report
  rows = []
  for source, state in states.items():
    params, extra = state["params"]["model"], state["extra"]
    images, captions, owners = features.pair_embeddings(
        features.representation_fn(method.embed_images, params, extra, config),
        lambda text, params=params, extra=extra: method.embed_texts(params, extra, text),
        _batches(inputs, config, config.data.test_split, restored.mesh), restored.mesh)
    rows.append({"features": source, **{name: round(value, 6) for name, value in
                                        cross_modal.retrieval_recall(images, captions,
                                                                     owners).items()}})
    logging.info("%-11s retrieval %s", source, rows[-1])
  report["retrieval"] = {"dataset": config.dataset, "split": config.data.test_split,
                         "images": int(len(images)), "captions": int(len(captions)),
                         "results": rows}
  return report


def evaluate(config, restored: Restored, sources: dict | None = None) -> dict:
  """Runs every (source, protocol, labels per class) cell, then any fine-tuning; returns the
  report dict. `sources` are `feature_sets`' features, extracted here when not given. Without
  labels (`restored.num_classes` None) only the held-out metrics are reported."""
  from ssl_jax.eval import features  # pylint: disable=g-import-not-at-top
  if restored.num_classes is None:
    report = {"dataset": probe_config(config).dataset, "checkpoint_step": restored.step,
              "results": []}
    return with_retrieval(config, restored, with_held_out(config, restored, report))
  if sources is None:
    sources = feature_sets(config, restored)
  num_classes = restored.num_classes
  # Every process holds all the features; the probes shard over this process's devices
  # (a mesh spanning processes would leave each with only part of the predictions).
  probe_mesh = restored.mesh if jax.process_count() == 1 else None
  cells = [(source, protocol, per_class) for source in sources
           for protocol in config.eval.protocols for per_class in config.eval.labels_per_class]
  results = []
  for source, protocol, per_class in features.progress(cells, "probes", "cell"):
    train, test = sources[source]
    seeds = config.eval.seeds  # with all labels every seed sees the same subset (std 0)
    try:
      accuracies = [run_protocol(protocol, train, test,
                                 labelled_subset(train[1], per_class, num_classes, seed),
                                 num_classes, config.eval, probe_mesh, seed)
                    for seed in range(seeds)]
    except ValueError as e:  # a probe's input check, e.g. NaN features from a diverged run
      raise UserError(f"{protocol} on {source} features: {e}") from None
    results.append({"features": source, "protocol": protocol,
                    "labels_per_class": per_class or None,
                    "accuracy": round(float(np.mean(accuracies)), 6),
                    "std": round(float(np.std(accuracies)), 6), "seeds": seeds})
    logging.info("%-11s %-17s labels/class %-4s accuracy %.4f", source, protocol,
                 per_class or "all", results[-1]["accuracy"])
  if config.eval.get("finetune") and config.eval.finetune.fractions:  # older runs lack it
    (_, train_labels), (_, test_labels) = next(iter(sources.values()))
    results += finetune_results(config, restored, train_labels, test_labels)
  results += zero_shot_results(config, restored)
  report = {"dataset": probe_config(config).dataset, "checkpoint_step": restored.step,
            "results": results}
  return with_retrieval(config, restored, with_held_out(config, restored, report))


def with_held_out(config, restored: Restored, report: dict) -> dict:
  """`report` with the method's held-out metrics (`held_out_metrics`) where it has any."""
  held_out = held_out_metrics(config, restored)
  if held_out:
    report["held_out"] = {"dataset": config.dataset, "split": config.data.test_split,
                          **held_out}
  return report


def draw_plots(config, sources: dict, results: list[dict]) -> dict[str, np.ndarray]:
  """The t-SNE map of every source's test features and the accuracy-vs-labels curves."""
  from ssl_jax.eval import plots  # pylint: disable=g-import-not-at-top
  if not config.eval.get("plots", True):
    return {}
  started = time.perf_counter()
  drawn = {"feature_map": plots.feature_map({s: test for s, (_, test) in sources.items()},
                                            seed=config.seed)}
  train_labels = next(iter(sources.values()))[0][1]
  drawn["accuracy_vs_labels"] = plots.accuracy_curves(
      results, all_labels_x=len(train_labels) / len(np.unique(train_labels)))
  logging.info("plots in %.1fs", time.perf_counter() - started)
  return drawn


def markdown_table(report: dict) -> str:
  """One row per (protocol, labels per class), one column per feature source."""
  sources = list(dict.fromkeys(r["features"] for r in report["results"]))
  cells = {(r["protocol"], r["labels_per_class"], r["features"]): r for r in report["results"]}
  rows = list(dict.fromkeys((r["protocol"], r["labels_per_class"]) for r in report["results"]))
  lines = [f"# Evaluation: {report['dataset']}, checkpoint step {report['checkpoint_step']}", ""]
  if not report["results"]:
    lines += ["No probes: the dataset has no labels."]
  else:
    lines += ["Test accuracy (%), mean ± std over seeds of the labelled subset.", "",
              "| protocol | labels/class | " + " | ".join(sources) + " |",
              "|---|---|" + "---|" * len(sources)]
  for protocol, per_class in rows:
    values, fraction = [], None
    for source in sources:
      r = cells.get((protocol, per_class, source))
      values.append("" if r is None else f"{100 * r['accuracy']:.1f} ± {100 * r['std']:.1f}")
      fraction = fraction or (r or {}).get("label_fraction")
    labels = "all" if per_class is None else per_class  # 0: zero-shot, no labels
    if fraction:  # fine-tuning: the fraction of the labels, and the classes' mean count
      labels = f"{fraction:.0%} ({per_class})"
    lines.append(f"| {protocol} | {labels} | " + " | ".join(values) + " |")
  held_out = report.get("held_out")
  if held_out:
    lines += ["", f"## Held-out: {held_out['dataset']} {held_out['split']}", "",
              "| measure | value |", "|---|---|"]
    lines += [f"| {name} | {value:.4f} |" for name, value in held_out.items()
              if name not in ("dataset", "split")]
  retrieval = report.get("retrieval")
  if retrieval:
    lines += ["", f"## Retrieval: {retrieval['dataset']} {retrieval['split']} "
              f"({retrieval['images']} images, {retrieval['captions']} captions)", "",
              "Recall@K (%): a hit is the true caption (image) among the K nearest.", "",
              "| features | image→text R@1 | image→text R@5 | text→image R@1 | "
              "text→image R@5 |", "|---|---|---|---|---|"]
    for row in retrieval["results"]:
      lines.append(f"| {row['features']} | " + " | ".join(
          f"{100 * row[key]:.1f}" for key in ("image_to_text_r1", "image_to_text_r5",
                                              "text_to_image_r1", "text_to_image_r5")) + " |")
  for name in report.get("plots", []) + report.get("pictures", []):
    lines += ["", f"## {os.path.splitext(name)[0]}", "", f"![{name}]({name})"]
  return "\n".join(lines) + "\n"


def run(workdir: str) -> dict:
  """Evaluates the run in `workdir` and writes its report files (process 0)."""
  from ssl_jax import config_lib  # pylint: disable=g-import-not-at-top
  from ssl_jax.eval import pictures  # pylint: disable=g-import-not-at-top
  config = config_lib.load_saved(workdir)
  restored = restore(config, workdir)
  sources = feature_sets(config, restored) if restored.num_classes is not None else {}
  report = evaluate(config, restored, sources)
  drawn = draw_pictures(config, restored)
  if jax.process_index() == 0:
    out_dir = os.path.join(workdir, "eval")
    plotted = draw_plots(config, sources, report["results"]) if sources else {}
    if plotted:
      report["plots"] = pictures.write(plotted, out_dir)
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
