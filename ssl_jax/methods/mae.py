"""MAE (He, Chen, Xie, Li, Dollar, Girshick 2021, "Masked Autoencoders Are Scalable Vision
Learners").

Each image is cut into N patches and a random subset of them is masked per example (Sec. 3,
"Masking" and "Simple implementation"): uniform noise from the image's own key is sorted
(argsort) and the first K = round((1 - mask_ratio) * N) patches of that shuffle stay visible. The ViT
encoder sees only the K visible patches plus its CLS token; a light decoder gets the encoded
visible tokens, one learned mask token per masked patch and fixed sin-cos positions, and
predicts the pixels of every patch (`models.masked_autoencoder`). The loss is the mean
squared error on the masked patches only (`losses.masked_patch_mse`), with each target patch
standardised by its own mean and standard deviation when `norm_pix_loss` is on
(`losses.normalize_patches`, Sec. 3 "Reconstruction target"). Targets are patches of the view
as the trainer normalised it (MAE's are of the ImageNet-normalised input too).

The representation is the encoder on all patches, no masking, pooled as `config.encoder.pool`
says: "cls" is MAE's linear probe (the CLS token after the encoder's final LayerNorm), "mean"
the average of the patch tokens. The online probe sees the same pooling of the masked pass's
latent (the CLS token, or the mean of the visible tokens), which costs no extra forward pass.

Pictures: "reconstructions" shows, for the first 8 images, the input, the masked input (masked
patches set to 0 in normalised space, the dataset's mean colour) and the reconstruction (the
visible patches of the input, the decoder's prediction in the masked ones; with
`norm_pix_loss` the prediction is un-normalised with the true patch's mean and standard
deviation, as the authors' visualisation demo does).

The reconstruction error (the anomaly evaluation's score) is the loss's per image: the mean
squared error over the masked patches against the loss's targets (standardised patches with
`norm_pix_loss`), averaged over `_ERROR_MASKS` random masks drawn from the evaluation's fixed
rng. Which patches are hidden changes an image's error (at MAE's ratio, three quarters of
its patches are guessed); a few masks lower that noise in the score, each mask costing one
encoder pass over the visible patches and one decoder pass.

Config (`config.mae`): mask_ratio, norm_pix_loss, norm_pix_eps; `config.encoder` is the ViT
(`name="vit"`) and `config.decoder` the `MAEDecoder` (width, depth, num_heads, mlp_dim, dtype).
"""
import functools
from typing import Any

import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.errors import UserError
from ssl_jax.methods import (Method, StepOutput, check_choice, check_num_views, check_number,
                             check_options, example_keys)
from ssl_jax.models import build_encoder, vit
from ssl_jax.models.masked_autoencoder import MAEDecoder, MaskedAutoencoder, patchify, unpatchify

_PICTURE_ROWS = 8  # Images shown in "reconstructions".
_ERROR_MASKS = 4  # Random masks each image's reconstruction error averages over.


def num_visible_patches(num_patches: int, mask_ratio: float) -> int:
  """K = round((1 - mask_ratio) * N), the patches the encoder sees. MAE's code truncates
  instead (int(...)); the two agree for the paper's settings (N = 196, ratio 0.75: 49)."""
  return int(round((1.0 - mask_ratio) * num_patches))


