"""Vision Transformer encoders (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words").

The layout is that of timm's `VisionTransformer` as used by DINO (Caron et al. 2021, "Emerging
Properties in Self-Supervised Vision Transformers") and MAE (He et al. 2021, "Masked
Autoencoders Are Scalable Vision Learners"), so parameter counts equal the published ones
without the classifier head: a patch-embedding convolution (kernel = stride = patch, with bias),
a CLS token, position embeddings for 1 + grid * grid tokens, pre-norm blocks (LayerNorm, eps
1e-6 -> multi-head self-attention -> residual; LayerNorm -> GELU MLP -> residual), and a final
LayerNorm. Weights start as in DINO: truncated normal (std 0.02) for linear layers with zero
biases, normal (std 0.02) for the CLS token and learned position embeddings; the patch
embedding is initialised like a linear layer (Xavier uniform over the flattened patch), as in
MAE.

Position embeddings are either learned or the fixed 2-D sin-cos embedding of MAE / MoCo v3
(Chen, Xie, He 2021, "An Empirical Study of Training Self-Supervised Vision Transformers").
They are made for an `image_size` grid; inputs at another resolution (DINO's 96px local crops
next to its 224px global crops) get the learned patch embeddings resized bicubically to their
grid (the CLS position is kept), as DINO's `interpolate_pos_encoding` does, and the sin-cos
embedding computed for their grid.

`__call__` returns pooled float32 features [batch, width] (the final CLS token, or the mean of
the final patch tokens). The token path is split for methods that need it (MAE drops patch
tokens between the two halves):
  `embed(x, train)`   -> [batch, 1 + N, width]: CLS token and patch tokens plus positions;
  `encode(t, train)`  -> the blocks and final LayerNorm on any token sequence [batch, T, width];
  `tokens(x, train)`  -> `encode(embed(x))` as float32 [batch, 1 + N, width].
With `registers=R > 0` (Darcet et al. 2024, "Vision Transformers Need Registers", Sec. 3: R
learned tokens without position embeddings, the DINOv2 recipe's 4), `__call__` and `tokens`
insert the registers after the CLS token before the blocks and drop them after, so every
output keeps the layout above; `embed` and `encode` alone (MAE's path) have none.
Call them with `encoder.apply(variables, x, train=..., method="tokens")`, or as
`self.encoder.tokens(x, train)` from a parent module. With `train=True` and `dropout` or
`drop_path` above zero the call needs a "dropout" RNG (`rngs={"dropout": key}`); with
`train=False` both are off and the call is deterministic.
"""
import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.models import policy

# width, depth, heads, MLP hidden size (Touvron et al. 2021 "DeiT" for tiny/small; ViT paper
# Table 1 for base/large/huge).
_SIZES = {
    "tiny": (192, 12, 3, 768),
    "small": (384, 12, 6, 1536),
    "base": (768, 12, 12, 3072),
    "large": (1024, 24, 16, 4096),
    "huge": (1280, 32, 16, 5120),
}
_LINEAR_INIT = nn.initializers.truncated_normal(stddev=0.02)
_EMBED_INIT = nn.initializers.normal(stddev=0.02)


