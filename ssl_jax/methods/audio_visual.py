"""Audio-visual correspondence (Arandjelovic & Zisserman 2017, "Look, Listen and Learn", Sec. 3),
and its contrastive form (Morgado, Vasconcelos & Misra 2021, "Audio-Visual Instance
Discrimination with Cross-Modal Agreement", AVID).

A clip's frames go through a vision tower and its sound track through an audio tower
(`models.audio_visual`). `audio_visual.objective`:
  "correspondence" (L3): a head says whether a clip and a sound track belong together; each
    clip of the batch is paired with its own sound (label 1) and with the sound of another
    clip of the batch (label 0; the other clip is drawn uniformly among the rest, per clip),
    and the loss is the binary cross-entropy over the 2B pairs (the paper's two-way softmax
    with balanced positives and negatives). The head's fusion is "concat" (L3's) or
    "distance" (the Euclidean distance of the normalised embeddings, AVE-Net: Arandjelovic &
    Zisserman 2018, Sec. 3.1).
  "contrastive" (AVID's cross-modal discrimination, Sec. 3.2 with in-batch negatives): InfoNCE
    between the towers' normalised embeddings at `temperature`, the sound of every other clip
    of the batch a negative for a clip and the other way round, the two directions averaged.
What a negative differs in: on the embedded `sounding_digits`, another digit's note (what) or,
one time in ten, the same digit with its clicks at other times (when).

Representations: `represent` the vision tower's pooled features of the frames (what the
probes read as "ssl"), `represent_paired` the audio tower's (the feature sources "ssl:audio",
"random_init:audio"); with a joint space ("distance" fusion or the contrastive objective)
`embed` gives both towers' unit embeddings, for clip <-> sound retrieval. `test_metrics`: the
held-out correspondence accuracy (pairs as in training, negatives fixed by the evaluation's
key) or, contrastive, the top-1 accuracy of picking a clip's own sound among the batch's.
"""
from typing import Any

import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.errors import UserError
from ssl_jax.methods import Method, StepOutput, check_choice, check_number, check_sizes
from ssl_jax.models.audio_visual import (AudioTower, AudioVisualNetwork, CorrespondenceHead,
                                         VideoTower)

OBJECTIVES = ("correspondence", "contrastive")
FUSIONS = ("concat", "distance")
AUDIO_INPUTS = ("log_mel", "waveform")


def network(config) -> AudioVisualNetwork:
  """The towers and head that `config.audio_visual` describes (checked)."""
  s = config.audio_visual
  check_choice("config.audio_visual.objective", s.objective, OBJECTIVES)
  check_choice("config.audio_visual.fusion", s.fusion, FUSIONS)
  check_choice("config.audio_visual.audio_input", s.audio_input, AUDIO_INPUTS)
  check_sizes("config.audio_visual.video_widths", s.video_widths)
  check_sizes("config.audio_visual.audio_widths", s.audio_widths)
  for name in ("temporal_kernel", "embed_dim", "hidden_dim"):
    check_number(f"config.audio_visual.{name}", s[name], minimum=1, integer=True)
  check_number("config.audio_visual.temperature", s.temperature, above=0)
  if s.audio_input == "waveform":
    check_sizes("config.audio_visual.audio_kernels", s.audio_kernels)
    check_sizes("config.audio_visual.audio_strides", s.audio_strides)
    if not len(s.audio_widths) == len(s.audio_kernels) == len(s.audio_strides):
      raise UserError("config.audio_visual.audio_widths, audio_kernels and audio_strides must "
                      "have one entry per layer")
  data = config.data
  if "log_mel" not in data or not data.get("sample_rate"):
    raise UserError("audio_visual reads config.data.sample_rate and config.data.log_mel "
                    "(window_length, hop_length, num_mels): use the audio_video recipe")
  return AudioVisualNetwork(
      video_tower=VideoTower(tuple(s.video_widths), s.temporal_kernel, s.embed_dim),
      audio_tower=AudioTower(
          tuple(s.audio_widths), s.embed_dim, data.sample_rate, data.log_mel.window_length,
          data.log_mel.hop_length, data.log_mel.num_mels, s.audio_input,
          tuple(s.get("audio_kernels", ())), tuple(s.get("audio_strides", ()))),
      head=CorrespondenceHead(s.fusion, s.hidden_dim))


