"""sRGB <-> CIE L*a*b* (D65) in JAX, and the quantised ab space of colour classification.

Colorization (Zhang, Isola, Efros 2016) predicts the a*b* (colour) channels of CIE Lab from
the L* (lightness) channel. The conversion follows the CIE and IEC 61966-2-1 (sRGB)
definitions:

  sRGB -> linear:  c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4
  linear -> XYZ:   the sRGB primaries' matrix (D65 white), as in scikit-image
  XYZ -> Lab:      L = 116 f(Y/Yn) - 16, a = 500 (f(X/Xn) - f(Y/Yn)), b = 200 (f(Y/Yn) - f(Z/Zn)),
                   f(t) = t ** (1/3) if t > (6/29) ** 3 else t / (3 (6/29) ** 2) + 4/29

with the D65 reference white (Xn, Yn, Zn) = (0.95047, 1, 1.08883). Lab -> sRGB inverts each
step and clips to [0, 1] (a Lab colour may lie outside the sRGB gamut).

The quantised ab space (Sec. 2.1 of the paper): ab is cut into square bins of side
`bin_size` centred on multiples of it, and only the Q bins the sRGB gamut reaches are
classes (`ab_gamut_bins`).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

_RGB_TO_XYZ = np.array([[0.412453, 0.357580, 0.180423],
                        [0.212671, 0.715160, 0.072169],
                        [0.019334, 0.119193, 0.950227]], np.float32)
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ.astype(np.float64)).astype(np.float32)
D65_WHITE = (0.95047, 1.0, 1.08883)
_DELTA = 6.0 / 29.0


def _srgb_to_linear(rgb: jax.Array) -> jax.Array:
  return jnp.where(rgb <= 0.04045, rgb / 12.92,
                   jnp.power((jnp.maximum(rgb, 0.04045) + 0.055) / 1.055, 2.4))


def _linear_to_srgb(linear: jax.Array) -> jax.Array:
  return jnp.where(linear <= 0.0031308, 12.92 * linear,
                   1.055 * jnp.power(jnp.maximum(linear, 0.0031308), 1 / 2.4) - 0.055)


def _lab_f(t: jax.Array) -> jax.Array:
  return jnp.where(t > _DELTA ** 3, jnp.cbrt(jnp.maximum(t, _DELTA ** 3)),
                   t / (3 * _DELTA ** 2) + 4.0 / 29.0)


def _lab_f_inverse(f: jax.Array) -> jax.Array:
  return jnp.where(f > _DELTA, f ** 3, 3 * _DELTA ** 2 * (f - 4.0 / 29.0))


def srgb_to_lab(rgb: jax.Array) -> jax.Array:
  """sRGB in [0, 1], [..., 3] -> CIE Lab (D65) [..., 3]: L in [0, 100], a and b about +-110."""
  xyz = _srgb_to_linear(rgb.astype(jnp.float32)) @ _RGB_TO_XYZ.T
  f = _lab_f(xyz / jnp.asarray(D65_WHITE, jnp.float32))
  fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
  return jnp.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def lab_to_srgb(lab: jax.Array) -> jax.Array:
  """CIE Lab (D65) [..., 3] -> sRGB [..., 3], clipped to [0, 1]."""
  lab = lab.astype(jnp.float32)
  fy = (lab[..., 0] + 16.0) / 116.0
  f = jnp.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], axis=-1)
  xyz = _lab_f_inverse(f) * jnp.asarray(D65_WHITE, jnp.float32)
  linear = jnp.clip(xyz @ _XYZ_TO_RGB.T, 0.0, 1.0)
  return jnp.clip(_linear_to_srgb(linear), 0.0, 1.0)


@functools.lru_cache(maxsize=None)
def ab_gamut_bins(bin_size: float) -> np.ndarray:
  """Centres [Q, 2] of the ab bins (side `bin_size`, centred on its multiples) that sRGB reaches.

  A bin is in gamut when some 8-bit sRGB colour's ab lies in it. Lab is a continuous image
  of the RGB cube, so the ab projection of the whole cube is that of its six faces: the faces
  sampled at every 8-bit level (6 x 256^2 colours) find every bin. With bin_size 10 this
  gives Q = 261 (the paper keeps 313: its bins are those of its ImageNet data's gamut).
  Cached per `bin_size`.
  """
  levels = np.arange(256, dtype=np.float32) / 255.0
  u, v = (grid.ravel() for grid in np.meshgrid(levels, levels, indexing="ij"))
  faces = []
  for axis in range(3):
    for value in (0.0, 1.0):
      face = np.empty((u.size, 3), np.float32)
      face[:, axis] = value
      face[:, [c for c in range(3) if c != axis]] = np.stack([u, v], axis=1)
      faces.append(face)
  ab = np.asarray(srgb_to_lab(jnp.asarray(np.concatenate(faces))))[:, 1:]
  bins = np.unique(np.round(ab / bin_size).astype(np.int64), axis=0)
  centres = (bins * bin_size).astype(np.float32)
  centres.flags.writeable = False  # cached: shared by every caller
  return centres


def soft_encode(ab: jax.Array, centres: jax.Array, num_neighbours: int, sigma: float
                ) -> tuple[jax.Array, jax.Array]:
  """The paper's soft-encoding of true colours (Sec. 2.1): Z = H^-1(Y).

  Each ab value [..., 2] is spread over its `num_neighbours` nearest bin centres [Q, 2]
  with weights proportional to a Gaussian of its distance, exp(-d^2 / (2 sigma^2)),
  normalised to sum to 1 (the paper: 5 neighbours, sigma = 5). Returns the bin indices
  [..., K] (nearest first) and their weights [..., K]; the other Q - K entries of Z are 0.
  """
  squared = jnp.sum((ab.astype(jnp.float32)[..., None, :] - centres) ** 2, axis=-1)
  negative_squared, indices = jax.lax.top_k(-squared, num_neighbours)
  weights = jax.nn.softmax(negative_squared / (2.0 * sigma ** 2), axis=-1)
  return indices, weights


def smoothed_prior(prior: jax.Array, centres: jax.Array, sigma: float) -> jax.Array:
  """p~: the empirical bin distribution [Q] smoothed with a Gaussian of `sigma` in ab (Sec.
  2.2), over the in-gamut bins, renormalised to sum to 1."""
  distances = jnp.sum((centres[:, None, :] - centres[None, :, :]) ** 2, axis=-1)
  smoothed = jnp.exp(-distances / (2.0 * sigma ** 2)) @ prior
  return smoothed / jnp.sum(smoothed)


def rebalancing_weights(smoothed: jax.Array, mix: float) -> jax.Array:
  """Class-rebalancing weights w [Q] of Eq. 4: w ~ ((1 - lambda) p~ + lambda / Q)^-1, scaled so
  that E_p~[w] = sum_q p~_q w_q = 1 (`mix` is lambda; the paper uses 0.5)."""
  weights = 1.0 / ((1.0 - mix) * smoothed + mix / smoothed.shape[-1])
  return weights / jnp.sum(smoothed * weights)


def annealed_mean(logits: jax.Array, centres: jax.Array, temperature: float) -> jax.Array:
  """The paper's point estimate H(Z) (Eq. 5): the mean of the re-tempered distribution
  f_T(z) = exp(log z / T) / sum_q exp(log z_q / T), which for z = softmax(logits) is
  softmax(logits / T); T = 1 is the mean, T -> 0 the mode (the paper uses T = 0.38)."""
  return jax.nn.softmax(logits.astype(jnp.float32) / temperature, axis=-1) @ centres
