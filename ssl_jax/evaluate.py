r"""Downstream evaluation of a trained run: `python -m ssl_jax.evaluate --workdir=W`.

Restores the newest checkpoint in W and runs the evaluators of its config (`config.evals`,
`ssl_jax/evaluators/`), in order, on frozen features of three sources side by side: `ssl`
(the checkpoint), `random_init` (the same network at its initialisation, untrained) and `raw`
(the inputs themselves). The default entries are the probes (linear, kNN, label propagation,
few-shot with a few labels per class and with all of them), fine-tuning on a fraction of the
labels, zero-shot classification and retrieval for methods with a joint image–text embedding,
the method's held-out measures, the plots, and what the method draws.

Writes W/eval/report.json and W/eval/report.md, plus the PNGs linked from report.md
(`ssl_jax.report`). Evaluation settings can be changed for a re-evaluation, e.g.
`--config.evals.probes.labels_per_class="(1, 0)"` (only keys under `eval.` and `evals.`); the
report then goes beside the original, into W/eval-<the overrides>/, never over it.
"""
import ast
import re
import os
import sys
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow only feeds data here.

import jax  # pylint: disable=g-import-not-at-top
from absl import app, flags, logging  # pylint: disable=g-import-not-at-top

from ssl_jax import evaluators as evaluators_lib, expected  # pylint: disable=g-import-not-at-top
from ssl_jax.errors import UserError  # pylint: disable=g-import-not-at-top


def probe_config(config):
  """The config the probes read: the run's, with `eval.dataset` (its `eval.label_key`, and
  `eval.train_split` and `eval.modality` when set) in place of the training dataset when set
  (a language model trained on unlabelled text is probed on a labelled one; CLIP trained on
  COCO captions on CIFAR-10 images); without `eval.dataset`, `eval.label_key` (when set)
  picks another label feature of the training dataset (the vowels' "speaker")."""
  dataset, label_key = config.eval.get("dataset"), config.eval.get("label_key")
  if not dataset and not label_key:
    return config
  probed = config.copy_and_resolve_references()
  probed.unlock()
  if label_key:
    probed.data.label_key = label_key
  if not dataset:
    return probed
  probed.dataset = dataset
  probed.data.label_key = label_key or "label"
  if config.eval.get("modality"):  # CLIP trained on captioned images, probed on plain ones
    probed.data.modality = config.eval.modality
  if config.eval.get("train_split"):
    probed.data.train_split = config.eval.train_split
  return probed


def check(config) -> list[evaluators_lib.Evaluator]:
  """The run's evaluators, each with its settings checked: what training calls before its
  first step, so that a bad evaluation setting fails before hours of training."""
  evaluators = evaluators_lib.build(config)
  expected.check(config)
  from ssl_jax import modalities  # pylint: disable=g-import-not-at-top
  modality = modalities.find(probe_config(config))
  for source in config.eval.feature_sources:
    evaluators_lib.check_source(source, modality)
  for evaluator in evaluators:
    evaluator.check()
  return evaluators


def check_labels(config, evaluators: list[evaluators_lib.Evaluator]) -> None:
  """Checks the evaluators' settings against the probe dataset's class sizes (reading only its
  labels), before training; on a probe dataset without labels, that some evaluator will have
  something to report without them (a held-out measure, pictures), else a one-line error
  naming `eval.dataset`."""
  from ssl_jax import config_lib, methods, modalities  # pylint: disable=g-import-not-at-top
  from ssl_jax.data import inputs as inputs_lib  # pylint: disable=g-import-not-at-top
  probed = probe_config(config)
  modality = modalities.find(probed)
  counts = modality.label_counts(probed)
  if counts is not None and len(counts):
    for evaluator in evaluators:
      evaluator.check_labels(counts, probed.dataset)
    return
  if modality.dataset_info(probed).num_classes is not None:
    return  # labelled, too large to count its labels before training
  train_inputs = inputs_lib.Inputs(config)
  length = config_lib.training_length(config, train_inputs.info().num_train_examples)
  # What `applies` reads before any state exists: the method, the config and the inputs.
  before_training = evaluators_lib.Context(
      config=config, method=methods.build(config, length), trained={}, untrained={}, step=0,
      num_classes=None, mesh=None, train_inputs=train_inputs,
      probe_inputs=train_inputs if probed is config else inputs_lib.Inputs(probed))
  if not _label_free(before_training, evaluators):
    raise UserError(f"{_no_labels(probed.dataset, config.method)}, or "
                    "--config.evaluate_at_end=False")


def _label_free(context: evaluators_lib.Context,
                evaluators: list[evaluators_lib.Evaluator]) -> list[evaluators_lib.Evaluator]:
  """The evaluators that have something to report on a probe dataset without labels."""
  return [e for e in evaluators if not e.needs_labels and e.applies(context)]


