"""TFDS builder for the moving digits with a sound track, offline: audio-visual correspondence.

Importing this module registers the dataset under the TFDS name `sounding_digits`, the
embedded dataset of the `audio_video` modality: the clips of `moving_digits` (one UCI digit,
enlarged to 16x16, bouncing in a 32x32 canvas for 10 frames) with a mono waveform synthesised
from what happens in each clip, so that a clip and its sound correspond as a video and its
sound track do in "Look, Listen and Learn" (Arandjelovic & Zisserman 2017): the sound says
*what* is in the clip (a note), *when* something happens (a click at each bounce) and *where*
the digit is (loudness).

Time. The 10 frames are nominally 10 frames per second, so a clip lasts 1 s; the sound has
4,000 samples at 4,000 Hz, 400 per frame. Frame t is the instant tau = t (in frame units) and
sample n the instant tau = n / 400: the sound covers tau in [0, 10), including frame 9's tenth
of a second, during which the digit moves on as the trajectory says.

Motion. The frames are exactly the `moving_digits` clip of the same digit and split (the same
seed, and `moving_digits.trajectory` draws first). From frame t to t + 1 a coordinate of the
digit's top-left corner, p in [0, R] (R = 16), moves with its integer velocity v (|v| <= 3
pixels per frame) along q = p + v * s, s in [0, 1), reflected at the walls: the continuous path
(`path`) is q, -q or 2R - q for q in [0, R], below 0 or above R. The coordinate meets a wall in
that step when p + v leaves [0, R], at the instant (`bounce_times`)

    tau = t + p / |v|        when p + v < 0 (the wall at 0),
    tau = t + (R - p) / v    when p + v > R (the wall at R);

a coordinate that lands exactly on a wall bounces at the start of the next step (s = 0).

Sound: the sum of
  note ("what"): the digit's sustained note. Fundamental FUNDAMENTALS[digit] (200, 225, 255,
    290, 330, 375, 425, 480, 545, 620 Hz for digits 0..9: 12.5-13.8% apart, and no digit's
    fundamental within 3% of twice or three times another's) times 1 + d, d uniform in
    [-1%, 1%] (detune); harmonics h = 1, 2, ... up to h * fundamental <= 1,400 Hz, harmonic h
    with amplitude TIMBRES[digit][h - 1] (1 for the fundamental, less for the others: the
    digit's timbre, see the table) and a uniform random phase; the sum scaled to an RMS of
    NOTE_RMS = 0.15 at full loudness, with 20 ms raised-cosine fades at both ends. Every
    component lies below 1,414 Hz, which leaves 1,500-2,000 Hz to the clicks and the noise.
  loudness ("where"): the note's amplitude follows the digit's vertical position on the
    continuous path, gain = 0.3 + 0.7 * (1 - row / R): 1 with the digit at the top of the
    canvas, 0.3 (-10.5 dB) at the bottom.
  clicks ("when"): at each distinct bounce sample round(400 tau) with tau in [0, 10) (a corner,
    both coordinates at once, is one click), a broadband burst of CLICK_SAMPLES = 24 samples
    (6 ms): 0.5 * exp(-k / 6) * u_k for k = 0..23, u_0 = +-1 (a random sign: the impact's sharp
    onset, flat in frequency) and u_k = 0.5 * uniform(-1, 1) after it (a 1.5 ms decaying
    rattle).
  noise: white Gaussian noise whose standard deviation is the note's RMS over the clip times
    10^(-SNR / 20), the SNR uniform in [20, 40] dB.
The sum is clipped to [-1, 1]; no sample of the dataset reaches it (the largest is 0.86).

The draws, in this order, come from `numpy.random.default_rng((7, split, digit index))` (split
0 train, 1 test), the generator of the `moving_digits` clips: the trajectory's start and
velocity, then the detune, the harmonics' phases, the SNR, the noise, and each click's sign and
rattle in time order. A clip and its sound are a pure function of the digit and the split.

Features: `frames` uint8 [10, 32, 32, 1] (as `moving_digits`), `audio` float32 [4000] in
[-1, 1], `label` ClassLabel(10), the digit; `info.metadata` holds sample_rate 4000 and
frame_rate 10. Splits follow `digits`' fixed stratified 70/30 split, one clip per digit: train
1,257 clips (32.5 MiB), test 540 (14.0 MiB), prepared in about 7 s on one CPU core.
"""
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from ssl_jax.data.builders import digits
from ssl_jax.data.builders import moving_digits

