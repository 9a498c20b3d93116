"""Cross-modal retrieval (CLIP, Radford et al. 2021, Sec. 3.1.5): Recall@1/5 both ways between
each example's input and its paired inputs (an image and its captions, a clip and its sound)
on the training dataset's test split, in the method's joint embedding; a tie counts against
the model.

Settings (`config.evals.<name>`, type "retrieval"): none. It applies to a run whose modality
pairs two kinds of input (`Modality.kind` and `paired_kind`) and a method that embeds both
(`Method.embed`); the report gets "retrieval": {dataset, split, kinds, queries, items,
results: [{features, <kind>_to_<paired>_r1, _r5, <paired>_to_<kind>_r1, _r5}]}, e.g.
image_to_text_r1 for images and captions.
"""
from absl import logging

from ssl_jax.evaluators import Context, Evaluator as EvaluatorBase, Output


class Evaluator(EvaluatorBase):
  """Recall@K of each network source, as a "retrieval" section."""

  needs_labels = False

  def applies(self, context: Context) -> bool:
    modality, embed = context.train_inputs.modality, context.method.embed or {}
    return (modality.paired_kind is not None and modality.kind in embed
            and modality.paired_kind in embed and context.config.data.test_split is not None
            and bool(context.network_states()))

  def run(self, context: Context) -> Output:
    from ssl_jax.eval import cross_modal, features  # pylint: disable=g-import-not-at-top
    config, inputs = context.config, context.train_inputs
    modality, embed = inputs.modality, context.method.embed
    rows = []
    for source, state in context.network_states().items():
      params, extra = state["params"]["model"], state["extra"]
      firsts, seconds, owners = features.pair_embeddings(
          lambda first, params=params, extra=extra: embed[modality.kind](
              params, extra, modality.normalize(first, config)),
          lambda second, params=params, extra=extra: embed[modality.paired_kind](
              params, extra, second),
          modality.paired_inputs, context.batches(inputs, config.data.test_split),
          context.mesh)
      recalls = cross_modal.retrieval_recall(firsts, seconds, owners,
                                             kinds=(modality.kind, modality.paired_kind))
      rows.append({"features": source,
                   **{name: round(value, 6) for name, value in recalls.items()}})
      logging.info("%-11s retrieval %s", source, rows[-1])
    return Output(sections={"retrieval": {
        "dataset": config.dataset, "split": config.data.test_split,
        "kinds": [modality.kind, modality.paired_kind], "queries": int(len(firsts)),
        "items": int(len(seconds)), "results": rows}})
