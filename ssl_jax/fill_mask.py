r"""Fill in [MASK] tokens with a masked LM: a run of ours or a published model.

    python -m ssl_jax.fill_mask --workdir=runs/mlm_python_docs \
        "The [MASK] statement is used for conditional execution."
    python -m ssl_jax.fill_mask --pretrained=bert-base-uncased "The capital of France is [MASK]."

prints, for each [MASK] of each text, the `--top_k` most probable tokens under the masked-LM
head with their probabilities (BERT's cloze task, Devlin et al. 2019, sec. 3.1). With
`--workdir` it uses the vocabulary the run learned (W/tokenizer.json) and its newest
checkpoint, and never proposes special tokens; with `--pretrained` (a folder or a name in the
local Hugging Face cache, `ssl_jax.pretrained`) the published weights and tokenizer, ranking
every token as Hugging Face's fill-mask pipeline does. RoBERTa's mask is <mask>; [MASK] is
accepted for it too.
"""
from ssl_jax import tensorflow_quiet

tensorflow_quiet.silence_start_up()  # before anything imports TensorFlow

from absl import app, flags, logging  # pylint: disable=g-import-not-at-top

from ssl_jax.errors import UserError, exit_on_user_error  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS


def _define_flags():
  """Defined when run as a program, not at import (tests import both command lines)."""
  flags.DEFINE_string("workdir", None, "A masked-LM run directory (configs/mlm.py).")
  flags.DEFINE_string("pretrained", None, "A published masked LM: a model folder or a name in "
                      "the local Hugging Face cache (bert, distilbert, roberta).")
  flags.DEFINE_integer("top_k", 5, "Candidates printed for each [MASK].")


def fill(workdir: str, texts: list[str], top_k: int) -> list[list[list[tuple[str, float]]]]:
  """For each text, for each [MASK] in it: the top_k (token, probability) pairs."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from ssl_jax import config_lib, restore, text_inference  # pylint: disable=g-import-not-at-top
  from ssl_jax.data import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
  from ssl_jax.methods import mlm  # pylint: disable=g-import-not-at-top

  config = config_lib.load_saved(workdir)
  if config.method != "mlm":
    raise UserError(f"fill_mask needs a masked-LM run (configs/mlm.py); '{workdir}' trained "
                    f"'{config.method}'")
  if top_k < 1:
    raise UserError(f"--top_k must be >= 1, got {top_k}")
  checkpoint = restore.latest(config, workdir)
  tokenizer = checkpoint.inputs.tokenizer
  specials = tokenizer_lib.special_ids(config)
  tokens, attention_mask = tokenizer_lib.encode_batch(tokenizer, texts, config.data.max_length,
                                                      frame=True, specials=specials)
  counts = (tokens == specials.mask).sum(axis=1)
  for text, count in zip(texts, counts):
    if not count:
      raise UserError(f"no [MASK] within the first {config.data.max_length} tokens of {text!r}")
  ids, probs = text_inference.top_k_fill(
      mlm.network(config), checkpoint.state["params"]["model"], tokens, attention_mask,
      np.zeros_like(tokens), top_k, specials.mask, specials.excluded)
  vocab = {i: t for t, i in tokenizer.get_vocab().items()}
  rows = [[(vocab[int(i)], float(p)) for i, p in zip(row_ids, row_probs)]
          for row_ids, row_probs in zip(ids, probs)]
  starts = np.concatenate([[0], np.cumsum(counts)])
  return [rows[starts[i]:starts[i + 1]] for i in range(len(texts))]


def fill_pretrained(name_or_path: str, texts: list[str], top_k: int
                    ) -> list[list[list[tuple[str, float]]]]:
  """`fill` with a published masked LM (`ssl_jax.pretrained`): its tokenizer, its mask token
  ([MASK] in a text is read as RoBERTa's <mask>), every token a candidate."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from ssl_jax import pretrained, text_inference  # pylint: disable=g-import-not-at-top

  model = pretrained.load(name_or_path, dropout=0.0)
  if model.is_decoder or model.special.mask is None or not model.network.mlm_head:
    raise UserError(f"fill_mask needs a masked LM with its head (BertForMaskedLM, "
                    f"DistilBertForMaskedLM, RobertaForMaskedLM, ...); {model.folder} holds "
                    f"{', '.join(model.hf_config.get('architectures') or [model.model_type])}")
  if top_k < 1:
    raise UserError(f"--top_k must be >= 1, got {top_k}")
  texts = [text.replace("[MASK]", model.special.mask_token) for text in texts]
  tokens, attention_mask = model.encode(texts)
  counts = (tokens == model.special.mask).sum(axis=1)
  for text, count in zip(texts, counts):
    if not count:
      raise UserError(f"no {model.special.mask_token} within the first {model.max_length} "
                      f"tokens of {text!r}")
  ids, probs = text_inference.top_k_fill(model.network, model.params, tokens, attention_mask,
                                         np.zeros_like(tokens), top_k, model.special.mask, ())
  rows = [[(model.token_text(i), float(p)) for i, p in zip(row_ids, row_probs)]
          for row_ids, row_probs in zip(ids, probs)]
  starts = np.concatenate([[0], np.cumsum(counts)])
  return [rows[starts[i]:starts[i + 1]] for i in range(len(texts))]


@exit_on_user_error
def main(argv):
  if bool(FLAGS.workdir) == bool(FLAGS.pretrained):
    raise UserError("give one of --workdir (a masked-LM run) or --pretrained (a published model)")
  if len(argv) < 2:
    raise UserError('give at least one text with [MASK], e.g. "The [MASK] statement ..."')
  if FLAGS.pretrained:
    filled = fill_pretrained(FLAGS.pretrained, argv[1:], FLAGS.top_k)
  else:
    filled = fill(FLAGS.workdir, argv[1:], FLAGS.top_k)
  for text, masks in zip(argv[1:], filled):
    print(text)
    for number, candidates in enumerate(masks, 1):
      shown = "  ".join(f"{token} {probability:.3f}" for token, probability in candidates)
      print(f"  [MASK] {number}: {shown}")


if __name__ == "__main__":
  _define_flags()
  logging.set_verbosity(logging.ERROR)  # orbax warns that a read-only checkpoint is read-only
  app.run(main)
