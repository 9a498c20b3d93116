"""CLIP: contrastive image–text pre-training (Radford et al. 2021, "Learning Transferable Visual
Models From Natural Language Supervision", Sec. 2.3–2.5, Fig. 3).

Each training example is an image and one of its captions (`image_text_pipeline` draws one
per step). An image encoder and a causal text transformer project both into one space
(`models.clip.CLIP`); the loss is the symmetric InfoNCE of the global batch's N x N cosine
similarities scaled by a learned exp(t), clipped at 100 (`losses.clip_info_nce`): every other
caption of the batch is a negative for an image and every other image for a caption. As in
the paper, the only image augmentation is the pipeline's random crop (`config.augment`
should be colour-faithful: a caption may name the colour).

The representation the probes read is the image encoder's pooled output h, before the
projection. `embed["image"]` and `embed["text"]` give the unit-norm joint embeddings, from which
the evaluation builds zero-shot classifiers (class-name prompts, Sec. 3.1.4) and measures
image <-> text retrieval. Metrics: image_to_text_accuracy / text_to_image_accuracy (the true
pair ranked first within the batch) and temperature (1 / exp(t)).

Config: `config.encoder` (the image tower), `config.transformer` (the text tower, a
`transformer.Decoder`), `config.tokenizer.vocab_size`, `config.clip` (embed_dim,
init_temperature).
"""
from typing import Any

import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.methods import (EmbeddingLoss, Method, StepOutput, check_num_views, check_number,
                             composed_loss)
from ssl_jax.models import (apply_in_eval_mode, apply_in_train_mode, build_encoder, clip,
                            init_variables, transformer)


def network(config, section: str = "clip", init_bias: float | None = None) -> clip.CLIP:
  """The two towers that `config` describes (checked); `config.<section>` (config.clip, or
  SigLIP's config.siglip) gives embed_dim and init_temperature."""
  settings, key = config[section], f"config.{section}"
  check_number(f"{key}.embed_dim", settings.embed_dim, minimum=1, integer=True)
  check_number(f"{key}.init_temperature", settings.init_temperature, above=0)
  text = transformer.Decoder(vocab_size=config.tokenizer.vocab_size, **config.transformer)
  return clip.CLIP(image_encoder=build_encoder(config.encoder), text_encoder=text,
                   embed_dim=settings.embed_dim, init_temperature=settings.init_temperature,
                   init_bias=init_bias)


def build(config, length) -> Method:
  del length  # No schedule besides the optimizer's.
  check_num_views(config, 1, "clip")

  def symmetric_info_nce(params, embeddings):
    """The symmetric InfoNCE of the whole batch's pairs (every other pair a negative)."""
    log_scale = params["log_logit_scale"]
    value, logits = losses.clip_info_nce(embeddings["image"], embeddings["text"], log_scale)
    pairs = jnp.arange(logits.shape[0])
    return value, {"image_to_text_accuracy": losses.top1_accuracy(logits, pairs),
                   "text_to_image_accuracy": losses.top1_accuracy(logits.T, pairs),
                   "temperature": 1.0 / losses.clip_logit_scale(log_scale)}

  return image_text_method(network(config), symmetric_info_nce)


def image_text_method(model: clip.CLIP, pair_loss) -> Method:
  """A `Method` around two towers and a loss over the batch's image and text embeddings,
  `pair_loss(params, {"image", "text"}) -> (loss, metrics)` (CLIP's, SigLIP's). The loss
  couples the batch only through the embeddings: with BatchNorm-free towers, gradient
  accumulation is exact through gradient caching (`ssl_jax.accumulation`). The
  representation is the image tower's pooled output h; `embed` gives the unit-norm joint
  embeddings for zero-shot classification and retrieval."""

  def init(rng: jax.Array, batch: dict[str, jax.Array]) -> tuple[Any, Any]:
    params, batch_stats = init_variables(model, rng, batch["views"][:, 0], batch["tokens"],
                                         batch["attention_mask"])
    return params, {"batch_stats": batch_stats}

  def embed_pairs(params, extra, batch, rng):
    """Each pair's image features and both embeddings (the per-example part of the loss)."""
    (features, image_embeddings, text_embeddings, _), batch_stats = (
        apply_in_train_mode(model, params, extra["batch_stats"], batch["views"][:, 0],
                            batch["tokens"], batch["attention_mask"], rng=rng))
    return {"features": features, "image": image_embeddings,
            "text": text_embeddings}, batch_stats

  def contrast(params, extra, embeddings, batch_stats, step):
    del extra, step
    value, metrics = pair_loss(params, embeddings)
    return value, StepOutput({"batch_stats": batch_stats}, metrics, embeddings["features"])

  contrastive = EmbeddingLoss(embed=embed_pairs, loss=contrast)

  def represent(params, extra, images):
    features, _ = apply_in_eval_mode(model, params, extra["batch_stats"], images,
                                     method=clip.CLIP.encode_image)
    return features

  def embed_images(params, extra, images):
    _, embeddings = apply_in_eval_mode(model, params, extra["batch_stats"], images,
                                       method=clip.CLIP.encode_image)
    return losses.l2_normalize(embeddings)

  def embed_texts(params, extra, text):
    embeddings = apply_in_eval_mode(model, params, extra["batch_stats"], text["tokens"],
                                    text["attention_mask"], method=clip.CLIP.encode_text)
    return losses.l2_normalize(embeddings)

  return Method(init=init, loss=composed_loss(contrastive), represent=represent,
                embed={"image": embed_images, "text": embed_texts},
                coupling="every other pair of the batch is a negative",
                embedding_loss=contrastive)
