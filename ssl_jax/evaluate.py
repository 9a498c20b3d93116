r"""Downstream evaluation of a trained run: `python -m ssl_jax.evaluate --workdir=W`.

Restores the newest checkpoint in W and runs the evaluators of its config (`config.evals`,
`ssl_jax/evaluators/`), in order, on frozen features of three sources side by side: `ssl`
(the checkpoint), `random_init` (the same network at its initialisation, untrained) and `raw`
(the inputs themselves). The default entries are the probes (linear, kNN, label propagation,
few-shot with a few labels per class and with all of them), fine-tuning on a fraction of the
labels, zero-shot classification and retrieval for methods with a joint image–text embedding,
the method's held-out measures, the plots, and what the method draws.

Writes W/eval/report.json and W/eval/report.md, plus the PNGs linked from report.md
(`ssl_jax.report`).
"""
import os
import sys
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow only feeds data here.

import jax  # pylint: disable=g-import-not-at-top
from absl import app, flags, logging  # pylint: disable=g-import-not-at-top

from ssl_jax import evaluators as evaluators_lib  # pylint: disable=g-import-not-at-top
from ssl_jax.errors import UserError  # pylint: disable=g-import-not-at-top


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


def check(config) -> list[evaluators_lib.Evaluator]:
  """The run's evaluators, each with its settings checked: what training calls before its
  first step, so that a bad evaluation setting fails before hours of training."""
  evaluators = evaluators_lib.build(config)
  for source in config.eval.feature_sources:
    if source not in evaluators_lib.FEATURE_SOURCES:
      raise UserError(f"unknown feature source '{source}' (config.eval.feature_sources): use "
                      f"{', '.join(evaluators_lib.FEATURE_SOURCES)}")
  for evaluator in evaluators:
    evaluator.check()
  return evaluators


def restore(config, workdir: str) -> evaluators_lib.Context:
  """The newest checkpoint in `workdir` and the same network at its initialisation, with the
  probe dataset's inputs: what the evaluators share."""
  from ssl_jax import restore as restore_lib  # pylint: disable=g-import-not-at-top
  from ssl_jax.data import inputs as inputs_lib  # pylint: disable=g-import-not-at-top
  checkpoint = restore_lib.latest(config, workdir)
  probed = probe_config(config)
  probe_inputs = inputs_lib.Inputs(probed, workdir) if probed is not config else None
  probe_inputs = probe_inputs or checkpoint.inputs
  return evaluators_lib.Context(
      config=config, method=checkpoint.method, trained=checkpoint.state,
      untrained=checkpoint.trainer.create_state(config.seed), step=checkpoint.step,
      num_classes=probe_inputs.info().num_classes, mesh=checkpoint.trainer.mesh,
      probe_inputs=probe_inputs, train_inputs=checkpoint.inputs)


def evaluate(context: evaluators_lib.Context, evaluators: list[evaluators_lib.Evaluator]
             ) -> tuple[dict, dict[str, dict[str, Any]]]:
  """Runs every evaluator that applies, in order; returns the report and its images.

  On an unlabelled probe dataset (Moving MNIST) only evaluators that need no labels run
  (held-out measures, pictures, retrieval); with none of those it is a UserError."""
  runnable = [e for e in evaluators if e.applies(context)]
  if context.num_classes is None and not any(not e.needs_labels for e in runnable):
    raise UserError(f"dataset '{context.probe_inputs.config.dataset}' has no labels to "
                    "evaluate with (set eval.dataset to a labelled one)")
  report = {"dataset": context.probe_inputs.config.dataset, "checkpoint_step": context.step,
            "results": context.rows}
  images: dict[str, dict[str, Any]] = {}
  for evaluator in runnable:
    output = evaluator.run(context)
    context.rows.extend(output.rows)
    report.update(output.sections)
    for key, drawn in output.images.items():
      images.setdefault(key, {}).update(drawn)
  return report, images


def run(workdir: str) -> dict:
  """Evaluates the run in `workdir` and writes its report files (process 0)."""
  from ssl_jax import config_lib, report as report_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.load_saved(workdir)
  evaluators = check(config)
  report, images = evaluate(restore(config, workdir), evaluators)
  if jax.process_index() == 0:
    out_dir = os.path.join(workdir, "eval")
    report_lib.write(report, images, out_dir)
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
  # Defined here, not at import: ssl_jax.main imports this module under its own flags.
  flags.DEFINE_string("workdir", None, "Run directory written by ssl_jax.main.")
  logging.set_verbosity(logging.INFO)
  app.run(main)
