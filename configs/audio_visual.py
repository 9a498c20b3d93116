r"""Audio-visual correspondence (Arandjelovic & Zisserman 2017, L3) and its contrastive form (AVID,
Morgado et al. 2021) on clips with sound.

Variants (`--config=configs/audio_visual.py:VARIANT`):

sounding_digits (default; offline, 2 CPU cores):
    python -m ssl_jax.main --config=configs/audio_visual.py:sounding_digits --workdir=runs/avc
  The embedded `sounding_digits` (the moving digits, 10 frames of 32x32, each with 1 s of
  sound at 4 kHz: the digit's note, a click at each bounce, loudness following the digit's
  height, background noise; 1,257 train / 540 test clips;
  `ssl_jax/data/builders/sounding_digits.py`). Vision tower: per-frame 3x3 stride-2
  convolutions 16-32-64 (GroupNorm, ReLU; 32 -> 4 px), pooled over space, a temporal
  convolution of kernel 3 over the frames, pooled over time; audio tower: the log-mel
  spectrogram (32 ms windows every 16 ms, 40 bands) through the same convolutions; 64-d
  embeddings. The binary corresponds / does-not-correspond task (each clip with its own sound
  and with another clip's), its head AVE-Net's: an affine map of the distance between the
  normalised embeddings (Arandjelovic & Zisserman 2018), which also makes the two towers one
  space for clip <-> sound retrieval; batch 64, 2000 steps, AdamW 1e-3. Then probes of the
  digit on each tower's features ("ssl" the frames, "ssl:audio" the sound) against the raw
  frames and log-mel spectrogram and the untrained towers, the held-out correspondence
  accuracy and retrieval Recall@1/5 on the test split.
sounding_digits_l3: L3's own head (Arandjelovic & Zisserman 2017): the two embeddings
  concatenated, a hidden ReLU layer of 64, one logit. Its first-order terms are additive in
  the two embeddings, which cannot tell a clip's own sound from another's, so it learns only
  through the hidden layer's interactions: measured here, it stays at chance (loss ln 2) for
  all 2,000 steps, where the distance head leaves it within 400 (see the README). No joint
  space, so no retrieval.
sounding_digits_avid: AVID's cross-modal InfoNCE (Morgado et al. 2021; temperature 0.1, the
  other clips' sounds of the batch the negatives) with the same towers; retrieval too.
A TFDS dataset of your own with `video` uint8 [T, H, W, C] and `audio` [A] or [A, 2] features
reads through the same pipeline (`configs/recipes/audio_video.py`; int16 audio with
`--config.data.audio_scale=3.0517578125e-05`).

Add `,runlocal=True` to any variant for a tiny smoke run.
"""
import ml_collections

from configs.common import apply_runlocal, base_config, parse_arg, set_expected
from configs.recipes.audio_video import audio_video_data

VARIANTS = ("sounding_digits", "sounding_digits_l3", "sounding_digits_avid")
# Why a variant has no published target (`config.expected.note`); none has one.
NOTES = {variant: ("The embedded sounding digits are this codebase's offline stand-in; "
                   "neither L3, AVE-Net nor AVID reports on them. The README's measured "
                   "table is the reference.") for variant in VARIANTS}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = parse_arg(arg, variant="sounding_digits", runlocal=False)
  if arg.variant not in VARIANTS:
    raise ValueError(f"unknown audio_visual variant '{arg.variant}': use "
                     f"{', '.join(VARIANTS)}")
  c = base_config()
  c.method = "audio_visual"
  audio_video_data(c, "sounding_digits", "frames", "audio", "label", num_frames=10,
                   image_size=32, channels=1, audio_length=4000, sample_rate=4000)
  c.data.log_mel.update(window_length=128, hop_length=64, num_mels=40)
  c.audio_visual = ml_collections.ConfigDict(dict(
      objective="contrastive" if arg.variant == "sounding_digits_avid" else "correspondence",
      fusion="concat" if arg.variant == "sounding_digits_l3" else "distance",
      video_widths=(16, 32, 64), temporal_kernel=3, audio_input="log_mel",
      audio_widths=(16, 32, 64), audio_kernels=(), audio_strides=(), embed_dim=64,
      hidden_dim=64, temperature=0.1))
  c.eval.feature_sources = ("ssl", "random_init", "raw", "ssl:audio", "random_init:audio",
                            "raw:audio")
  # Six feature sources (frames and sound, each trained, untrained and raw): the probes that
  # tell them apart, with 1, 10 and all labels per class.
  c.evals.probes.update(protocols=("linear", "knn"), labels_per_class=(1, 10, 0))
  c.batch_size = 64
  c.total_steps = 2000
  c.log_every_steps = 100
  c.checkpoint_every_steps = 500
  c.optimizer.update(name="adamw", lr=1e-3, lr_scaling="none", weight_decay=1e-4,
                     warmup_steps=50, grad_clip_norm=1.0)
  c.eval.batch_size = 540
  c.evals.finetune.fractions = ()  # fine-tuning (ssl_jax/eval/finetune.py) is for images
  set_expected(c, None, NOTES[arg.variant])
  if arg.runlocal:
    apply_runlocal(c)
    c.evals.plots.enabled = False
  c.lock()
  return c
