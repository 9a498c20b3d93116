"""Vision pretext tasks: RotNet's rotations against np.rot90, the jigsaw permutation set against
a brute-force transcription of Noroozi & Favaro's Algorithm 1, jigsaw tiles against NumPy
slicing, both losses against a NumPy cross-entropy, the sharded step against the 1-device step,
one step of each `cifar10` config on mock TFDS data, and every variant's build."""
import importlib
import itertools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from ssl_jax import config_lib, methods, train
from ssl_jax.data import image_pipeline
from ssl_jax.errors import UserError
from ssl_jax.methods import jigsaw, rotation
from ssl_jax.models import build_encoder
from ssl_jax.models.context_free import ContextFreeHead
from ssl_jax.models.heads import MLPHead, ProjectedEncoder
from tiny_configs import assert_sharded_equals_single_device, override, steps_on_meshes

LENGTH = config_lib.TrainingLength(steps_per_epoch=10, total_steps=100, schedule_steps=100)
# Each method's digits config shrunk to a 2-stage 8/16-wide CNN (one convolution a stage: fewer
# operations to compile) and small heads.
TINY_ENCODER = {"name": "convnet", "widths": (8, 16), "convs_per_stage": 1}
TINY = {
    "rotation": {"head.hidden_dim": 16},
    "jigsaw": {"head.tile_dim": 8, "head.hidden_dim": 16, "jigsaw.num_permutations": 10},
}


def tiny_config(name: str, arg: str = "digits", **dotted):
  config = importlib.import_module(f"configs.{name}").get_config(arg)
  config.unlock()
  override(config, **{"encoder": TINY_ENCODER, "batch_size": 32, "total_steps": 6,
                      "log_every_steps": 2, "checkpoint_every_steps": 3,
                      "optimizer.warmup_steps": 2, "evaluate_at_end": False, **TINY[name]})
  return override(config, **dotted)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tensorflow_datasets"))


def numpy_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
  """mean_i [log sum_k exp(logits_ik) - logits_i,label_i], stabilised by the row max."""
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(axis=1, keepdims=True)
  log_normaliser = np.log(np.exp(shifted).sum(axis=1))
  return float(np.mean(log_normaliser - shifted[np.arange(len(labels)), labels]))


def apply_train(module: nn.Module, params, batch_stats, x):
  """`module(x, train=True)`: BatchNorm on batch statistics."""
  return module.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                      mutable=["batch_stats"])[0]


make_puzzles = jax.jit(jigsaw.make_puzzles, static_argnums=(3, 4))


# ---------------------------------------------------------------------------------------------
# RotNet.
# ---------------------------------------------------------------------------------------------


def test_rotations_and_labels_match_np_rot90():
  images = np.random.default_rng(0).normal(size=(3, 5, 5, 2)).astype(np.float32)
  rotated, labels = rotation.rotate_all(jnp.asarray(images))
  assert rotated.shape == (12, 5, 5, 2)
  for k in range(4):
    np.testing.assert_array_equal(rotated[3 * k:3 * (k + 1)], np.rot90(images, k, axes=(1, 2)))
  np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
  # Label 1 is a quarter turn counter-clockwise: the top-right pixel moves to the top-left.
  square = jnp.arange(4.0).reshape(1, 2, 2, 1)  # [[0, 1], [2, 3]]
  np.testing.assert_array_equal(rotation.rotate_all(square)[0][1, :, :, 0], [[1, 3], [0, 2]])


def test_rotation_loss_is_the_cross_entropy_of_the_four_rotations():
  config = tiny_config("rotation")
  method = rotation.build(config, LENGTH)
  network = ProjectedEncoder(build_encoder(config.encoder),
                             MLPHead(**config.head, output_dim=4))
  views = jax.random.normal(jax.random.PRNGKey(1), (6, 1, 8, 8, 1))
  images = np.asarray(views[:, 0])
  rotated = np.concatenate([np.rot90(images, k, axes=(1, 2)) for k in range(4)])

  @jax.jit  # one compilation for the step and its reference
  def step_and_reference(views, rotated):
    params, extra = method.init(jax.random.PRNGKey(0), {"views": views})
    value, output = method.loss(params, extra, {"views": views}, jax.random.PRNGKey(2), 0)
    return value, output, apply_train(network, params, extra["batch_stats"], rotated)

  value, output, (h, logits) = step_and_reference(views, jnp.asarray(rotated))
  labels = np.repeat(np.arange(4), 6)
  assert float(value) == pytest.approx(numpy_cross_entropy(logits, labels), rel=1e-5)
  assert float(output.metrics["rotation_accuracy"]) == pytest.approx(
      np.mean(np.argmax(logits, axis=1) == labels))
  np.testing.assert_allclose(output.features, h[:6], rtol=1e-5, atol=1e-6)
  assert not np.allclose(output.features, h[6:12], atol=1e-3)  # the unrotated copies, not others


