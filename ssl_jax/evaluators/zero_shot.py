"""Zero-shot classification (CLIP, Radford et al. 2021, Sec. 3.1): each class is the mean joint
embedding of prompts filled with its name, renormalised, and an image is given the class most
similar to it. No labels are used; reported for each network feature source with 0 labels per
class.

Settings (`config.evals.<name>`, type "zero_shot"): `prompts` (templates with "{}"; () turns
it off), `class_names` (() = the dataset's label names). It applies to a method whose
`Method.embed` has a "text" embedding and one of the probe inputs' kind, on a run whose
modality can encode text (the run's tokenizer).
"""
import jax
import numpy as np
from absl import logging

from ssl_jax.errors import UserError
from ssl_jax.evaluators import Context, Evaluator as EvaluatorBase, Output


class Evaluator(EvaluatorBase):
  """Zero-shot accuracy on the probe dataset's test split."""

  def check(self) -> None:
    for template in self.settings.prompts:
      if not isinstance(template, str) or "{}" not in template:
        raise UserError(f"config.evals.{self.name}.prompts must each contain '{{}}' (where the "
                        f"class name goes), got {template!r}")

  def applies(self, context: Context) -> bool:
    embed = context.method.embed or {}
    return (context.num_classes is not None and bool(self.settings.prompts)
            and "text" in embed and context.probe_inputs.modality.kind in embed)

  def run(self, context: Context) -> Output:
    from ssl_jax.eval import cross_modal, features  # pylint: disable=g-import-not-at-top
    config, inputs = context.config, context.probe_inputs
    names = tuple(self.settings.get("class_names") or ()) or inputs.info().class_names
    if not names or len(names) != context.num_classes:
      raise UserError(f"zero-shot classification needs one name per class "
                      f"({context.num_classes}): set config.evals.{self.name}.class_names "
                      f"(the dataset gives {names})")
    try:
      prompts = cross_modal.prompt_texts(names, self.settings.prompts)
    except ValueError as e:
      raise UserError(str(e)) from None
    text = context.train_inputs.modality.encode_texts(context.train_inputs, prompts)
    embed = context.method.embed
    rows = []
    for source, state in context.network_states().items():
      params, extra = state["params"]["model"], state["extra"]
      classes = cross_modal.zero_shot_classifier(
          np.asarray(jax.jit(embed["text"])(params, extra, text)), context.num_classes)
      embeddings, labels = features.extract(
          context.representation_fn(embed[inputs.modality.kind], state, inputs),
          context.batches(inputs, config.data.test_split), context.mesh,
          f"{source} {inputs.modality.kind} embeddings")
      accuracy = float(np.mean(cross_modal.zero_shot_predict(embeddings, classes) == labels))
      rows.append({"features": source, "protocol": "zero_shot", "labels_per_class": 0,
                   "accuracy": round(accuracy, 6), "std": 0.0, "seeds": 1})
      logging.info("%-11s zero_shot (%d prompts a class): accuracy %.4f", source,
                   len(self.settings.prompts), accuracy)
    return Output(rows=rows)
