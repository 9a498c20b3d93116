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

from configs.common import base_config, parse_arg, set_expected
from configs.recipes.text import apply_text_runlocal, text_setup


# Why a variant has no published target (`config.expected.note`); none has one. The
# evaluation measures held-out perplexity and probes frozen features; GPT's published results
# are fine-tuned (2018) or zero-shot (2019) benchmarks of models pre-trained on other corpora.
NOTES = {
    "python_docs": ("The embedded CPython documentation is this codebase's offline corpus; no "
                    "paper reports on it. The README's measured tables are the reference."),
    "wikipedia": ("No published number: Radford et al. report fine-tuned (2018) and zero-shot "
                  "(2019) benchmarks after pre-training on BooksCorpus / WebText, not "
                  "frozen-feature probes of imdb_reviews sentiment after Wikipedia."),
    "lm1b": ("No published number: GPT-2's One Billion Words perplexity is zero-shot, after "
             "WebText pre-training with its own byte-level vocabulary; this run trains on lm1b "
             "with a 30,000-token vocabulary learned here and probes imdb_reviews sentiment."),
    "imdb_reviews": ("No published number: pre-training on IMDB's 50,000 unlabelled reviews and "
                     "probing its sentiment labels on frozen features is this codebase's own "
                     "setting; Radford et al. report fine-tuned and zero-shot benchmarks."),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = parse_arg(arg, variant="python_docs", runlocal=False)
  c = base_config()
  c.method = "causal_lm"
  text_setup(c, arg.variant, "causal_lm", "gpt2")
  set_expected(c, None, NOTES[arg.variant])
  # "last": the state of the last real token, the only one that has read the whole text.
  c.causal_lm = ml_collections.ConfigDict(dict(pooling="mean"))
  if arg.runlocal:
    apply_text_runlocal(c)
  c.lock()
  return c
