"""SigLIP: image–text pre-training with a pairwise sigmoid loss (Zhai et al. 2023, "Sigmoid
Loss for Language Image Pre-Training", Sec. 3, Alg. 1).

CLIP's two towers (`models.clip.CLIP`, `methods.clip.network`), trained with the sigmoid loss
instead of the softmax: every image–text pair of the global batch is its own binary problem,
positive for the true pair and negative for the other N^2 - N, scored by
exp(t') <x, y> + b with a learned temperature t' (initialised at log 10) and a learned bias b
(initialised at -10, so that the many negatives do not dominate the first steps, Sec. 3.2).
The loss is computed blockwise over the devices of `config.mesh` (`losses.
sigmoid_pair_loss_ring`): each device scores its images against one block of texts at a
time and passes the block around a ring, so no device holds the N x N logits; on one device
it is the dense loss.

Everything else is CLIP's: the representation is the image tower's pooled output, and
`embed["image"]` / `embed["text"]` give the unit-norm joint embeddings for zero-shot
classification and retrieval. Metrics: image_to_text_accuracy / text_to_image_accuracy (the
true pair scored above every other in the batch), temperature (1 / exp(t')) and bias.

Config: as CLIP (`config.encoder`, `config.transformer`, `config.tokenizer.vocab_size`), with
`config.siglip` (embed_dim, init_temperature (0.1 = 1 / 10), init_bias (-10)) in place of
`config.clip`.
"""
import jax.numpy as jnp

from ssl_jax import losses, parallel
from ssl_jax.methods import Method, check_num_views, check_number
from ssl_jax.methods.clip import image_text_method, network


def build(config, length) -> Method:
  del length  # No schedule besides the optimizer's.
  check_num_views(config, 1, "siglip")
  check_number("config.siglip.init_bias", config.siglip.init_bias)
  mesh = parallel.make_mesh(config.mesh)  # the trainer's mesh: the ring runs over its devices

  def pairwise_sigmoid(params, embeddings):
    value, metrics = losses.sigmoid_pair_loss_ring(
        embeddings["image"], embeddings["text"], params["log_logit_scale"],
        params["logit_bias"], mesh)
    return value, {**metrics, "temperature": jnp.exp(-params["log_logit_scale"]),
                   "bias": params["logit_bias"]}

  model = network(config, "siglip", init_bias=float(config.siglip.init_bias))
  return image_text_method(model, pairwise_sigmoid)