def other_clips(rng: jax.Array, real: jax.Array) -> jax.Array:
  """For each clip i of a batch, another real clip j != i [b], uniform over the rest (`real`
  bool [b]: an evaluation batch's padding rows are nobody's negative): the real clips in
  order, j the one 1 + u_i places after i's, cyclically, u_i uniform in {0, ..., n - 2} (n
  real clips; for a batch without padding, j = (i + 1 + u_i) mod b)."""
  count = jnp.sum(real.astype(jnp.int32))
  order = jnp.argsort(~real, stable=True)  # the real clips first, in order
  rank = jnp.cumsum(real.astype(jnp.int32)) - 1  # a real clip's place among them
  offsets = jax.random.randint(rng, real.shape, 0, jnp.maximum(count - 1, 1))
  return order[(rank + 1 + offsets) % jnp.maximum(count, 1)]


def build(config, length) -> Method:
  del length
  model = network(config)
  settings = config.audio_visual
  joint_space = settings.objective == "contrastive" or settings.fusion == "distance"

  def towers(params, frames, audio):
    video_features, video = model.apply({"params": params}, frames,
                                        method=AudioVisualNetwork.video)
    _, sound = model.apply({"params": params}, audio, method=AudioVisualNetwork.audio)
    return video_features, video, sound

  def correspondence(params, video, sound, rng, weights):
    """Each clip with its own sound (1) and another clip's (0)."""
    others = other_clips(rng, weights > 0)
    logits = model.apply({"params": params}, jnp.concatenate([video, video]),
                         jnp.concatenate([sound, sound[others]]),
                         method=AudioVisualNetwork.correspond)
    own, other = jnp.split(logits, 2)
    value, accuracy = losses.correspondence_cross_entropy(own, other, weights)
    return value, {"correspondence_accuracy": accuracy}

  def contrastive(video, sound, weights):
    """InfoNCE both ways over the real clips (padding rows are nobody's negative)."""
    logits = losses.batch_info_nce_logits(video, sound, settings.temperature)
    real = weights > 0
    logits = jnp.where(real[:, None] & real[None, :], logits, -1e9)  # both directions
    pairs, total = jnp.arange(logits.shape[0]), jnp.maximum(jnp.sum(weights), 1.0)

    def direction(scores):
      terms = losses.softmax_cross_entropy(scores, pairs)
      correct = (jnp.argmax(scores, axis=-1) == pairs).astype(jnp.float32)
      return jnp.sum(terms * weights) / total, jnp.sum(correct * weights) / total

    (video_loss, video_accuracy), (audio_loss, audio_accuracy) = (direction(logits),
                                                                 direction(logits.T))
    return (video_loss + audio_loss) / 2, {"video_to_audio_accuracy": video_accuracy,
                                           "audio_to_video_accuracy": audio_accuracy}

  def objective(params, batch, rng, weights):
    video_features, video, sound = towers(params, batch["frames"], batch["audio"])
    if settings.objective == "contrastive":
      value, metrics = contrastive(video, sound, weights)
    else:
      value, metrics = correspondence(params, video, sound, rng, weights)
    return value, metrics, video_features

  def init(rng: jax.Array, batch: dict[str, jax.Array]) -> tuple[Any, Any]:
    return model.init(rng, batch["frames"], batch["audio"])["params"], {}

  def loss(params, extra, batch, rng, step):
    del step
    weights = jnp.ones((batch["frames"].shape[0],), jnp.float32)
    value, metrics, features = objective(params, batch, rng, weights)
    return value, StepOutput(extra, metrics, features)

  def represent(params, extra, inputs):
    del extra
    features, _ = model.apply({"params": params}, inputs["frames"],
                              method=AudioVisualNetwork.video)
    return features

  def represent_paired(params, extra, paired):
    del extra
    features, _ = model.apply({"params": params}, paired["audio"],
                              method=AudioVisualNetwork.audio)
    return features

  def embed_video(params, extra, inputs):
    del extra
    _, video = model.apply({"params": params}, inputs["frames"], method=AudioVisualNetwork.video)
    return losses.l2_normalize(video)

  def embed_audio(params, extra, paired):
    del extra
    _, sound = model.apply({"params": params}, paired["audio"], method=AudioVisualNetwork.audio)
    return losses.l2_normalize(sound)

  def test_metrics(params, extra, batch, rng):
    """Held-out pairs of the real clips (the batch's padding rows weigh nothing)."""
    del extra
    weights = batch.get("mask", jnp.ones((batch["frames"].shape[0],), bool)).astype(jnp.float32)
    value, metrics, _ = objective(params, batch, rng, weights)
    count = jnp.sum(weights)
    return {"loss": (value * count, count),
            **{name: (metric * count, count) for name, metric in metrics.items()}}

  return Method(init=init, loss=loss, represent=represent, represent_paired=represent_paired,
                test_metrics=test_metrics,
                embed={"video": embed_video, "audio": embed_audio} if joint_space else None,
                coupling="the other clips of the batch are the negatives")
