"""CLIP's two towers (Radford et al. 2021, "Learning Transferable Visual Models From Natural
Language Supervision", Sec. 2.4 and Fig. 3): an image encoder and a text transformer, each
followed by a linear projection (no bias) into one shared embedding space, and the learned
log logit scale t (exp(t) is the inverse softmax temperature).

The image encoder is any `ssl_jax.models` encoder (`config.encoder`: convnet, resnet, vit);
its pooled output h is the representation the downstream probes read, and W_i h the image
embedding. The text encoder is a causal pre-LN transformer (`transformer.Decoder`, GPT-2's
shape, as the paper's text tower is), read at the last real token ([SEP], which ends every
caption: the paper's [EOS]) after the final LayerNorm; W_t of that is the text embedding.
The embeddings come out unnormalised; the loss and the zero-shot / retrieval evaluation
L2-normalise them.
"""
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from ssl_jax.models import transformer


class CLIP(nn.Module):
  """Image and text towers with projections into a `embed_dim`-dimensional joint space.

  Attributes:
    image_encoder: an image encoder module, images [b, H, W, C] -> features [b, D_i].
    text_encoder: a `transformer.Decoder` (its LM head is never used).
    embed_dim: width of the joint embedding space.
    init_temperature: the softmax temperature at initialisation (the paper's 0.07), stored as
      the log of its inverse.
    init_bias: when set, a learned logit bias `logit_bias` with this initial value (SigLIP's
      b, initialised at -10); CLIP has none.
  """
  image_encoder: nn.Module
  text_encoder: transformer.Decoder
  embed_dim: int
  init_temperature: float = 0.07
  init_bias: float | None = None

  def setup(self):
    self.image_projection = nn.Dense(self.embed_dim, use_bias=False)
    self.text_projection = nn.Dense(self.embed_dim, use_bias=False)
    initial = math.log(1.0 / self.init_temperature)
    self.log_logit_scale = self.param("log_logit_scale",
                                      lambda _: jnp.asarray(initial, jnp.float32))
    if self.init_bias is not None:
      self.logit_bias = self.param("logit_bias",
                                   lambda _: jnp.asarray(self.init_bias, jnp.float32))

  def encode_image(self, images, train: bool = False) -> tuple[Any, Any]:
    """(features h [b, D_i], image embedding [b, embed_dim])."""
    features = self.image_encoder(images, train=train)
    return features, self.image_projection(features)

  def encode_text(self, tokens, attention_mask, train: bool = False):
    """Text embeddings [b, embed_dim] of `[CLS] caption [SEP]` rows (right padding)."""
    hidden = self.text_encoder.encode(tokens, attention_mask, train=train)
    pooled = transformer.last_token_pool(hidden, attention_mask).astype(jnp.float32)
    return self.text_projection(pooled)

  def __call__(self, images, tokens, attention_mask, train: bool = False):
    """(h, image embeddings, text embeddings, log logit scale) of image–caption pairs."""
    features, image_embeddings = self.encode_image(images, train)
    text_embeddings = self.encode_text(tokens, attention_mask, train)
    return features, image_embeddings, text_embeddings, self.log_logit_scale