def random_masking(keys: jax.Array, num_patches: int, num_visible: int
                   ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-example random masking by shuffling (He et al. 2021, Sec. 3, "Simple implementation").

  `keys` holds one PRNG key per image [B] (`methods.example_keys`): an image's mask depends on
  its key alone, not on the batch it is in. Returns keep_indices [B, K] (the visible patches,
  in shuffled order), restore_indices [B, N] (where each patch of the image went in the
  shuffle, to put decoder tokens back in image order) and mask [B, N] float32 (1 = masked,
  0 = visible, in image order).
  """
  noise = jax.vmap(lambda key: jax.random.uniform(key, (num_patches,)))(keys)
  shuffle = jnp.argsort(noise, axis=1)
  restore_indices = jnp.argsort(shuffle, axis=1)
  mask = (restore_indices >= num_visible).astype(jnp.float32)
  return shuffle[:, :num_visible], restore_indices, mask


def _check(config) -> tuple[int, int]:
  """Build-time checks; returns (number of patches, number of visible patches)."""
  check_num_views(config, 1, "MAE")
  if config.encoder.name != "vit":
    raise UserError(f"MAE needs a ViT encoder (config.encoder.name='vit'), got "
                    f"'{config.encoder.name}'")
  if config.encoder.get("registers", 0):
    raise UserError("MAE's encoder takes no register tokens (config.encoder.registers must be "
                    f"0, got {config.encoder.registers}): it runs on the visible patches alone")
  patch_size, image_size = config.encoder.patch_size, config.data.image_size
  if image_size % patch_size:
    raise UserError(f"config.data.image_size {image_size} is not divisible by "
                    f"config.encoder.patch_size {patch_size}")
  settings = config.mae
  check_number("config.mae.mask_ratio", settings.mask_ratio, above=0, below=1)
  num_patches = (image_size // patch_size) ** 2
  num_visible = num_visible_patches(num_patches, settings.mask_ratio)
  if not 1 <= num_visible < num_patches:
    raise UserError(f"config.mae.mask_ratio {settings.mask_ratio} leaves {num_visible} of "
                    f"{num_patches} patches visible; at least one must be visible and one masked")
  check_choice("config.mae.norm_pix_loss", settings.norm_pix_loss, (True, False))
  if settings.norm_pix_loss:
    check_number("config.mae.norm_pix_eps", settings.norm_pix_eps, above=0)
    if patch_size == 1:
      raise UserError("config.mae.norm_pix_loss standardises the pixels of a patch: it needs "
                      "config.encoder.patch_size > 1")
  decoder = config.decoder
  check_options("config.decoder", decoder, MAEDecoder)
  for name in ("width", "depth", "num_heads", "mlp_dim"):
    if name in decoder:
      check_number(f"config.decoder.{name}", decoder[name], minimum=1, integer=True)
  width = decoder.get("width", MAEDecoder.width)
  num_heads = decoder.get("num_heads", MAEDecoder.num_heads)
  if width % num_heads or width % 4:
    raise UserError(f"config.decoder.width {width} must be divisible by "
                    f"config.decoder.num_heads ({num_heads}) and by 4 (2-D sin-cos positions)")
  return num_patches, num_visible


def build(config, length) -> Method:
  del length  # MAE has no schedule besides the optimizer's.
  num_patches, num_visible = _check(config)
  settings = config.mae
  patch_size = config.encoder.patch_size
  pool = config.encoder.get("pool", "cls")
  model = MaskedAutoencoder(build_encoder(config.encoder), MAEDecoder(**config.decoder))

  def mask_and_predict(params, images, keys, train, dropout_rng=None):
    keep, restore, mask = random_masking(keys, num_patches, num_visible)
    rngs = {"dropout": dropout_rng} if dropout_rng is not None else {}
    latent, predicted = model.apply({"params": params}, images, keep, restore, train=train,
                                    rngs=rngs)
    return latent, predicted, mask

  def targets(patches):
    if settings.norm_pix_loss:
      return losses.normalize_patches(patches, settings.norm_pix_eps)
    return patches

  def init(rng: jax.Array, batch: dict[str, jax.Array]) -> tuple[Any, Any]:
    images = batch["views"][:, 0]
    mask_rng, params_rng = jax.random.split(rng)
    keys = jax.random.split(mask_rng, images.shape[0])
    keep, restore, _ = random_masking(keys, num_patches, num_visible)
    params = model.init(params_rng, images, keep, restore)["params"]
    return params, {}  # No state besides the parameters (a ViT has no BatchNorm).

  def loss(params, extra, batch, rng, step):
    del step
    images = batch["views"][:, 0]
    mask_rng, dropout_rng = jax.random.split(rng)
    keys = example_keys(mask_rng, batch)
    latent, predicted, mask = mask_and_predict(params, images, keys, True, dropout_rng)
    value = losses.masked_patch_mse(predicted, targets(patchify(images, patch_size)), mask)
    return value, StepOutput(extra, {}, vit.pool_tokens(latent, pool))

  def represent(params, extra, images, dense=False):
    del extra
    return model.apply({"params": params}, images, dense=dense,
                       method=MaskedAutoencoder.features)

  def reconstruction_error(params, extra, images, rng):
    del extra
    target = targets(patchify(images, patch_size))

    def one_mask(key):
      _, predicted, mask = mask_and_predict(params, images,
                                            jax.random.split(key, images.shape[0]), False)
      return jax.vmap(losses.masked_patch_mse)(predicted, target, mask)

    # lax.map: one compiled encoder-decoder pass, run once per mask.
    return jnp.mean(jax.lax.map(one_mask, jax.random.split(rng, _ERROR_MASKS)), axis=0)

  def pictures(params, extra, images, rng):
    del extra
    images = images[:_PICTURE_ROWS]
    keys = jax.random.split(rng, images.shape[0])
    _, predicted, mask = mask_and_predict(params, images, keys, False)
    patches = patchify(images, patch_size).astype(jnp.float32)
    if settings.norm_pix_loss:
      mean, scale = losses.patch_statistics(patches, settings.norm_pix_eps)
      predicted = predicted * scale + mean
    masked = mask[..., None]
    channels = images.shape[-1]
    columns = [images.astype(jnp.float32),
               unpatchify(patches * (1.0 - masked), patch_size, channels),
               unpatchify(patches * (1.0 - masked) + predicted * masked, patch_size, channels)]
    return {"reconstructions": jnp.stack(columns, axis=1)}

  # Each image's loss is the mean over its masked patches and every image masks as many, so
  # the batch's loss is a mean of per-image terms: microbatches accumulate exactly.
  return Method(init=init, loss=loss, represent=represent, pictures=pictures, coupling="",
                represent_dense=functools.partial(represent, dense=True),
                reconstruction_error=reconstruction_error)