def sincos_1d_posemb(positions: jnp.ndarray, width: int) -> jnp.ndarray:
  """Transformer sin-cos embedding of 1-D positions [P] -> [P, width] (sines, then cosines).

  Frequency i (of width / 2) is omega_i = 1 / 10000^(2i / width), as in MAE's
  `get_1d_sincos_pos_embed_from_grid`.
  """
  if width % 2:
    raise ValueError(f"a 1-D sin-cos embedding needs an even width, got {width}")
  omega = 1.0 / 10000.0 ** (jnp.arange(width // 2, dtype=jnp.float32) / (width / 2.0))
  angles = jnp.asarray(positions, jnp.float32)[:, None] * omega[None, :]
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=1)


def sincos_2d_posemb(grid_size: int, width: int) -> jnp.ndarray:
  """Fixed 2-D sin-cos position embedding [grid_size * grid_size, width] (MAE, MoCo v3).

  Tokens are in row-major order (row r, column c at index r * grid_size + c), the order of the
  patch embedding. As in MAE's `get_2d_sincos_pos_embed`, the first width / 2 channels are the
  1-D sin-cos embedding of the column index and the last width / 2 that of the row index, each
  with frequencies omega_i = 1 / 10000^(2i / (width / 2)). There is no CLS entry; the encoder
  uses a zero vector for the CLS position.
  """
  if width % 4:
    raise ValueError(f"a 2-D sin-cos embedding needs a width divisible by 4, got {width}")
  rows, columns = jnp.meshgrid(jnp.arange(grid_size), jnp.arange(grid_size), indexing="ij")
  return jnp.concatenate([sincos_1d_posemb(columns.reshape(-1), width // 2),
                          sincos_1d_posemb(rows.reshape(-1), width // 2)], axis=1)


def pool_tokens(tokens: jnp.ndarray, pool: str) -> jnp.ndarray:
  """Final tokens [batch, 1 + T, width] (CLS first) -> [batch, width]: the CLS token ("cls") or
  the mean of the T patch tokens ("mean")."""
  return tokens[:, 0] if pool == "cls" else jnp.mean(tokens[:, 1:], axis=1)


class DropPath(nn.Module):
  """Stochastic depth (Huang et al. 2016): zeroes a residual branch for a random subset of
  samples and rescales the rest by 1 / (1 - rate); the identity when deterministic."""
  rate: float

  @nn.compact
  def __call__(self, x, deterministic: bool):
    if deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


class Mlp(nn.Module):
  """width -> mlp_dim (GELU) -> width, with biases and dropout after each layer (timm `Mlp`)."""
  mlp_dim: int
  dropout: float
  dtype: Any

  @nn.compact
  def __call__(self, x, deterministic: bool):
    width = x.shape[-1]
    dense = lambda features, name: nn.Dense(features, dtype=self.dtype, kernel_init=_LINEAR_INIT,
                                            name=name)
    # Exact (erf) GELU, as torch.nn.GELU in timm / DINO / MAE.
    x = nn.gelu(dense(self.mlp_dim, "fc1")(x), approximate=False)
    x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
    x = dense(width, "fc2")(x)
    return nn.Dropout(self.dropout)(x, deterministic=deterministic)


class Block(nn.Module):
  """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""
  num_heads: int
  mlp_dim: int
  dropout: float
  drop_path: float
  dtype: Any

  @nn.compact
  def __call__(self, x, deterministic: bool, attention_mask=None):
    """`attention_mask` [batch, T] (True = a key every token may attend to) or None (all):
    I-JEPA's encoders see only their context or target tokens in a full-length sequence."""
    width = x.shape[-1]
    y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm1")(x)
    mask = None if attention_mask is None else attention_mask[:, None, None, :]
    # Separate query/key/value projections with biases hold the same parameters as timm's
    # fused qkv Linear; the output projection has a bias too.
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, qkv_features=width, out_features=width, dtype=self.dtype,
        kernel_init=_LINEAR_INIT, deterministic=True, force_fp32_for_softmax=True,
        name="attn")(y, y, mask=mask)
    y = nn.Dropout(self.dropout)(y, deterministic=deterministic)  # timm's proj_drop
    x = x + DropPath(self.drop_path)(y, deterministic)
    y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm2")(x)
    y = Mlp(self.mlp_dim, self.dropout, self.dtype, name="mlp")(y, deterministic)
    return x + DropPath(self.drop_path)(y, deterministic)


def block_class(remat: bool) -> type[nn.Module]:
  """`Block`, or `Block` recomputed in the backward pass (`deterministic` is static)."""
  return nn.remat(Block, static_argnums=(2,)) if remat else Block


class Encoder(nn.Module):
  """ViT-{Ti,S,B,L}/`patch_size` trunk returning pooled features [batch, width].

  Attributes:
    size: "tiny", "small", "base", "large" or "huge"; sets width, depth, heads and MLP size.
    patch_size: side of the square patches (the patch-embedding kernel and stride).
    posemb: "learned" (a parameter, normal std 0.02) or "sincos2d" (fixed, not a parameter).
    pool: "cls" (the final CLS token) or "mean" (the mean of the final patch tokens).
    image_size: the image side the position embeddings are made for; other (square) sides are
      accepted and get interpolated (learned) or recomputed (sin-cos) embeddings.
    dropout: dropout after the position embeddings, the attention projection and both MLP
      layers (training only).
    drop_path: stochastic-depth rate of the last block; block i of depth uses
      drop_path * i / (depth - 1), as in DINO (training only).
    dtype: computation dtype, e.g. "float32" or "bfloat16"; parameters stay float32.
    remat: recompute each block's activations in the backward pass instead of keeping them
      (`nn.remat`, Chen et al. 2016): the same numbers, activation memory of one block plus
      the blocks' inputs, about one more forward pass of compute.
    width, depth, num_heads, mlp_dim: overrides of the `size` preset (None keeps it).
    registers: learned register tokens attended by every block and dropped from the outputs
      (Darcet et al. 2024); 0 for none.
    mask_token: a learned embedding (zeros at first) that `embed(..., patch_mask=...)` puts in
      place of the masked patches' embeddings, before the position embeddings: the student of
      masked image modelling (iBOT's `masked_embed`, Zhou et al. 2022, Sec. 3.2).
  """
  size: str = "small"
  patch_size: int = 16
  posemb: str = "learned"
  pool: str = "cls"
  image_size: int = 224
  dropout: float = 0.0
  drop_path: float = 0.0
  dtype: Any = dataclasses.field(default_factory=policy.compute_dtype)
  remat: bool = dataclasses.field(default_factory=policy.remat_blocks)
  width: Optional[int] = None
  depth: Optional[int] = None
  num_heads: Optional[int] = None
  mlp_dim: Optional[int] = None
  registers: int = 0
  mask_token: bool = False

  def setup(self):
    if self.size not in _SIZES:
      raise ValueError(f"ViT size must be one of {sorted(_SIZES)}, got {self.size!r}")
    if self.posemb not in ("learned", "sincos2d"):
      raise ValueError(f"ViT posemb must be 'learned' or 'sincos2d', got {self.posemb!r}")
    if self.pool not in ("cls", "mean"):
      raise ValueError(f"ViT pool must be 'cls' or 'mean', got {self.pool!r}")
    if self.image_size % self.patch_size:
      raise ValueError(f"ViT image_size {self.image_size} is not divisible by patch_size "
                       f"{self.patch_size}")
    preset = _SIZES[self.size]
    overrides = (self.width, self.depth, self.num_heads, self.mlp_dim)
    width, depth, num_heads, mlp_dim = (p if o is None else o for p, o in zip(preset, overrides))
    if width % num_heads:
      raise ValueError(f"ViT width {width} is not divisible by num_heads {num_heads}")
    self._width = width
    self._dtype = jnp.dtype(self.dtype)
    self._grid = self.image_size // self.patch_size
    self.patch_embed = nn.Conv(
        width, (self.patch_size, self.patch_size), strides=self.patch_size, padding="VALID",
        dtype=self._dtype, kernel_init=nn.initializers.xavier_uniform(in_axis=(0, 1, 2)))
    self.cls_token = self.param("cls_token", _EMBED_INIT, (1, 1, width))
    if self.registers < 0:
      raise ValueError(f"ViT registers must be >= 0, got {self.registers}")
    if self.registers:
      self.register_tokens = self.param("registers", _EMBED_INIT, (1, self.registers, width))
    if self.mask_token:
      self.masked_embed = self.param("mask_token", nn.initializers.zeros, (1, 1, width))
    if self.posemb == "learned":
      self.pos_embed = self.param("pos_embed", _EMBED_INIT, (1, 1 + self._grid**2, width))
    self.pos_drop = nn.Dropout(self.dropout)
    rates = np.linspace(0.0, self.drop_path, depth)  # DINO: torch.linspace(0, rate, depth)
    block = block_class(self.remat)
    self.blocks = [block(num_heads, mlp_dim, self.dropout, float(rate), self._dtype)
                   for rate in rates]
    self.norm = nn.LayerNorm(epsilon=1e-6, dtype=self._dtype)

  def _position_embedding(self, grid: int) -> jnp.ndarray:
    """[1, 1 + grid * grid, width] for a grid x grid patch layout, CLS position first."""
    if self.posemb == "sincos2d":
      patches = sincos_2d_posemb(grid, self._width)
      return jnp.concatenate([jnp.zeros((1, self._width)), patches])[None]
    if grid == self._grid:
      return self.pos_embed
    cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[0, 1:]
    patch_pos = patch_pos.reshape(self._grid, self._grid, self._width)
    # No antialiasing, like torch's F.interpolate in DINO's interpolate_pos_encoding.
    patch_pos = jax.image.resize(patch_pos, (grid, grid, self._width), "bicubic", antialias=False)
    return jnp.concatenate([cls_pos, patch_pos.reshape(1, grid * grid, self._width)], axis=1)

  def embed(self, x, train: bool = False, patch_mask=None):
    """Images [batch, side, side, channels] -> tokens [batch, 1 + N, width] (CLS first, patch
    tokens in row-major order), with position embeddings added (and dropout when training).
    `patch_mask` [batch, N] (True = masked) swaps those patches' embeddings for the mask
    token (an encoder built with `mask_token=True`)."""
    if x.ndim != 4:
      raise ValueError(f"ViT expects images [batch, height, width, channels], got {x.shape}")
    height, width = x.shape[1:3]
    if height != width:
      raise ValueError(f"ViT expects square images, got {height}x{width}")
    if height % self.patch_size:
      raise ValueError(f"ViT image side {height} is not divisible by patch_size {self.patch_size}")
    grid = height // self.patch_size
    x = self.patch_embed(x.astype(self._dtype))
    x = x.reshape(x.shape[0], grid * grid, self._width)
    if patch_mask is not None:
      if not self.mask_token:
        raise ValueError("a patch_mask needs a ViT built with mask_token=True")
      x = jnp.where(patch_mask[..., None], self.masked_embed.astype(self._dtype), x)
    cls = jnp.broadcast_to(self.cls_token.astype(self._dtype), (x.shape[0], 1, self._width))
    x = jnp.concatenate([cls, x], axis=1) + self._position_embedding(grid).astype(self._dtype)
    return self.pos_drop(x, deterministic=not train)

  def encode(self, x, train: bool = False, attention_mask=None):
    """The transformer blocks and the final LayerNorm on tokens [batch, T, width]; returns
    [batch, T, width] in the computation dtype. `attention_mask` [batch, T] (True = may be
    attended to) hides the other tokens from every block (their own outputs are then
    meaningless and should be ignored)."""
    for block in self.blocks:
      x = block(x, not train, attention_mask)
    return self.norm(x)

  def _encode_with_registers(self, tokens, train: bool):
    """The blocks on [CLS, registers, patches] (no position embedding for the registers),
    then the registers dropped: [batch, 1 + N, width]."""
    if not self.registers:
      return self.encode(tokens, train)
    registers = jnp.broadcast_to(self.register_tokens.astype(self._dtype),
                                 (tokens.shape[0], self.registers, self._width))
    encoded = self.encode(jnp.concatenate([tokens[:, :1], registers, tokens[:, 1:]], axis=1),
                          train)
    return jnp.concatenate([encoded[:, :1], encoded[:, 1 + self.registers:]], axis=1)

  def tokens(self, x, train: bool = False, patch_mask=None):
    """All final tokens [batch, 1 + N, width] (CLS first, registers dropped) as float32;
    `patch_mask` as in `embed`."""
    return self._encode_with_registers(self.embed(x, train, patch_mask),
                                       train).astype(jnp.float32)

  def __call__(self, x, train: bool = False, dense: bool = False):
    """Pooled features [batch, width] as float32: the CLS token or the patch-token mean; with
    `dense=True` the final patch tokens on their grid [batch, grid, grid, width] (the CLS
    token dropped), for dense probes."""
    tokens = self._encode_with_registers(self.embed(x, train), train)
    if dense:
      grid = x.shape[1] // self.patch_size
      return tokens[:, 1:].reshape(x.shape[0], grid, grid, -1).astype(jnp.float32)
    return pool_tokens(tokens, self.pool).astype(jnp.float32)
