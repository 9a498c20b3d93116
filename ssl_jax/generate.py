r"""Sample a continuation from a trained causal LM: `python -m ssl_jax.generate --workdir=W PROMPT`.

    python -m ssl_jax.generate --workdir=runs/causal_lm_python_docs "Return the number of"

encodes the prompt with the run's vocabulary (W/tokenizer.json, after [CLS], the beginning of
a text in training), then draws tokens from the newest checkpoint's next-token distribution
at `--temperature` (0 = greedy), among the `--top_k` most probable (0 = all), until [SEP]
(the end of a text), `--max_new_tokens`, or the model's context length.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow only reads the dataset's info.

from absl import app, flags, logging  # pylint: disable=g-import-not-at-top

from ssl_jax.errors import UserError, exit_on_user_error  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS


def _define_flags():
  """Defined when run as a program, not at import (tests import both command lines)."""
  flags.DEFINE_string("workdir", None, "A causal-LM run directory (configs/causal_lm.py).")
  flags.DEFINE_float("temperature", 0.8, "Softmax temperature; 0 = greedy.")
  flags.DEFINE_integer("top_k", 40, "Sample among the k most probable tokens; 0 = all.")
  flags.DEFINE_integer("max_new_tokens", 40, "Most tokens to add.")
  flags.DEFINE_integer("seed", 0, "Sampling seed.")
  flags.DEFINE_integer("num_samples", 1, "Continuations drawn (seeds seed, seed+1, ...).")


def generate(workdir: str, prompt: str, *, temperature: float, top_k: int, max_new_tokens: int,
             seed: int, num_samples: int = 1) -> list[str]:
  """`num_samples` continuations of `prompt` (prompt included), as text."""
  import jax  # pylint: disable=g-import-not-at-top
  from ssl_jax import config_lib, restore, text_inference  # pylint: disable=g-import-not-at-top
  from ssl_jax.data import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
  from ssl_jax.methods import causal_lm  # pylint: disable=g-import-not-at-top

  config = config_lib.load_saved(workdir)
  if config.method != "causal_lm":
    raise UserError(f"generate needs a causal-LM run (configs/causal_lm.py); '{workdir}' "
                    f"trained '{config.method}'")
  if temperature < 0 or top_k < 0 or max_new_tokens < 1:
    raise UserError("--temperature and --top_k must be >= 0 and --max_new_tokens >= 1")
  checkpoint = restore.latest(config, workdir)
  tokenizer = checkpoint.inputs.tokenizer
  prompt_ids = [tokenizer_lib.CLS_ID, *tokenizer_lib.token_ids(tokenizer, [prompt])[0]]
  if len(prompt_ids) >= config.data.max_length:
    raise UserError(f"the prompt has {len(prompt_ids) - 1} tokens; the model reads at most "
                    f"{config.data.max_length - 1}")
  network, params = causal_lm.network(config), checkpoint.state["params"]["model"]
  return [tokenizer_lib.decode(tokenizer, text_inference.sample(
      network, params, prompt_ids, jax.random.PRNGKey(seed + i), max_new_tokens, temperature,
      top_k)) for i in range(num_samples)]


@exit_on_user_error
def main(argv):
  if not FLAGS.workdir:
    raise UserError("--workdir is required")
  if len(argv) != 2:
    raise UserError('give one prompt, e.g. "Return the number of"')
  for text in generate(FLAGS.workdir, argv[1], temperature=FLAGS.temperature,
                       top_k=FLAGS.top_k, max_new_tokens=FLAGS.max_new_tokens,
                       seed=FLAGS.seed, num_samples=FLAGS.num_samples):
    print(text)


if __name__ == "__main__":
  _define_flags()
  logging.set_verbosity(logging.ERROR)  # orbax warns that a read-only checkpoint is read-only
  app.run(main)