def _no_labels(dataset: str, method: str) -> str:
  return (f"dataset '{dataset}' has no labels to evaluate {method} with: set "
          "--config.eval.dataset to a labelled dataset")


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
  """Runs every evaluator that applies, in order (each asked when its turn comes); returns the
  report and its images.

  On an unlabelled probe dataset (Moving MNIST) only evaluators that need no labels run
  (held-out measures, pictures, retrieval); with none of those it is a UserError."""
  if context.num_classes is None:
    dataset = context.probe_inputs.config.dataset
    if not _label_free(context, evaluators):
      raise UserError(_no_labels(dataset, context.config.method))
    logging.info("dataset '%s' has no labels: the probes are skipped (set config.eval.dataset "
                 "to a labelled dataset to probe)", dataset)
  report = {"dataset": context.probe_inputs.config.dataset, "checkpoint_step": context.step,
            "results": context.rows}
  images: dict[str, dict[str, Any]] = {}
  for evaluator in evaluators:
    if not evaluator.applies(context):  # asked in turn: the plots need the probes' features
      continue
    output = evaluator.run(context)
    context.rows.extend(output.rows)
    report.update(output.sections)
    for key, drawn in output.images.items():
      images.setdefault(key, {}).update(drawn)
  return report, images


EVALUATION_SECTIONS = ("eval", "evals")  # what may change after training


def with_overrides(config, overrides: dict[str, str]):
  """A copy of `config` with `overrides` ({"evals.probes.seeds": "1"}: dotted keys under
  `eval` or `evals`, values as Python literals or bare strings) applied; a key that does not
  exist, one outside the evaluation settings or a value of the wrong type is a UserError."""
  config = config.copy_and_resolve_references()
  for key, text in overrides.items():
    *parents, last = key.split(".")
    if not parents or parents[0] not in EVALUATION_SECTIONS:
      raise UserError(f"--config.{key}: only evaluation settings can change after training "
                      f"({' and '.join(s + '.*' for s in EVALUATION_SECTIONS)})")
    section = config
    for name in parents:
      if name not in section or not hasattr(section[name], "keys"):
        raise UserError(f"unknown config key in --config.{key}: the run's config has no "
                        f"'{'.'.join(parents[:parents.index(name) + 1])}' section")
      section = section[name]
    if last not in section:
      raise UserError(f"unknown config key in --config.{key}: the run's config has no "
                      f"'{last}' (it has {', '.join(sorted(section.keys()))})")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text  # a bare word: a string
    old = section[last]
    if isinstance(value, tuple) and isinstance(old, list):
      value = list(value)  # a saved config holds JSON lists
    if old is not None and not isinstance(value, type(old)) and not (
        isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool)):
      raise UserError(f"--config.{key}={text}: expected a value of type "
                      f"{type(old).__name__}, like {old!r}")
    section[last] = value
  return config


def report_dir(workdir: str, overrides: dict[str, str]) -> str:
  """W/eval, or for a re-evaluation with other settings W/eval-<key=value,...>, named by the
  overrides (the last two parts of each key; characters a path should not hold dropped)."""
  if not overrides:
    return os.path.join(workdir, "eval")
  parts = [".".join(key.split(".")[-2:]) + "=" + re.sub(r"[^A-Za-z0-9._-]+", "_",
                                                        text).strip("_")
           for key, text in sorted(overrides.items())]
  return os.path.join(workdir, "eval-" + ",".join(parts)[:120])


def run(workdir: str, overrides: dict[str, str] | None = None) -> dict:
  """Evaluates the run in `workdir` (with evaluation settings changed by `overrides`) and
  writes its report files (process 0)."""
  from ssl_jax import config_lib, report as report_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.load_saved(workdir)
  if overrides:
    config = with_overrides(config, overrides)
  evaluators = check(config)
  report, images = evaluate(restore(config, workdir), evaluators)
  report["expected"] = expected.for_report(config, report)
  if overrides:
    report["overrides"] = dict(overrides)
  if jax.process_index() == 0:
    out_dir = report_dir(workdir, overrides or {})
    report_lib.write(report, images, out_dir)
    beside = f" (beside the original {os.path.join(workdir, 'eval')})" if overrides else ""
    logging.info("wrote %s%s", os.path.join(out_dir, "report.json"), beside)
    if overrides:
      print(f"wrote {os.path.join(out_dir, 'report.json')}: the original report in "
            f"{os.path.join(workdir, 'eval')} is unchanged")
  return report


_OVERRIDES: dict[str, str] = {}


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with the `--config.KEY=VALUE` overrides taken out first; a bad flag is
  one `error:` line and exit status 2."""
  rest = [argv[0]]
  for arg in argv[1:]:
    if arg.startswith("--config."):
      key, equals, value = arg[len("--config."):].partition("=")
      if not equals:
        print(f"error: {arg} needs a value: --config.{key}=VALUE", file=sys.stderr)
        sys.exit(2)
      _OVERRIDES[key] = value
    else:
      rest.append(arg)
  try:
    return flags.FLAGS(rest)
  except flags.Error as e:
    print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
    sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    if not flags.FLAGS.workdir:
      raise UserError("--workdir is required")
    run(flags.FLAGS.workdir, _OVERRIDES)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  # Defined here, not at import: ssl_jax.main imports this module under its own flags.
  flags.DEFINE_string("workdir", None, "Run directory written by ssl_jax.main.")
  logging.set_verbosity(logging.INFO)
  app.run(main, flags_parser=parse_flags)
