r"""SigLIP (Zhai et al. 2023): CLIP's image–text recipe with the pairwise sigmoid loss.

Variants (`--config=configs/siglip.py:VARIANT`) are CLIP's (configs/clip.py): the same data,
towers, tokenizer, optimizer, schedule and evaluation, so a SigLIP run and a CLIP run of one
variant differ only in the loss, the paper's own comparison (Sec. 4.1):

digits (default; offline, 2 CPU cores):
    python -m ssl_jax.main --config=configs/siglip.py:digits --workdir=runs/siglip_digits
photos: the embedded captioned photos.
coco_captions: TFDS `coco_captions` with CLIP's ResNet-50 / 12-layer text transformer shapes.

`config.siglip`: embed_dim (CLIP's), init_temperature 0.1 (t' = log 10) and init_bias -10,
the paper's initialisation (Sec. 3.2). The loss runs blockwise around the devices of
`config.mesh` (`losses.sigmoid_pair_loss_ring`).

Published numbers assume WebLI (billions of image–text pairs, not public); none applies to
these datasets (`config.expected.note`). Add `,runlocal=True` to any variant for a tiny smoke
run.
"""
import ml_collections

from configs import clip as clip_config
from configs.common import parse_arg, set_expected

NOTES = {
    "digits": clip_config.NOTES["digits"],
    "photos": clip_config.NOTES["photos"],
    "coco_captions": ("SigLIP's published numbers assume pre-training on WebLI (billions of "
                      "image-text pairs, not public), not COCO's 113k captioned training "
                      "images, so this run has no published counterpart."),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  parsed = parse_arg(arg, variant="digits", runlocal=False)
  if parsed.variant not in clip_config.VARIANTS:
    raise ValueError(f"unknown siglip variant '{parsed.variant}': use "
                     f"{', '.join(clip_config.VARIANTS)}")
  c = clip_config.get_config(arg)
  c.unlock()
  c.method = "siglip"
  c.siglip = ml_collections.ConfigDict(dict(embed_dim=c.clip.embed_dim, init_temperature=0.1,
                                            init_bias=-10.0))
  del c["clip"]
  if not parsed.runlocal:
    set_expected(c, None, NOTES[parsed.variant])
  c.lock()
  return c
