"""ViT encoders have timm's parameter counts; sin-cos positions follow MAE; resolution changes."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ssl_jax.models import build_encoder
from ssl_jax.models.vit import Encoder, sincos_2d_posemb

TINY = dict(width=32, depth=2, num_heads=2, mlp_dim=64, patch_size=4, image_size=16)


def abstract_params(module, shape):
  """Parameter shapes from `init` under jax.eval_shape: no weights are materialised."""
  variables = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros(shape))
  return variables["params"]


def random_variables(encoder, shape, seed=0):
  """Variables with `init`'s structure (traced under eval_shape) filled with NumPy normals:
  running the initialisers for real would compile each of them, seconds on a small CPU."""
  rng = np.random.default_rng(seed)
  abstract = jax.eval_shape(encoder.init, jax.random.PRNGKey(0), jnp.zeros(shape))
  return jax.tree.map(lambda x: jnp.asarray(rng.normal(0, 0.2, x.shape), x.dtype), abstract)


def images(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def apply(encoder, variables, x, method="__call__", jit=False):
  """Eager by default (the float32 tests share XLA's per-op cache); `jit=True` for one-off
  paths (bfloat16), where one compilation beats compiling each new op."""
  fn = jax.jit(encoder.apply, static_argnames="method") if jit else encoder.apply
  return fn(variables, x, method=method)


def count(params):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


@pytest.mark.parametrize("size,expected", [
    # timm vit_{tiny,small,base}_patch16_224 totals minus the 1000-way head (width * 1000 + 1000).
    ("tiny", 5_717_416 - 193_000),
    ("small", 22_050_664 - 385_000),
    ("base", 86_567_656 - 769_000),
])
def test_parameter_counts_match_timm_without_head(size, expected):
  params = abstract_params(Encoder(size=size, patch_size=16), (1, 224, 224, 3))
  assert count(params) == expected
  width = {"tiny": 192, "small": 384, "base": 768}[size]
  assert params["pos_embed"].shape == (1, 1 + 14 * 14, width)
  assert params["cls_token"].shape == (1, 1, width)


def sincos_2d_reference(grid_size, width):
  """MAE's recipe written out: half the channels per axis, first half from the column index
  (x), second from the row index (y); per axis, sin(p * omega_i) for all i, then cos(p * omega_i),
  with omega_i = 1 / 10000^(2i / (width / 2)) for i < width / 4. Rows in raster order."""
  axis_width = width // 2
  out = np.zeros((grid_size * grid_size, width))
  for row in range(grid_size):
    for col in range(grid_size):
      for half, position in enumerate((col, row)):
        for i in range(axis_width // 2):
          omega = 1.0 / 10000 ** (2 * i / axis_width)
          out[row * grid_size + col, half * axis_width + i] = math.sin(position * omega)
          out[row * grid_size + col, half * axis_width + axis_width // 2 + i] = math.cos(
              position * omega)
  return out


def test_sincos_posemb_matches_reference_and_is_not_a_parameter():
  np.testing.assert_allclose(sincos_2d_posemb(3, 16), sincos_2d_reference(3, 16), atol=1e-6)
  with pytest.raises(ValueError, match="divisible by 4"):
    sincos_2d_posemb(2, 18)

  encoder = Encoder(posemb="sincos2d", **TINY)
  params = abstract_params(encoder, (1, 16, 16, 3))
  assert "pos_embed" not in params
  learned = abstract_params(Encoder(**TINY), (1, 16, 16, 3))
  assert count(learned) - count(params) == (1 + 4 * 4) * 32

  # embed() adds zero at the CLS position and sincos_2d_posemb at the patches: subtracting the
  # embedding without positions (patch conv and CLS token only) recovers them, at any grid.
  variables = random_variables(encoder, (1, 16, 16, 3))
  x = images((1, 8, 8, 3), seed=1)
  tokens = apply(encoder, variables, x, method="embed")
  p = jax.tree.map(np.asarray, variables["params"])
  blocks = np.asarray(x).reshape(2, 4, 2, 4, 3).transpose(0, 2, 1, 3, 4).reshape(4, 4, 4, 3)
  kernel, bias = p["patch_embed"]["kernel"], p["patch_embed"]["bias"]
  patches = np.einsum("nhwc,hwcd->nd", blocks, kernel) + bias
  np.testing.assert_allclose(tokens[0, 0], p["cls_token"][0, 0], atol=1e-5)
  np.testing.assert_allclose(tokens[0, 1:] - patches, sincos_2d_reference(2, 32), atol=1e-4)


@pytest.mark.parametrize("posemb", ["learned", "sincos2d"])
@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_tiny_model_shapes_at_native_and_smaller_resolution(posemb, pool):
  encoder = Encoder(posemb=posemb, pool=pool, **TINY)
  variables = random_variables(encoder, (2, 16, 16, 3))
  for side in (16, 8):
    x = images((3, side, side, 3), seed=side)
    features = apply(encoder, variables, x)
    assert features.shape == (3, 32) and features.dtype == jnp.float32
    assert np.all(np.isfinite(features))
    tokens = apply(encoder, variables, x, method="tokens")
    assert tokens.shape == (3, 1 + (side // 4) ** 2, 32)
    expected = tokens[:, 0] if pool == "cls" else tokens[:, 1:].mean(1)
    np.testing.assert_allclose(features, expected, atol=1e-5)


def test_learned_posemb_is_resized_for_other_grids_keeping_cls():
  encoder = Encoder(**TINY)
  variables = random_variables(encoder, (1, 16, 16, 3))
  pos = variables["params"]["pos_embed"]
  zero_input = jnp.zeros((1, 8, 8, 3))  # tokens = CLS / conv bias + position embeddings
  tokens = apply(encoder, variables, zero_input, method="embed")
  bias = variables["params"]["patch_embed"]["bias"]
  np.testing.assert_allclose(tokens[0, 0], variables["params"]["cls_token"][0, 0] + pos[0, 0],
                             atol=1e-6)
  resized = jax.image.resize(pos[0, 1:].reshape(4, 4, 32), (2, 2, 32), "bicubic",
                             antialias=False).reshape(4, 32)
  np.testing.assert_allclose(tokens[0, 1:] - bias, resized, atol=1e-5)


def test_image_side_not_divisible_by_patch_is_an_error():
  encoder = Encoder(**TINY)
  variables = random_variables(encoder, (1, 16, 16, 3))
  with pytest.raises(ValueError, match="10 is not divisible by patch_size 4"):
    apply(encoder, variables, jnp.zeros((1, 10, 10, 3)))
  with pytest.raises(ValueError, match="image_size 18 is not divisible by patch_size 4"):
    random_variables(Encoder(**{**TINY, "image_size": 18}), (1, 16, 16, 3))


def test_dropout_and_drop_path_only_in_training():
  encoder = Encoder(dropout=0.3, drop_path=0.5, **TINY)
  variables = random_variables(encoder, (1, 16, 16, 3))
  x = images((3, 16, 16, 3), seed=1)  # the batch of the shape tests: cached eager ops
  np.testing.assert_array_equal(encoder.apply(variables, x, train=False),
                                encoder.apply(variables, x, train=False))
  # Without rngs this would fail if any stochastic layer were active at evaluation.
  plain = apply(Encoder(**TINY), variables, x)
  np.testing.assert_allclose(apply(encoder, variables, x), plain, atol=1e-6)
  train = jax.jit(lambda key: encoder.apply(variables, x, train=True, rngs={"dropout": key}))
  assert not np.allclose(train(jax.random.PRNGKey(2)), train(jax.random.PRNGKey(3)))


def test_bfloat16_computation_returns_float32_features():
  encoder = Encoder(dtype="bfloat16", **TINY)
  variables = random_variables(encoder, (1, 16, 16, 3))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
  features = apply(encoder, variables, jnp.ones((2, 16, 16, 3)), jit=True)
  assert features.dtype == jnp.float32 and np.all(np.isfinite(features))


def test_build_encoder_by_name():
  encoder = build_encoder(ml_collections.ConfigDict(dict(name="vit", size="small",
                                                         patch_size=16)))
  assert isinstance(encoder, Encoder)
  out = jax.eval_shape(lambda x: encoder.init_with_output(jax.random.PRNGKey(0), x)[0],
                       jnp.zeros((2, 224, 224, 3)))
  assert out.shape == (2, 384) and out.dtype == jnp.float32
  # DINO's 96px local crops use the same (224px) parameters.
  params = abstract_params(encoder, (1, 224, 224, 3))
  local = jax.eval_shape(lambda p, x: encoder.apply({"params": p}, x), params,
                         jnp.zeros((2, 96, 96, 3)))
  assert local.shape == (2, 384)


def test_register_tokens_are_attended_and_dropped_from_every_output():
  """Darcet et al. 2024: R learned tokens after CLS, no position embedding, dropped after the
  blocks. The outputs keep their shapes; the registers change them (the blocks attend to
  them); without registers the parameters are the plain ViT's."""
  kwargs = dict(size="tiny", width=16, depth=2, num_heads=2, mlp_dim=32, patch_size=4,
                image_size=16, pool="mean")
  images = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
  plain, with_registers = Encoder(**kwargs), Encoder(**kwargs, registers=4)
  params = with_registers.init(jax.random.PRNGKey(1), images)["params"]
  assert params["registers"].shape == (1, 4, 16)
  plain_params = {k: v for k, v in params.items() if k != "registers"}
  assert set(plain.init(jax.random.PRNGKey(1), images)["params"]) == set(plain_params)
  pooled = with_registers.apply({"params": params}, images)
  dense = with_registers.apply({"params": params}, images, dense=True)
  tokens = with_registers.apply({"params": params}, images, method="tokens")
  assert pooled.shape == (2, 16) and dense.shape == (2, 4, 4, 16) and tokens.shape == (2, 17, 16)
  np.testing.assert_allclose(jnp.mean(dense, axis=(1, 2)), pooled, rtol=1e-5, atol=1e-6)
  without = plain.apply({"params": plain_params}, images)
  assert float(jnp.max(jnp.abs(pooled - without))) > 0  # std-0.02 registers: a small change
  def pooled_sum(registers):  # the features depend on every register: attended
    return jnp.sum(with_registers.apply({"params": {**params, "registers": registers}}, images))
  gradient = jax.grad(pooled_sum)(params["registers"])
  assert bool(jnp.all(jnp.any(gradient != 0, axis=-1)))
