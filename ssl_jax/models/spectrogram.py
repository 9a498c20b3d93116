"""Log-mel spectrograms in jax.numpy: what an audio tower reads, and the raw audio baseline.

The mel scale and its triangular filterbank follow Davis & Mermelstein 1980 ("Comparison of
parametric representations for monosyllabic word recognition in continuously spoken
sentences") in the form of the HTK book (Young et al., "The HTK Book", Sec. 5.4): mel(f) =
2595 log10(1 + f / 700); `num_mels` triangles whose corners are `num_mels + 2` points equally
spaced in mel from `fmin` to `fmax`, each rising from 0 at its left corner to 1 at its centre
and falling to 0 at its right corner, weighting the power of the FFT bins between them.

The spectrogram is the power |rfft|^2 of frames of `window_length` samples, `hop_length`
apart, each multiplied by a periodic Hann window (w[n] = 0.5 - 0.5 cos(2 pi n / N)); frames
start at sample 0 and are not centred (no padding), so a waveform of A samples gives
1 + (A - window_length) // hop_length frames (`num_frames`). The result is log(mel power +
1e-6), the floor keeping silent bands finite. Everything but the filterbank (a constant,
computed once in NumPy) is traced, so it runs jitted on device inside a training step.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

LOG_FLOOR = 1e-6


def num_frames(length: int, window_length: int, hop_length: int) -> int:
  """Frames of `log_mel_spectrogram` for a waveform of `length` samples: 1 + (length -
  window_length) // hop_length (a ValueError when the waveform is shorter than a window)."""
  if window_length < 1 or hop_length < 1:
    raise ValueError(f"window_length ({window_length}) and hop_length ({hop_length}) must be "
                     ">= 1")
  if length < window_length:
    raise ValueError(f"a waveform of {length} samples is shorter than the spectrogram's "
                     f"window of {window_length}")
  return 1 + (length - window_length) // hop_length


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
  """The HTK mel scale: 2595 log10(1 + f / 700)."""
  return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
  """The inverse of `hz_to_mel`."""
  return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=16)
def mel_filterbank(sample_rate: float, window_length: int, num_mels: int, fmin: float,
                   fmax: float) -> np.ndarray:
  """The HTK triangular filters as a matrix [window_length // 2 + 1, num_mels] over the rfft
  bins (bin k at k * sample_rate / window_length Hz); float32."""
  if not 0.0 <= fmin < fmax <= sample_rate / 2:
    raise ValueError(f"mel band [{fmin}, {fmax}] Hz must lie in [0, {sample_rate / 2}] "
                     f"(half the sample rate {sample_rate}) with fmin < fmax")
  corners = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), num_mels + 2))
  bins = np.arange(window_length // 2 + 1) * sample_rate / window_length
  left, centre, right = corners[:-2], corners[1:-1], corners[2:]
  rising = (bins[:, None] - left) / (centre - left)
  falling = (right - bins[:, None]) / (right - centre)
  return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def periodic_hann(window_length: int) -> np.ndarray:
  """w[n] = 0.5 - 0.5 cos(2 pi n / N), n < N: the Hann window whose shifts by N/2 sum to 1."""
  return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window_length) / window_length)).astype(
      np.float32)


def log_mel_spectrogram(waveform: jax.Array, sample_rate: float, window_length: int,
                        hop_length: int, num_mels: int, fmin: float = 0.0,
                        fmax: float | None = None) -> jax.Array:
  """log(mel power + 1e-6) [..., frames, num_mels] of `waveform` [..., A] (see the module
  docstring); `fmax` None is half the sample rate."""
  length = waveform.shape[-1]
  frames = num_frames(length, window_length, hop_length)
  fmax = sample_rate / 2 if fmax is None else fmax
  filters = mel_filterbank(float(sample_rate), window_length, num_mels, float(fmin),
                           float(fmax))
  starts = hop_length * np.arange(frames)
  index = starts[:, None] + np.arange(window_length)[None, :]
  framed = jnp.asarray(waveform, jnp.float32)[..., index] * periodic_hann(window_length)
  spectrum = jnp.fft.rfft(framed, axis=-1)
  power = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2
  # Full float32 for the (cheap) filterbank: TF32 / bfloat16 passes would move the log by 1e-3.
  mel_power = jnp.matmul(power, filters, precision=jax.lax.Precision.HIGHEST)
  return jnp.log(mel_power + LOG_FLOOR)
