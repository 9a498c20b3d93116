"""Text dataset recipes shared by the language objectives (mlm, causal_lm)."""
import ml_collections

from configs.common import apply_runlocal


# Text datasets: (TFDS name, sentence pairs possible, labelled dataset to probe, its train split).
# A real dataset must be prepared first (`tfds build NAME`); `python_docs` builds offline.
TEXT_VARIANTS = {
    "python_docs": ("python_docs/plain", True, "python_docs/labelled", None),
    "lm1b": ("lm1b", False, "imdb_reviews", "train"),
    "wikipedia": ("wikipedia/20230601.en", True, "imdb_reviews", "train"),
    "imdb_reviews": ("imdb_reviews", True, "imdb_reviews", "train"),
}


def text_setup(c: ml_collections.ConfigDict, variant: str, method: str, model_size: str
               ) -> ml_collections.ConfigDict:
  """The text recipes shared by the language objectives (mlm, causal_lm).

  python_docs (offline, 2 CPU cores): the embedded CPython documentation paragraphs, rows of
  64 WordPiece tokens (90% of paragraphs fit), a 4,000-token vocabulary learned on the
  training split, a transformer of BERT-Tiny's shape (2 layers, width 128, 2 heads, MLP 512;
  Turc et al. 2019) without dropout (a short run on a small corpus; dropout's random bits
  also cost a third of a CPU step), batch 64, 2000 steps, AdamW 1e-3 with 100 warm-up steps;
  probed on `python_docs/labelled` (docstrings by package), against a bag of words.
  lm1b / wikipedia / imdb_reviews (prepared TFDS datasets): `model_size` (bert_base or gpt2),
  rows of 128 tokens, a 30,000-token vocabulary learned on the first 200,000 training texts,
  batch 256, AdamW 1e-4 with weight decay 0.01, 10,000 warm-up steps, 1M steps (BERT's
  schedule, Devlin et al. 2019 A.2); probed on imdb_reviews' labelled train and test splits.
  imdb_reviews pre-trains on its 50,000 unlabelled reviews.
  """
  if variant not in TEXT_VARIANTS:
    raise ValueError(f"unknown {method} variant '{variant}': use {', '.join(TEXT_VARIANTS)}")
  dataset, _, probed, probe_split = TEXT_VARIANTS[variant]
  c.dataset = dataset
  c.data.update(modality="text", label_key=None, num_views=1)
  c.data.text_key = "text"
  c.data.sentence_pairs = False
  # "hf:NAME_OR_PATH": continue a published model (its weights, tokenizer and shape) instead
  # of training from scratch with a vocabulary learned here; the text modality resolves it.
  c.init_from = ""
  c.online_probe.enabled = False
  c.eval.update(dataset=probed, train_split=probe_split, feature_sources=(
      "ssl", "random_init", "raw"))
  c.evals.finetune.fractions = ()  # fine-tuning (ssl_jax/eval/finetune.py) is for images
  c.evals.plots.enabled = True
  if variant == "python_docs":
    c.data.max_length = 64
    c.tokenizer = ml_collections.ConfigDict(dict(vocab_size=4000, lowercase=True,
                                                 min_frequency=2, train_texts=1_000_000))
    c.transformer = ml_collections.ConfigDict(dict(
        size="tiny", width=128, depth=2, num_heads=2, mlp_dim=512, max_length=64,
        dropout=0.0))
    c.batch_size = 64
    c.total_steps = 2000
    c.log_every_steps = 100
    c.checkpoint_every_steps = 500
    c.optimizer.update(name="adamw", lr=1e-3, lr_scaling="none", weight_decay=0.01,
                       warmup_steps=100, grad_clip_norm=1.0)
    c.eval.batch_size = 512
    return c
  c.data.max_length = 128
  c.tokenizer = ml_collections.ConfigDict(dict(vocab_size=30_000, lowercase=True,
                                               min_frequency=2, train_texts=200_000))
  c.transformer = ml_collections.ConfigDict(dict(
      size=model_size, width=None, depth=None, num_heads=None, mlp_dim=None, max_length=None,
      dropout=0.1))
  c.precision = "bfloat16"
  c.batch_size = 256
  c.total_steps = 1_000_000
  c.log_every_steps = 100
  c.checkpoint_every_steps = 5000
  c.optimizer.update(name="adamw", lr=1e-4, lr_scaling="none", weight_decay=0.01,
                     warmup_steps=10_000, grad_clip_norm=1.0)
  c.eval.batch_size = 1024
  c.evals.probes.update(linear_l2="heldout", labels_per_class=(1, 10, 100, 0))
  if variant == "imdb_reviews":
    c.data.train_split = "unsupervised"
  return c


def apply_text_runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`,runlocal=True` for text: a tiny transformer, a 500-token vocabulary, 4 steps."""
  apply_runlocal(c)
  c.tokenizer.update(vocab_size=500, train_texts=2000)
  c.transformer.update(size="tiny", width=32, depth=1, num_heads=2, mlp_dim=64,
                       max_length=c.data.max_length)
  c.evals.plots.enabled = False
  return c