SAMPLE_RATE = 4000
FRAME_RATE = 10  # nominal: the clips carry no time stamps
SAMPLES_PER_FRAME = SAMPLE_RATE // FRAME_RATE
NUM_SAMPLES = moving_digits.NUM_FRAMES * SAMPLES_PER_FRAME
ROOM = moving_digits.CANVAS - moving_digits.SCALE * 8  # corners of the 16x16 digit: [0, ROOM]
# The generator of the `moving_digits` clips: a clip's frames and its sound come from one seed.
_SEED = moving_digits._SEED  # pylint: disable=protected-access
_SPLIT_IDS = moving_digits._SPLIT_IDS  # pylint: disable=protected-access

# The note of each digit 0..9: fundamentals (Hz) and harmonic amplitudes (harmonic 1, 2, ...).
FUNDAMENTALS = (200.0, 225.0, 255.0, 290.0, 330.0, 375.0, 425.0, 480.0, 545.0, 620.0)
TIMBRES = (
    (1.0, 0.5, 0.33, 0.25, 0.2, 0.17, 0.14),   # 0: all harmonics, 1/h (sawtooth-like)
    (1.0, 0.0, 0.33, 0.0, 0.2, 0.0, 0.14),     # 1: odd harmonics, 1/h (square-like)
    (1.0, 0.0, 0.11, 0.0, 0.04, 0.0, 0.02),    # 2: odd harmonics, 1/h^2 (triangle-like)
    (1.0, 0.8),                                # 3: a strong octave
    (1.0, 0.25, 0.11, 0.06, 0.04),             # 4: all harmonics, 1/h^2
    (1.0, 0.0, 0.7),                           # 5: a strong twelfth
    (1.0, 0.6, 0.6),                           # 6: octave and twelfth
    (1.0, 0.3),                                # 7: a weak octave
    (1.0,),                                    # 8: a pure tone
    (1.0, 0.7),                                # 9: a bright octave
)
MAX_HARMONIC_HZ = 1400.0
DETUNE = 0.01
NOTE_RMS = 0.15
GAIN_BOTTOM = 0.3
FADE_SAMPLES = SAMPLE_RATE // 50  # 20 ms
CLICK_SAMPLES = 24  # 6 ms
CLICK_DECAY = 6.0  # samples (1.5 ms)
CLICK_AMPLITUDE = 0.5
CLICK_TAIL = 0.5
SNR_DB = (20.0, 40.0)


def path(corners: np.ndarray, velocities: np.ndarray, times: np.ndarray) -> np.ndarray:
  """The corner [len(times), 2] at frame-unit `times` in [0, len(corners)) on the continuous
  path (see the module docstring): linear from each frame's corner, reflected at the walls."""
  step = np.floor(times).astype(int)
  unreflected = corners[step] + velocities[step] * (times - step)[:, None]
  return np.where(unreflected < 0, -unreflected,
                  np.where(unreflected > ROOM, 2 * ROOM - unreflected, unreflected))


def bounce_times(corners: np.ndarray, velocities: np.ndarray) -> np.ndarray:
  """The instants (frame units, sorted) at which either coordinate meets a wall:
  t + p / |v| (the wall at 0) or t + (R - p) / v (the wall at R) for each step t whose
  unreflected end p + v leaves [0, R]."""
  times = []
  for t, (corner, velocity) in enumerate(zip(corners, velocities)):
    for p, v in zip(corner.tolist(), velocity.tolist()):
      if p + v < 0:
        times.append(t + p / -v)
      elif p + v > ROOM:
        times.append(t + (ROOM - p) / v)
  return np.unique(np.asarray(times, np.float64))


def bounce_samples(corners: np.ndarray, velocities: np.ndarray) -> np.ndarray:
  """The distinct samples round(400 tau) of the bounces, sorted: where the clicks start."""
  return np.unique(np.round(bounce_times(corners, velocities) * SAMPLES_PER_FRAME).astype(int))


def _fades(length: int) -> np.ndarray:
  """1 with raised-cosine ramps of FADE_SAMPLES at both ends (no step at the clip's edges)."""
  ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(FADE_SAMPLES) + 0.5) / FADE_SAMPLES)
  envelope = np.ones(length)
  envelope[:FADE_SAMPLES], envelope[-FADE_SAMPLES:] = ramp, ramp[::-1]
  return envelope


