"""Encoders have the published sizes; heads and the encoder factory behave."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ssl_jax.errors import UserError
from ssl_jax.models import build_encoder
from ssl_jax.models.heads import MLPHead


def count_params(module, shape):
  variables = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros(shape))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"])), variables


@pytest.mark.parametrize("depth,cifar_stem,expected,width", [
    # torchvision resnet18 / resnet50 parameter totals minus their 1000-way fc layer.
    (18, False, 11_689_512 - 513_000, 512),
    (50, False, 25_557_032 - 2_049_000, 2048),
    # CIFAR stem: a 3x3 (not 7x7) first convolution.
    (18, True, 11_689_512 - 513_000 - 64 * 3 * (49 - 9), 512),
])
def test_resnet_parameter_counts_match_torchvision(depth, cifar_stem, expected, width):
  encoder = build_encoder(ml_collections.ConfigDict(
      dict(name="resnet", depth=depth, cifar_stem=cifar_stem)))
  size = 32 if cifar_stem else 64
  count, _ = count_params(encoder, (2, size, size, 3))
  assert count == expected
  out = jax.eval_shape(lambda x: encoder.init_with_output(jax.random.PRNGKey(0), x)[0],
                       jnp.zeros((2, size, size, 3)))
  assert out.shape == (2, width)


def test_cifar_stem_keeps_resolution_for_the_first_stage():
  encoder = build_encoder(ml_collections.ConfigDict(dict(name="resnet", depth=18,
                                                          cifar_stem=True)))
  _, variables = count_params(encoder, (1, 32, 32, 3))
  assert variables["params"]["stem_conv"]["kernel"].shape == (3, 3, 3, 64)


def test_projection_head_shapes_and_train_mode_batch_statistics():
  head = MLPHead(hidden_dim=16, output_dim=4, num_layers=2)
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 5)) * 3 + 2
  variables = head.init(jax.random.PRNGKey(1), x)
  z, updates = head.apply(variables, x, train=True, mutable=["batch_stats"])
  assert z.shape == (8, 4)
  mean = updates["batch_stats"]["BatchNorm_0"]["mean"]
  hidden = x @ variables["params"]["Dense_0"]["kernel"]
  np.testing.assert_allclose(mean, 0.1 * hidden.mean(0), rtol=1e-5, atol=1e-6)  # momentum 0.9


def test_unknown_encoder_and_option_are_user_errors():
  with pytest.raises(UserError, match="unknown encoder 'vgg'"):
    build_encoder(ml_collections.ConfigDict(dict(name="vgg")))
  with pytest.raises(UserError, match="encoder 'resnet' has no option 'layers'"):
    build_encoder(ml_collections.ConfigDict(dict(name="resnet", layers=3)))
