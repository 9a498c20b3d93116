r"""Fill in [MASK] tokens with a trained masked LM: `python -m ssl_jax.fill_mask --workdir=W TEXT...`.

    python -m ssl_jax.fill_mask --workdir=runs/mlm_python_docs \
        "The [MASK] statement is used for conditional execution."

prints, for each [MASK] of each text, the `--top_k` most probable tokens under the run's
masked-LM head with their probabilities (BERT's cloze task, Devlin et al. 2019, sec. 3.1),
using the vocabulary the run learned (W/tokenizer.json) and its newest checkpoint.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow only reads the dataset's info.

from absl import app, flags, logging  # pylint: disable=g-import-not-at-top

from ssl_jax.errors import UserError, exit_on_user_error  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS


def _define_flags():
  """Defined when run as a program, not at import (tests import both command lines)."""
  flags.DEFINE_string("workdir", None, "A masked-LM run directory (configs/mlm.py).")
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
  tokens, attention_mask = tokenizer_lib.encode_batch(tokenizer, texts, config.data.max_length,
                                                      frame=True)
  counts = (tokens == tokenizer_lib.MASK_ID).sum(axis=1)
  for text, count in zip(texts, counts):
    if not count:
      raise UserError(f"no [MASK] within the first {config.data.max_length} tokens of {text!r}")
  ids, probs = text_inference.top_k_fill(
      mlm.network(config), checkpoint.state["params"]["model"], tokens, attention_mask,
      np.zeros_like(tokens), top_k)
  vocab = {i: t for t, i in tokenizer.get_vocab().items()}
  rows = [[(vocab[int(i)], float(p)) for i, p in zip(row_ids, row_probs)]
          for row_ids, row_probs in zip(ids, probs)]
  starts = np.concatenate([[0], np.cumsum(counts)])
  return [rows[starts[i]:starts[i + 1]] for i in range(len(texts))]


@exit_on_user_error
def main(argv):
  if not FLAGS.workdir:
    raise UserError("--workdir is required")
  if len(argv) < 2:
    raise UserError('give at least one text with [MASK], e.g. "The [MASK] statement ..."')
  for text, masks in zip(argv[1:], fill(FLAGS.workdir, argv[1:], FLAGS.top_k)):
    print(text)
    for number, candidates in enumerate(masks, 1):
      shown = "  ".join(f"{token} {probability:.3f}" for token, probability in candidates)
      print(f"  [MASK] {number}: {shown}")


if __name__ == "__main__":
  _define_flags()
  logging.set_verbosity(logging.ERROR)  # orbax warns that a read-only checkpoint is read-only
  app.run(main)