def sound(digit: int, corners: np.ndarray, velocities: np.ndarray, rng: np.random.Generator
          ) -> np.ndarray:
  """The clip's waveform, float32 [NUM_SAMPLES] in [-1, 1] (see the module docstring)."""
  seconds = np.arange(NUM_SAMPLES) / SAMPLE_RATE
  fundamental = FUNDAMENTALS[digit] * (1.0 + rng.uniform(-DETUNE, DETUNE))
  amplitudes = np.array([a for h, a in enumerate(TIMBRES[digit], start=1)
                         if h * FUNDAMENTALS[digit] <= MAX_HARMONIC_HZ])
  phases = rng.uniform(0.0, 2 * np.pi, len(amplitudes))
  harmonics = np.arange(1, len(amplitudes) + 1)
  tone = np.sin(2 * np.pi * fundamental * harmonics[:, None] * seconds + phases[:, None])
  tone = amplitudes @ tone / np.sqrt(np.sum(amplitudes ** 2) / 2)  # unit RMS
  rows = path(corners, velocities, np.arange(NUM_SAMPLES) / SAMPLES_PER_FRAME)[:, 0]
  gain = GAIN_BOTTOM + (1.0 - GAIN_BOTTOM) * (1.0 - rows / ROOM)
  note = NOTE_RMS * gain * _fades(NUM_SAMPLES) * tone

  snr_db = rng.uniform(*SNR_DB)
  noise_std = np.sqrt(np.mean(note ** 2)) * 10 ** (-snr_db / 20)
  waveform = note + noise_std * rng.standard_normal(NUM_SAMPLES)
  decay = CLICK_AMPLITUDE * np.exp(-np.arange(CLICK_SAMPLES) / CLICK_DECAY)
  for start in bounce_samples(corners, velocities):
    burst = decay * np.concatenate([rng.choice([-1.0, 1.0], 1),
                                    CLICK_TAIL * rng.uniform(-1.0, 1.0, CLICK_SAMPLES - 1)])
    end = min(start + CLICK_SAMPLES, NUM_SAMPLES)
    waveform[start:end] += burst[:end - start]
  return np.clip(waveform, -1.0, 1.0).astype(np.float32)


def sounding_digit(image: np.ndarray, digit: int, split: str, index: int
                   ) -> tuple[np.ndarray, np.ndarray]:
  """(frames uint8 [10, 32, 32, 1], audio float32 [4000]) of digit `image` [8, 8, 1] (class
  `digit`) at `index` of the digits for `split`."""
  rng = np.random.default_rng((_SEED, _SPLIT_IDS[split], int(index)))
  corners, velocities = moving_digits.trajectory(rng, moving_digits.NUM_FRAMES, ROOM,
                                                 with_velocities=True)
  frames = moving_digits.moving_digit(image, split, index)  # drawn from the same seed
  return frames, sound(digit, corners, velocities, rng)


class SoundingDigits(moving_digits.MovingDigits):
  """The `moving_digits` clips with a synthesised sound track (see the module docstring):
  1,257 train / 540 test clips of 10 frames of 32x32x1 and 4,000 samples at 4 kHz."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: moving digits with their note, bounces and "
                            "height as sound."}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=("UCI handwritten digits (scikit-learn's copy) bouncing in a 32x32 canvas "
                     "for 10 frames (1 s), with a 4 kHz sound track synthesised from the "
                     "clip: the digit's note, louder higher up, a click at each bounce; "
                     "label = the digit."),
        features=tfds.features.FeaturesDict({
            "frames": tfds.features.Tensor(
                shape=(moving_digits.NUM_FRAMES, moving_digits.CANVAS, moving_digits.CANVAS, 1),
                dtype=np.uint8),
            "audio": tfds.features.Tensor(shape=(NUM_SAMPLES,), dtype=np.float32),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("frames", "label"),
        homepage="https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits",
        citation=digits._CITATION,  # pylint: disable=protected-access
        metadata=tfds.core.MetadataDict(sample_rate=SAMPLE_RATE, frame_rate=FRAME_RATE),
    )

  def _generate_examples(self, images: np.ndarray, labels: np.ndarray, split: str,
                         indices: np.ndarray
                         ) -> Iterator[tuple[int, dict[str, np.ndarray | int]]]:
    """Yields clips keyed by their digit's index in `load_digits`, stable across runs."""
    for index in indices:
      frames, audio = sounding_digit(images[index], int(labels[index]), split, index)
      yield int(index), {"frames": frames, "audio": audio, "label": int(labels[index])}
