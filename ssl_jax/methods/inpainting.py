"""Context Encoders (Pathak, Kraehenbuehl, Donahue, Darrell, Efros 2016, "Context Encoders:
Feature Learning by Inpainting").

A region of each image is hidden (`ssl_jax.corruptions.hidden_region_mask`, Sec. 3.3):
"center", the central block covering `size` of the image (the paper's 64x64 centre of
128x128 images is size 0.25), or "random_blocks", round(size * grid^2) of the image's
grid x grid blocks chosen at random. The hidden pixels are set to 0 in normalised space, the
dataset mean as in the paper. The encoder (`config.encoder`) encodes the rest, a fully
connected bottleneck of `bottleneck_dim` connects it to the decoder (Sec. 3.1: the paper's
channel-wise fully connected layer spans the spatial positions of its AlexNet pool5 map; our
encoders pool that map, so a dense layer plays its role), and the decoder
(`ssl_jax.models.decoder`) predicts the whole image. The loss is the paper's reconstruction
loss (Eq. 1), the squared error on the hidden pixels only, here averaged over them
(`losses.mean_squared_error` with the mask).

Not implemented: the adversarial loss (Eq. 2-3), which the paper adds to sharpen the
inpainting but which the features the authors release were trained without (reconstruction
loss only, github.com/pathak22/context-encoder); the 10x loss weight on a border that
overlaps the context (the paper's implementation details); and "random region" masks, which
take their shapes from PASCAL VOC segmentations.

The representation is the pooled encoder features of the full, unmasked image; the online
probe sees the features of the masked images (the loss's forward pass).

The reconstruction error (the anomaly evaluation's score) is the loss's per image: the error
on the hidden pixels of a region drawn from the evaluation's fixed rng
(`corrupted_reconstruction_method`).

Config (`config.inpainting`): region, size, grid, bottleneck_dim; `config.encoder` and
`config.decoder` give the networks.
"""
import jax
import jax.numpy as jnp

from ssl_jax import corruptions
from ssl_jax.methods import (Method, check_image_decoder, check_num_views,
                             corrupted_reconstruction_method)
from ssl_jax.models.decoder import EncoderDecoder, build_encoder_decoder


def build(config, length) -> Method:
  check_num_views(config, 1, "inpainting")
  del length  # no schedule besides the optimizer's
  settings = config.inpainting
  corruptions.check_region(settings.region, settings.size, settings.grid, "config.inpainting")
  check_image_decoder(config)
  region, size, grid = settings.region, float(settings.size), int(settings.grid)
  network = build_encoder_decoder(config, EncoderDecoder, settings.bottleneck_dim,
                                  "config.inpainting.bottleneck_dim")

  def hide(rng: jax.Array, images: jax.Array):
    """(images with the hidden region at 0, the mask [B, H, W, 1] (True = hidden: the loss
    counts these pixels only), metrics)."""
    batch, height, width, _ = images.shape
    mask = corruptions.hidden_region_mask(rng, batch, height, width, region, size, grid)
    metrics = {"hidden_fraction": jnp.mean(mask.astype(jnp.float32))}
    return jnp.where(mask, 0.0, images), mask, metrics

  # Picture "inpainting": input, masked input, the input with the hidden region predicted.
  return corrupted_reconstruction_method(network, hide, "inpainting")
