"""What a method draws reaches the report as PNGs: normalised grids are mapped back to pixels,
tiled with gutters, enlarged when small, written, and linked from report.md."""
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from ssl_jax import report as report_lib
from ssl_jax.data import augment
from configs.recipes import augmentations
from ssl_jax.eval import pictures


def _config(mean, std):
  return ml_collections.ConfigDict({"augment": augmentations.augment_config(mean=mean, std=std)})


def test_to_pixels_inverts_the_training_normalisation():
  config = _config((0.5, 0.4, 0.3), (0.2, 0.25, 0.5))
  images = np.random.default_rng(0).integers(0, 256, (2, 3, 5, 5, 3), dtype=np.uint8)
  normalised = np.asarray(augment.normalize_images(jnp.asarray(images), config))
  np.testing.assert_array_equal(
      pictures.to_pixels(normalised, config.augment.mean, config.augment.std), images)
  # Out-of-range predictions are clipped, not wrapped around.
  assert pictures.to_pixels(np.full((1, 1, 1), 9.0), (0.0,), (1.0,)).item() == 255
  assert pictures.to_pixels(np.full((1, 1, 1), -9.0), (0.0,), (1.0,)).item() == 0


def test_tile_enlarges_small_cells_and_keeps_their_order():
  grid = np.arange(2 * 3 * 8 * 8, dtype=np.uint8).reshape(2, 3, 8, 8, 1)
  canvas = pictures.tile(grid)
  # 8 px cells are enlarged 8x to 64 px, with one-pixel white gutters between them.
  assert canvas.shape == (2 * 65 - 1, 3 * 65 - 1, 1)
  assert canvas[64, 10, 0] == 255 and canvas[10, 64, 0] == 255
  for r in range(2):
    for c in range(3):
      cell = canvas[r * 65:r * 65 + 64, c * 65:c * 65 + 64, 0]
      np.testing.assert_array_equal(cell[::8, ::8], grid[r, c, :, :, 0])
  big = np.zeros((1, 2, 100, 90, 3), np.uint8)
  assert pictures.tile(big).shape == (100, 2 * 90 + 1, 3)  # large cells keep their size


def test_draw_write_and_link_in_the_report(tmp_path):
  config = _config((0.5,), (0.5,))
  images = np.random.default_rng(1).integers(0, 256, (4, 8, 8, 1), dtype=np.uint8)

  def draw_fn(params, extra, normalised, rng):
    del extra, rng  # a "reconstruction" that is the input scaled by a parameter
    return {"reconstructions": jnp.stack([normalised, params["gain"] * normalised], axis=1)}

  drawn = pictures.draw(draw_fn, {"gain": jnp.asarray(-1.0)}, {}, images,
                         lambda x: augment.normalize_images(x, config), config, seed=0)
  names = pictures.write(drawn, str(tmp_path))
  assert names == ["reconstructions.png"]
  written = np.asarray(Image.open(tmp_path / "reconstructions.png"))
  assert written.shape == (4 * 65 - 1, 2 * 65 - 1)
  np.testing.assert_array_equal(written[:64:8, :64:8], images[0, :, :, 0])
  # Column 2 is -x in normalised space: pixel p becomes 255 - p (mean 0.5, std 0.5).
  np.testing.assert_allclose(written[:64:8, 65:129:8].astype(int),
                             255 - images[0, :, :, 0].astype(int), atol=1)
  report = {"dataset": "digits", "checkpoint_step": 3, "pictures": names,
            "results": [{"features": "ssl", "protocol": "linear", "labels_per_class": None,
                         "accuracy": 0.5, "std": 0.0, "seeds": 1}]}
  assert "![reconstructions.png](reconstructions.png)" in report_lib.markdown_table(report)
