"""SimCLR's semi-supervised protocol (Chen et al. 2020, Sec. B.5): the whole network and a
linear head fine-tuned on a class-balanced fraction of the labels, from the checkpoint and, as
its baseline, from the initialisation (`ssl_jax.eval.finetune`).

Settings (`config.evals.<name>`, type "finetune"): `fractions` (() turns it off), `epochs`
(one per fraction), `min_steps`, `batch_size`, `lr`, `max_shift`, `seeds`, `sources` (network
feature sources). It applies to modalities that can be fine-tuned (images).
"""
import numpy as np
from absl import logging

from ssl_jax.config_lib import check_number
from ssl_jax.errors import UserError
from ssl_jax.evaluators import NETWORK_SOURCES, Context, Evaluator as EvaluatorBase, Output


class Evaluator(EvaluatorBase):
  """Fine-tuned test accuracy, one row per (source, label fraction)."""

  def check(self) -> None:
    settings, key = self.settings, f"config.evals.{self.name}"
    if not settings.fractions:
      return
    if len(settings.epochs) != len(settings.fractions):
      raise UserError(f"{key}.epochs needs one entry per {key}.fractions entry")
    for fraction in settings.fractions:
      check_number(f"{key}.fractions", fraction, above=0, maximum=1)
    for epochs in settings.epochs:
      check_number(f"{key}.epochs", epochs, above=0)
    check_number(f"{key}.min_steps", settings.min_steps, minimum=1, integer=True)
    check_number(f"{key}.batch_size", settings.batch_size, minimum=1, integer=True)
    check_number(f"{key}.lr", settings.lr, above=0)
    check_number(f"{key}.max_shift", settings.max_shift, minimum=0, below=0.5)
    check_number(f"{key}.seeds", settings.seeds, minimum=1, integer=True)
    for source in self.settings.sources:
      if source not in NETWORK_SOURCES:
        raise UserError(f"cannot fine-tune feature source '{source}' "
                        f"(config.evals.{self.name}.sources): use "
                        f"{' or '.join(NETWORK_SOURCES)}")

  def applies(self, context: Context) -> bool:
    return context.num_classes is not None and bool(self.settings.fractions)

  def run(self, context: Context) -> Output:
    from ssl_jax.eval import features, finetune  # pylint: disable=g-import-not-at-top
    settings, config, inputs = self.settings, context.config, context.probe_inputs
    if not inputs.modality.can_finetune:
      raise UserError(f"fine-tuning (config.evals.{self.name}) needs images: set "
                      f"config.evals.{self.name}.fractions=() for "
                      f"{inputs.config.data.get('modality', 'image')} runs")
    self.check()
    source = next(iter(config.eval.feature_sources))
    (_, train_labels), (_, test_labels) = context.features(source)
    rows = []
    for fraction in settings.fractions:
      accuracies = {source: [] for source in settings.sources}
      for seed in range(settings.seeds):
        try:
          chosen = finetune.labelled_fraction(train_labels, fraction, context.num_classes, seed)
        except ValueError as e:
          raise UserError(f"fine-tuning on {fraction:.0%} of the labels: {e}") from None
        images, labels = features.gather_rows(
            context.batches(inputs, config.data.train_split), context.mesh, chosen)
        steps = finetune.num_steps(len(chosen), fraction, settings)
        for source in settings.sources:
          state = context.network_state(source)
          try:
            predict = finetune.finetune(context.method.represent, state["params"]["model"],
                                        state["extra"], config, settings, images, labels,
                                        context.num_classes, steps, seed)
          except ValueError as e:
            raise UserError(f"fine-tuning {source} on {fraction:.0%} of the labels: "
                            f"{e}") from None
          eval_inputs = inputs.modality.eval_inputs
          logits, truth = features.extract(
              lambda batch, predict=predict: predict(eval_inputs(batch)),
              context.batches(inputs, config.data.test_split), context.mesh,
              f"fine-tuned {source} on the test split")
          if not np.array_equal(truth, test_labels):  # the same split, in the same order
            raise RuntimeError("the test split changed order between two passes")
          accuracies[source].append(float(np.mean(np.argmax(logits, axis=1) == truth)))
      for source, values in accuracies.items():
        rows.append({"features": source, "protocol": "finetune",
                     "labels_per_class": round(len(chosen) / context.num_classes, 2),
                     "label_fraction": fraction,
                     "accuracy": round(float(np.mean(values)), 6),
                     "std": round(float(np.std(values)), 6), "seeds": settings.seeds})
        logging.info("%-11s finetune on %-4s of the labels (%d steps): accuracy %.4f", source,
                     f"{fraction:.0%}", steps, rows[-1]["accuracy"])
    return Output(rows=rows)
