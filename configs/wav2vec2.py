r"""wav2vec 2.0 (Baevski et al. 2020) on raw waveforms.

Variants (`--config=configs/wav2vec2.py:VARIANT`):

vowels (default; offline, 2 CPU cores):
    python -m ssl_jax.main --config=configs/wav2vec2.py:vowels --workdir=runs/w2v_vowels
  The embedded `vowels` (synthesised at 8 kHz: strings of 3-4 voiced-stop + vowel syllables,
  "ba-da-ga", one of 10 vowels per utterance, 12 speakers; closures, bursts and formant glides
  change the signal every few 10 ms steps, so the distractors, drawn from the same utterance,
  differ from the target; 0.25-0.5 s utterances in 0.5 s windows; 1,440 train / 480 test;
  `ssl_jax/data/builders/vowels.py`), the raw waveform as one channel. A small BASE-shaped
  model: feature encoder of four 1-D
  convolutions of 64 (kernels (10, 8, 4, 4), strides (5, 4, 2, 2): 48 steps of 10 ms per
  window), a context network of 2 post-LN blocks of width 64 (4 heads, MLP 128) with a
  convolutional relative position embedding (kernel 16, 4 groups), a quantizer of G = 2
  groups x V = 32 entries (the paper: 2 x 320), final dimension 32; the paper's masking
  (p = 0.065, spans of 10 steps: about half of the steps), K = 20 distractors (the paper:
  100, from ~250 masked steps; a window here has ~20), kappa = 0.1, alpha = 0.1, feature
  penalty 10, Gumbel temperature 2 -> 0.5 over the run; batch 32, 2000 steps, AdamW 1e-3.
  Then probes of the vowel on the context averaged over the recorded steps, against the
  log-mel spectrogram (`data.raw_baseline`; `--config.data.raw_baseline=signal` compares the
  flattened waveform) and the untrained network, and the held-out contrastive accuracy and
  codebook perplexity. CPC runs on the same data (`configs/cpc.py:vowels`) for comparison.
speech_commands: TFDS `speech_commands` (16 kHz, up to 1 s, 12 classes), the paper's BASE
  model (Sec. 4.2: seven convolutions of 512, kernels (10, 3, 3, 3, 3, 2, 2), strides (5, 2,
  2, 2, 2, 2, 2): 20 ms steps; 12 blocks of 768 with 12 heads (fairseq's BASE setting), MLP
  3072; position kernel 128 in 16 groups; G = 2, V = 320, codevectors of 256, final 256;
  K = 100), AdamW 5e-4 with 32k warm-up steps (8% of 400k), batch 64.
librispeech: the same model on TFDS `librispeech` (`speech`, train_clean100), windows of
  64,000 samples (4 s; the paper crops to 250k samples, 15.6 s) at random offsets;
  pretraining only (`evaluate_at_end` off: its `speaker_id` is not a TFDS ClassLabel).
The TFDS datasets must be prepared first (`tfds build speech_commands`).

Add `,runlocal=True` to any variant for a tiny smoke run.
"""
import ml_collections

from configs.common import apply_runlocal, base_config, parse_arg, set_expected
from configs.recipes.sequence import sequence_data

NOTES = {
    "vowels": ("The embedded synthesised vowels are this codebase's offline stand-in; no "
               "wav2vec 2.0 paper reports on them. The README's measured table is the "
               "reference."),
    "speech_commands": ("No published number: Baevski et al. 2020 fine-tune on LibriSpeech "
                        "and TIMIT (word and phone error rates), not frozen probes on Speech "
                        "Commands."),
    "librispeech": ("Pre-training only: the paper's numbers are word error rates after CTC "
                    "fine-tuning (Baevski et al. 2020, Tables 1-2), which this codebase does "
                    "not run."),
}

_BASE = dict(
    widths=(512,) * 7, kernels=(10, 3, 3, 3, 3, 2, 2), strides=(5, 2, 2, 2, 2, 2, 2),
    model_dim=768, depth=12, num_heads=12, mlp_dim=3072, position_kernel=128,
    position_groups=16, groups=2, entries=320, codevector_dim=256, final_dim=256,
    distractors=100)


def _settings(**overrides) -> ml_collections.ConfigDict:
  settings = dict(
      widths=(64,) * 4, kernels=(10, 8, 4, 4), strides=(5, 4, 2, 2), model_dim=64, depth=2,
      num_heads=4, mlp_dim=128, position_kernel=16, position_groups=4, groups=2, entries=32,
      codevector_dim=64, final_dim=32, mask_prob=0.065, mask_length=10, distractors=20,
      temperature=0.1, diversity_weight=0.1, feature_penalty=10.0,
      gumbel_temperature=(2.0, 0.5), dropout=0.1)
  settings.update(overrides)
  return ml_collections.ConfigDict(settings)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = parse_arg(arg, variant="vowels", runlocal=False)
  c = base_config()
  c.method = "wav2vec2"
  if arg.variant == "vowels":
    sequence_data(c, "vowels", 4000, signal_scale=1.0, standardize=False,
                  raw_baseline="log_mel", sample_rate=8000)
    c.wav2vec2 = _settings()
    c.batch_size = 32
    c.total_steps = 2000
    c.log_every_steps = 100
    c.checkpoint_every_steps = 1000
    c.optimizer.update(name="adamw", lr=1e-3, lr_scaling="none", weight_decay=1e-2,
                       warmup_steps=100, grad_clip_norm=1.0)
    c.eval.batch_size = 480
  elif arg.variant in ("speech_commands", "librispeech"):
    if arg.variant == "speech_commands":
      sequence_data(c, "speech_commands", 16000, signal_key="audio", length_key=None,
                    signal_scale=1 / 32768, standardize=False, raw_baseline="log_mel",
                    sample_rate=16000)
    else:
      sequence_data(c, "librispeech", 64000, signal_key="speech", length_key=None,
                    label_key=None, signal_scale=1 / 32768, standardize=False,
                    raw_baseline="log_mel", sample_rate=16000,
                    train_split="train_clean100", test_split="test_clean")
      c.online_probe.enabled = False
      c.evaluate_at_end = False
    c.wav2vec2 = _settings(**_BASE)
    c.batch_size = 64
    c.total_steps = 400_000
    c.log_every_steps = 100
    c.checkpoint_every_steps = 5000
    c.optimizer.update(name="adamw", lr=5e-4, lr_scaling="none", weight_decay=1e-2,
                       warmup_steps=32_000, grad_clip_norm=10.0)
    c.eval.batch_size = 256
    c.evals.probes.update(linear_l2="heldout", labels_per_class=(10, 100, 0))
  else:
    raise ValueError(f"unknown wav2vec2 variant '{arg.variant}': use vowels, speech_commands "
                     "or librispeech")
  c.evals.finetune.fractions = ()  # fine-tuning (ssl_jax/eval/finetune.py) is for images
  set_expected(c, None, NOTES[arg.variant])
  if arg.runlocal:
    apply_runlocal(c)
    c.evals.plots.enabled = False
  c.lock()
  return c
