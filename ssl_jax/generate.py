r"""Sample a continuation from a causal LM: a run of ours or a published GPT-2.

    python -m ssl_jax.generate --workdir=runs/causal_lm_python_docs "Return the number of"
    python -m ssl_jax.generate --pretrained=gpt2 "The capital of France is"

encodes the prompt with the run's vocabulary (W/tokenizer.json, after [CLS], the beginning of
a text in training) or the published model's tokenizer (as GPT-2 reads a prompt: no start
token), then draws tokens from the next-token distribution at `--temperature` (0 = greedy),
among the `--top_k` most probable (0 = all), until the end of a text ([SEP], or GPT-2's
<|endoftext|>), `--max_new_tokens`, or the model's context length.
"""
from ssl_jax import tensorflow_quiet

tensorflow_quiet.silence_start_up()  # before anything imports TensorFlow

from absl import app, flags, logging  # pylint: disable=g-import-not-at-top

from ssl_jax.errors import UserError, exit_on_user_error  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS


def _define_flags():
  """Defined when run as a program, not at import (tests import both command lines)."""
  flags.DEFINE_string("workdir", None, "A causal-LM run directory (configs/causal_lm.py).")
  flags.DEFINE_string("pretrained", None, "A published GPT-2: a model folder or a name in the "
                      "local Hugging Face cache.")
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
  specials = tokenizer_lib.special_ids(config)
  prompt_ids = [specials.cls, *tokenizer_lib.token_ids(tokenizer, [prompt])[0]]
  if len(prompt_ids) >= config.data.max_length:
    raise UserError(f"the prompt has {len(prompt_ids) - 1} tokens; the model reads at most "
                    f"{config.data.max_length - 1}")
  network, params = causal_lm.network(config), checkpoint.state["params"]["model"]
  return [tokenizer_lib.decode(tokenizer, text_inference.sample(
      network, params, prompt_ids, jax.random.PRNGKey(seed + i), max_new_tokens, temperature,
      top_k, stop_id=specials.sep)) for i in range(num_samples)]


def generate_pretrained(name_or_path: str, prompt: str, *, temperature: float, top_k: int,
                        max_new_tokens: int, seed: int, num_samples: int = 1) -> list[str]:
  """`generate` with a published GPT-2 (`ssl_jax.pretrained`) and its own tokenizer."""
  import jax  # pylint: disable=g-import-not-at-top
  from ssl_jax import pretrained, text_inference  # pylint: disable=g-import-not-at-top

  model = pretrained.load(name_or_path, dropout=0.0)
  if not model.is_decoder:
    raise UserError(f"generate needs a causal LM (GPT-2); {model.folder} holds a "
                    f"{model.model_type} encoder (fill_mask reads it)")
  if temperature < 0 or top_k < 0 or max_new_tokens < 1:
    raise UserError("--temperature and --top_k must be >= 0 and --max_new_tokens >= 1")
  prompt_ids = model.tokenizer.encode(prompt).ids
  if not 1 <= len(prompt_ids) < model.max_length:
    raise UserError(f"the prompt has {len(prompt_ids)} tokens; the model reads 1 to "
                    f"{model.max_length - 1}")
  stop = -1 if model.special.eos is None else model.special.eos
  return [model.tokenizer.decode([int(t) for t in text_inference.sample(
      model.network, model.params, prompt_ids, jax.random.PRNGKey(seed + i), max_new_tokens,
      temperature, top_k, stop_id=stop)], skip_special_tokens=True)
          for i in range(num_samples)]


@exit_on_user_error
def main(argv):
  if bool(FLAGS.workdir) == bool(FLAGS.pretrained):
    raise UserError("give one of --workdir (a causal-LM run) or --pretrained (a published GPT-2)")
  if len(argv) != 2:
    raise UserError('give one prompt, e.g. "Return the number of"')
  sample = generate_pretrained if FLAGS.pretrained else generate
  for text in sample(FLAGS.pretrained or FLAGS.workdir, argv[1], temperature=FLAGS.temperature,
                     top_k=FLAGS.top_k, max_new_tokens=FLAGS.max_new_tokens, seed=FLAGS.seed,
                     num_samples=FLAGS.num_samples):
    print(text)


if __name__ == "__main__":
  _define_flags()
  logging.set_verbosity(logging.ERROR)  # orbax warns that a read-only checkpoint is read-only
  app.run(main)