def test_rotation_rejects_non_square_views_and_multiple_views():
  method = rotation.build(tiny_config("rotation"), LENGTH)
  with pytest.raises(UserError, match="square"):
    method.init(jax.random.PRNGKey(0), {"views": jnp.zeros((2, 1, 4, 6, 1))})
  with pytest.raises(UserError, match="1 views"):
    rotation.build(tiny_config("rotation", **{"data.num_views": 2}), LENGTH)


# ---------------------------------------------------------------------------------------------
# Jigsaw: the permutation set.
# ---------------------------------------------------------------------------------------------


def greedy_permutations_reference(num_tiles, num_permutations, seed, selection):
  """Algorithm 1 of Noroozi & Favaro 2016 as written: P-bar holds the candidates not chosen yet
  (the chosen one is deleted), D is the |P| x |P-bar| Hamming matrix recomputed every
  iteration, and j = argmax of its column sums (average) or column minima (minimum); the first
  j is drawn from all num_tiles! orderings."""
  remaining = np.array(list(itertools.permutations(range(num_tiles))))
  j = int(np.random.default_rng(seed).integers(len(remaining)))
  chosen = []
  for _ in range(num_permutations):
    chosen.append(remaining[j])
    remaining = np.delete(remaining, j, axis=0)
    distances = (np.stack(chosen)[:, None, :] != remaining[None, :, :]).sum(axis=-1)
    column = distances.sum(axis=0) if selection == "average" else distances.min(axis=0)
    j = int(np.argmax(column))
  return np.stack(chosen)


def min_pairwise_hamming(permutations: np.ndarray) -> int:
  distances = (permutations[:, None] != permutations[None]).sum(-1)
  return int(distances[~np.eye(len(permutations), dtype=bool)].min())


@pytest.mark.parametrize("selection", jigsaw.SELECTIONS)
@pytest.mark.parametrize("num_tiles, count", [(4, 12), (5, 20), (9, 5)])
def test_permutation_set_equals_the_brute_force_greedy_algorithm(num_tiles, count, selection):
  fast = jigsaw.permutation_set(num_tiles, count, 3, selection)
  reference = greedy_permutations_reference(num_tiles, count, 3, selection)
  np.testing.assert_array_equal(fast, reference)
  assert min_pairwise_hamming(fast) == min_pairwise_hamming(reference)


def test_permutation_set_rows_are_distinct_permutations_and_seeded():
  permutations = jigsaw.permutation_set(9, 100, 0, "average")
  assert permutations.shape == (100, 9) and not permutations.flags.writeable
  np.testing.assert_array_equal(np.sort(permutations, axis=1), np.tile(np.arange(9), (100, 1)))
  assert len({tuple(p) for p in permutations}) == 100
  uncached = jigsaw.permutation_set.__wrapped__
  maximin = uncached(9, 30, 7, "minimum")
  np.testing.assert_array_equal(maximin, uncached(9, 30, 7, "minimum"))
  assert not np.array_equal(maximin, uncached(9, 30, 8, "minimum"))
  # Maximin keeps all 30 at Hamming distance >= 7 (of 9); the paper's average criterion
  # spreads the set on average but lets some pairs come as close as 2.
  assert min_pairwise_hamming(maximin) == 7
  assert min_pairwise_hamming(uncached(9, 30, 7, "average")) == 2
  with pytest.raises(UserError, match="num_permutations"):
    jigsaw.permutation_set(4, 25, 0, "average")
  with pytest.raises(UserError, match="permutation_selection"):
    jigsaw.permutation_set(4, 5, 0, "median")


# ---------------------------------------------------------------------------------------------
# Jigsaw: tiles, puzzles, loss.
# ---------------------------------------------------------------------------------------------


