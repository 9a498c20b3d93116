"""What a method draws besides the probes (`Method.pictures`: reconstructions, samples,
colourised images), from the first test examples of the probe dataset.

Settings (`config.evals.<name>`, type "pictures"): `num_pictures` (0 turns it off). Each
picture is written as `eval/<name>.png` and listed in the report under "pictures".
"""
import jax
import numpy as np

from ssl_jax.config_lib import check_number
from ssl_jax.evaluators import Context, Evaluator as EvaluatorBase, Output


class Evaluator(EvaluatorBase):
  """The method's pictures of the first `num_pictures` test examples."""

  needs_labels = False

  def check(self) -> None:
    check_number(f"config.evals.{self.name}.num_pictures", self.settings.num_pictures,
                 minimum=0, integer=True)

  def applies(self, context: Context) -> bool:
    return context.method.pictures is not None and bool(self.settings.num_pictures)

  def run(self, context: Context) -> Output:
    from ssl_jax.eval import pictures  # pylint: disable=g-import-not-at-top
    config, inputs = context.config, context.probe_inputs
    modality, wanted = inputs.modality, self.settings.num_pictures
    chosen, count = [], 0
    for batch in context.batches(inputs, config.data.test_split):
      chosen.append(jax.tree.map(lambda x, mask=batch["mask"]: x[mask],
                                 modality.eval_inputs(batch)))
      count += int(np.sum(batch["mask"]))
      if count >= wanted:
        break
    examples = jax.tree.map(lambda *rows: np.concatenate(rows)[:wanted], *chosen)
    state = context.trained
    drawn = pictures.draw(context.method.pictures, state["params"]["model"], state["extra"],
                          examples, lambda x: modality.normalize(x, config), config,
                          config.seed)
    return Output(images={"pictures": drawn})
