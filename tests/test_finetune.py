"""Semi-supervised fine-tuning (ssl_jax/eval/finetune.py): the class-balanced label subsets, the
step budget, the on-device shift-and-flip augmentation against a brute-force reference, and a
fine-tuned toy network that learns a task its initialisation cannot do."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs.recipes import augmentations
from ssl_jax.eval import finetune


def test_labelled_fraction_is_class_balanced_seeded_and_at_least_one_per_class():
  labels = np.repeat(np.arange(3), [200, 50, 5])
  chosen = finetune.labelled_fraction(labels, 0.1, 3, seed=0)
  assert np.all(np.diff(chosen) > 0)  # sorted, distinct
  np.testing.assert_array_equal(np.bincount(labels[chosen]), [20, 5, 1])  # round(0.5) -> 0 -> 1
  np.testing.assert_array_equal(chosen, finetune.labelled_fraction(labels, 0.1, 3, seed=0))
  assert not np.array_equal(chosen, finetune.labelled_fraction(labels, 0.1, 3, seed=1))
  with pytest.raises(ValueError, match="label fraction must lie in"):
    finetune.labelled_fraction(labels, 0.0, 3, seed=0)
  with pytest.raises(ValueError, match="class 3 has no training examples"):
    finetune.labelled_fraction(labels, 0.1, 4, seed=0)


def test_num_steps_is_the_epochs_of_the_fraction_with_a_floor():
  settings = ml_collections.ConfigDict(dict(fractions=(0.01, 0.1), epochs=(60, 30),
                                            min_steps=10, batch_size=256))
  assert finetune.num_steps(12_811, 0.01, settings) == 3003  # ceil(60 * 12811 / 256)
  assert finetune.num_steps(128_116, 0.1, settings) == 15014
  assert finetune.num_steps(14, 0.01, settings) == 10  # 60 epochs of 14 images: 4 steps


def test_shift_and_flip_outputs_are_shifted_edge_padded_windows():
  images = np.random.default_rng(0).integers(0, 256, (16, 6, 6, 2)).astype(np.float32)
  same = finetune.random_shift_and_flip(jax.random.PRNGKey(0), jnp.asarray(images), 0, False)
  np.testing.assert_array_equal(same, images)
  out = np.asarray(finetune.random_shift_and_flip(jax.random.PRNGKey(1), jnp.asarray(images),
                                                  2, True))
  seen_shifts, seen_flips = set(), set()
  for image, result in zip(images, out):
    padded = np.pad(image, ((2, 2), (2, 2), (0, 0)), mode="edge")
    matches = [(top, left, flip) for top in range(5) for left in range(5) for flip in (0, 1)
               if np.array_equal(result, (padded[top:top + 6, left:left + 6][:, ::-1] if flip
                                          else padded[top:top + 6, left:left + 6]))]
    assert matches, "an output is not a shifted (and possibly mirrored) window"
    seen_shifts.add(matches[0][:2])
    seen_flips.add(matches[0][2])
  assert len(seen_shifts) > 4 and seen_flips == {0, 1}


def _toy_task(num: int, seed: int):
  """8x8 images whose class is which half (left / right) holds a bright bar."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, num)
  images = rng.integers(0, 60, (num, 8, 8, 1))
  for image, label in zip(images, labels):
    image[:, 4 * label:4 * label + 3] += 180
  return images.astype(np.uint8), labels.astype(np.int32)


def test_finetuning_learns_what_the_initial_features_cannot_separate():
  """`represent` is a linear map to 4 features that starts out looking only at column 3, which
  neither class's bar covers (columns 0-2 or 4-6): a head on the initial features is at
  chance, so fine-tuning must move the weights, not only the head."""
  config = ml_collections.ConfigDict({
      "augment": augmentations.augment_config(mean=(0.3,), std=(0.3,)), "data": {"flip": False}})
  settings = ml_collections.ConfigDict({"batch_size": 32, "lr": 3e-2, "max_shift": 0.0})

  def represent(params, extra, images):
    del extra
    return images.reshape(images.shape[0], -1) @ params["w"]

  mask = np.zeros((8, 8, 1), np.float32)
  mask[:, 3] = 1.0
  w0 = np.random.default_rng(0).normal(0, 0.1, (64, 4)).astype(np.float32)
  params = {"w": jnp.asarray(w0 * mask.reshape(64, 1))}
  train_x, train_y = _toy_task(64, 0)
  test_x, test_y = _toy_task(200, 1)
  predict = finetune.finetune(represent, params, {}, config, settings, train_x, train_y, 2,
                              steps=60, seed=0)
  accuracy = np.mean(np.argmax(np.asarray(predict(jnp.asarray(test_x))), axis=1) == test_y)
  assert accuracy > 0.95
  again = finetune.finetune(represent, params, {}, config, settings, train_x, train_y, 2,
                            steps=60, seed=0)
  np.testing.assert_array_equal(predict(jnp.asarray(test_x[:8])), again(jnp.asarray(test_x[:8])))