def test_jittered_tiles_are_the_cells_windows_and_unshuffle_to_the_grid():
  rng = np.random.default_rng(0)
  region = rng.normal(size=(4, 15, 15, 2)).astype(np.float32)
  permutations = jnp.asarray(jigsaw.permutation_set(9, 10, 0))
  puzzles = make_puzzles(jax.random.PRNGKey(5), jnp.asarray(region), permutations, 3, 4)
  tiles, labels, offsets = (np.asarray(x) for x in puzzles)
  assert tiles.shape == (4, 9, 4, 4, 2) and labels.shape == (4,)
  assert offsets.min() == 0 and offsets.max() == 1  # jitter of up to 5 - 4 = 1 px, both used
  for b in range(4):
    order = np.asarray(permutations)[labels[b]]
    for position in range(9):
      cell = order[position]
      top = 5 * (cell // 3) + offsets[b, cell, 0]
      left = 5 * (cell % 3) + offsets[b, cell, 1]
      np.testing.assert_array_equal(tiles[b, position], region[b, top:top + 4, left:left + 4])

  # Without jitter (tile = cell), the inverse permutation puts the tiles back into the image.
  puzzles = make_puzzles(jax.random.PRNGKey(6), jnp.asarray(region), permutations, 3, 5)
  for b in range(4):
    inverse = np.argsort(np.asarray(permutations)[puzzles.labels[b]])
    restored = np.asarray(puzzles.tiles[b])[inverse].reshape(3, 3, 5, 5, 2)
    np.testing.assert_array_equal(restored.transpose(0, 2, 1, 3, 4).reshape(15, 15, 2),
                                  region[b])


def test_tile_normalisation_is_per_tile_and_channel():
  tiles = np.random.default_rng(1).normal(2.0, 3.0, size=(2, 9, 4, 4, 3)).astype(np.float32)
  normalised = np.asarray(jigsaw.normalize_tiles(jnp.asarray(tiles)))
  mean = tiles.mean(axis=(2, 3), keepdims=True)
  std = tiles.std(axis=(2, 3), keepdims=True)
  np.testing.assert_allclose(normalised, (tiles - mean) / np.sqrt(std**2 + 1e-5), rtol=1e-4,
                             atol=1e-5)


def test_jigsaw_loss_is_the_cross_entropy_of_the_shuffled_puzzles():
  config = tiny_config("jigsaw", **{"jigsaw.normalize_tiles": True})
  method = jigsaw.build(config, LENGTH)
  encoder = build_encoder(config.encoder)
  head = ContextFreeHead(num_classes=10, **config.head)
  permutations = jnp.asarray(jigsaw.permutation_set(9, 10, 0))
  regions = jax.random.normal(jax.random.PRNGKey(1), (6, 1, 15, 15, 1))  # already 3 x 5 px
  digits = jax.random.uniform(jax.random.PRNGKey(3), (2, 8, 8, 1))
  rng = jax.random.PRNGKey(2)

  @jax.jit  # one compilation for the step and its reference
  def step_and_reference(regions, digits):
    params, extra = method.init(jax.random.PRNGKey(0), {"views": regions})
    value, output = method.loss(params, extra, {"views": regions}, rng, 0)
    puzzles = jigsaw.make_puzzles(jax.random.split(rng)[0], regions[:, 0], permutations, 3, 4)
    tiles = puzzles.tiles
    tiles = (tiles - tiles.mean(axis=(2, 3), keepdims=True)) / jnp.sqrt(
        tiles.var(axis=(2, 3), keepdims=True) + 1e-5)
    stats = extra["batch_stats"]
    tile_features = apply_train(encoder, params["encoder"], stats["encoder"],
                                tiles.reshape(54, 4, 4, 1))
    logits = apply_train(head, params["head"], stats["head"], tile_features.reshape(6, 9, -1))
    whole = apply_train(encoder, params["encoder"], stats["encoder"], regions[:, 0])
    # An 8x8 digit is represented at the puzzles' 15 px scale.
    upsampled = jax.image.resize(digits, (2, 15, 15, 1), "linear")
    represented = (method.represent(params, extra, digits),
                   method.represent(params, extra, upsampled))
    return value, output, puzzles.labels, logits, whole, represented

  value, output, labels, logits, whole, (small, large) = step_and_reference(regions, digits)
  labels = np.asarray(labels)
  assert float(value) == pytest.approx(numpy_cross_entropy(logits, labels), rel=1e-5)
  assert float(output.metrics["permutation_accuracy"]) == pytest.approx(
      np.mean(np.argmax(logits, axis=1) == labels))
  np.testing.assert_allclose(output.features, whole, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(small, large, rtol=1e-6)


def test_jigsaw_rejects_bad_settings():
  for key, value, match in [("jigsaw.grid_size", 4, "grid_size"),
                            ("jigsaw.tile_size", 6, "tile_size"),
                            ("jigsaw.num_permutations", 1, "num_permutations"),
                            ("data.num_views", 2, "1 views")]:
    with pytest.raises(UserError, match=match):
      jigsaw.build(tiny_config("jigsaw", **{key: value}), LENGTH)


# ---------------------------------------------------------------------------------------------
# Through the trainer.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TINY))
def test_sharded_equals_single_device(name, data_dir):
  """3 steps on 8 fake devices equal 3 steps on 1: parameters, losses and BatchNorm statistics
  (RotNet's over the 4B rotations; jigsaw's head over the B x 9 tiles and its encoder over the
  whole images of the global batch). SGD with a 20-step warm-up, as in test_joint_embedding,
  so float noise stays small."""
  assert jax.device_count() == 8, "conftest.py must give 8 fake CPU devices"
  config = tiny_config(name, **{"data.data_dir": data_dir, "optimizer.name": "sgd",
                                "optimizer.lr": 0.5, "optimizer.weight_decay": 1e-4,
                                "optimizer.warmup_steps": 20})
  batches = image_pipeline.train_batches(config, start_step=0, process_index=0, process_count=1)
  batches = [next(batches) for _ in range(3)]
  assert_sharded_equals_single_device(steps_on_meshes(config, batches, (8, 8, 1), LENGTH))


# ImageNet's crops shrunk so a mock step compiles in seconds: 32 px (rotation), and jigsaw's
# 255 px grid of 85 px cells with 64 px tiles shrunk to 36 / 12 / 9 (whole cells, as there).
IMAGENET_SHRUNK = {
    "rotation": {"data.image_size": 32, "data.eval_resize": 36},
    "jigsaw": {"data.image_size": 36, "data.eval_resize": 40, "jigsaw.cell_size": 12,
               "jigsaw.tile_size": 9},
}


@pytest.mark.parametrize("variant", ["cifar10", "imagenet2012"])
@pytest.mark.parametrize("name", list(TINY))
def test_one_step_of_the_real_dataset_configs_on_mock_tfds(name, variant, tmp_path):
  """The variant's pipeline, augmentation, tiling, optimizer and method settings with a tiny
  CNN in place of ResNet-18/50, on one device (the sharded step is tested above)."""
  config = importlib.import_module(f"configs.{name}").get_config(f"{variant},runlocal=True")
  config.unlock()
  override(config, total_steps=1, evaluate_at_end=False, batch_size=8, mesh="data:1",
           encoder=TINY_ENCODER, **TINY[name])
  if variant == "imagenet2012":
    override(config, **IMAGENET_SHRUNK[name])
  with tfds.testing.mock_data(num_examples=16):
    state = train.run(config, str(tmp_path / name))
  assert int(state["step"]) == 1
  row = json.loads(open(tmp_path / name / "metrics.jsonl").readline())
  assert row["step"] == 1 and np.isfinite(row["loss"])


@pytest.mark.parametrize("name", list(TINY))
def test_every_variant_builds_single_view_with_a_label_safe_recipe(name):
  """Each variant (also with `runlocal=True`) builds its method; RotNet's views are never
  rotated by the augmentation (it would corrupt the label), and every jigsaw region is a whole
  number of cells of the size the pipeline delivers, or a resize of it."""
  module = importlib.import_module(f"configs.{name}")
  for variant in ("digits", "cifar10", "imagenet2012"):
    for arg in (variant, f"{variant},runlocal=True"):
      config = module.get_config(arg)
      methods.build(config, LENGTH)
      assert config.data.num_views == 1
      if name == "rotation":
        assert config.augment.rotation == 0 or config.augment.affine_prob == 0
  assert module.get_config("imagenet2012").data.image_size == (
      3 * module.get_config("imagenet2012").jigsaw.cell_size if name == "jigsaw" else 224)
