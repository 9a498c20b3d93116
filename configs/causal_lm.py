r"""GPT-style causal language modelling (Radford et al. 2018, 2019), one variant per dataset.

Variants (`--config=configs/causal_lm.py:VARIANT`):

python_docs (default; offline, 2 CPU cores):
    python -m ssl_jax.main --config=configs/causal_lm.py:python_docs \
        --workdir=runs/causal_lm_python_docs
  A 2-layer, width-128 pre-LN decoder on the embedded CPython documentation, rows of 64
  tokens ([CLS] starts a text, [SEP] ends it), batch 64, 2000 steps; then held-out
  perplexity on the test paragraphs and the probes on docstrings labelled by package
  (python_docs/labelled) against a bag of words. Sample from it with
  `python -m ssl_jax.generate --workdir=W "prompt"`. Measured numbers are in README.md.

wikipedia / lm1b / imdb_reviews: GPT-2 small (124M), rows of 128 tokens, batch 256, AdamW
  1e-4, 1M steps; probed on imdb_reviews' sentiment labels. Prepare the datasets with
  `tfds build` first.

Add `,runlocal=True` to any variant for a tiny smoke run.
"""
import ml_collections

from configs.common import base_config, parse_arg
from configs.recipes.text import apply_text_runlocal, text_setup


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = parse_arg(arg, variant="python_docs", runlocal=False)
  c = base_config()
  c.method = "causal_lm"
  text_setup(c, arg.variant, "causal_lm", "gpt2")
  # "last": the state of the last real token, the only one that has read the whole text.
  c.causal_lm = ml_collections.ConfigDict(dict(pooling="mean"))
  if arg.runlocal:
    apply_text_runlocal(c)
  c.lock()
  return c
