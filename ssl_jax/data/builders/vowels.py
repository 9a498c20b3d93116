"""TFDS builder for synthesised stop-vowel syllable strings as raw 8 kHz waveforms, offline.

Importing this module registers the dataset under the TFDS name `vowels`, the embedded
raw-audio dataset of the sequence modality (`ssl_jax.data.sequence_pipeline`) for methods
that learn from waveforms, such as CPC (van den Oord, Li & Vinyals 2018) and wav2vec 2.0
(Baevski et al. 2020). Nothing is downloaded: every utterance is synthesised with NumPy and
scipy.signal by a source-filter model, a cut-down cascade formant synthesiser after Klatt
(1980) with time-varying formants, so a speech-like signal with two labels (the vowel and the
speaker) is available where no recorded speech is.

An utterance is a string of 3 or 4 consonant-vowel syllables spoken by one speaker, every
syllable with the same vowel (the label) and its own voiced stop: "ba-da-ga", "gu-bu-du-bu".
Version 1.0.0 held one sustained vowel per token, which looked the same in every 10 ms step,
so wav2vec 2.0's contrastive task (a masked step's quantized target against distractors from
other steps of the same utterance) had identical targets and sat at chance; here the signal
changes every few tens of ms, as speech does: near-silent closures, bursts, formant glides.

Vowels. The 10 vowels of Peterson & Barney (1952), with the formant frequencies (Hz) they
averaged over their 33 men (Table II); label = the vowel (ClassLabel, in this order):

  label  vowel  word    F1    F2    F3
    0     iy    heed   270  2290  3010
    1     ih    hid    390  1990  2550
    2     eh    head   530  1840  2480
    3     ae    had    660  1720  2410
    4     ah    hud    520  1190  2390
    5     aa    hod    730  1090  2440
    6     ao    hawed  570   840  2410
    7     uh    hood   440  1020  2240
    8     uw    who'd  300   870  2240
    9     er    heard  490  1350  1690

Consonants. The voiced stops b (labial), d (alveolar), g (velar), drawn uniformly and
independently for each syllable (`consonants` = their letters, e.g. "bdg" or "gbdb").

Speakers. 12 (ClassLabel `speaker`), each with a base f0, a vocal-tract scale that
multiplies every formant frequency, locus, burst frequency and bandwidth (a shorter tract
raises all resonances; a uniform scale is the simplest reading of that, while real women's
and children's formants scale non-uniformly), a tempo (the multiplier of every nominal
duration below; 1.0.0's token-duration ranges, midpoint / 0.40 s x 0.6, so the speakers keep
their relative speed), an open quotient (the open fraction of a glottal cycle: larger is
smoother, a steeper spectral tilt) and a breathiness (aspiration-noise RMS relative to the
voicing source's RMS):

  speaker   f0 Hz  scale  tempo   open q.  breathiness
  man_1      100   1.00   0.525    0.50     0.03
  man_2      115   1.02   0.600    0.55     0.05
  man_3      128   0.97   0.660    0.52     0.04
  man_4      140   1.04   0.570    0.58     0.07
  woman_1    190   1.15   0.630    0.62     0.10
  woman_2    205   1.17   0.540    0.66     0.08
  woman_3    222   1.19   0.600    0.65     0.14
  woman_4    240   1.20   0.660    0.70     0.12
  child_1    250   1.30   0.525    0.65     0.06
  child_2    265   1.32   0.600    0.68     0.09
  child_3    282   1.33   0.630    0.72     0.07
  child_4    300   1.35   0.570    0.70     0.10

A syllable (`draw_utterance`, `formant_tracks`, `_finish`): four segments, their nominal
durations drawn uniformly per syllable and multiplied by the utterance's rate (below):

  closure     30-60 ms  the lips are shut: the vocal tract's output is off and only a voice
                        bar sounds, the glottal source through a low-pass Klatt resonator at
                        the utterance's U(150, 250) Hz (bandwidth 100 Hz), its RMS over the
                        closures 25 dB under the steady vowels' RMS (2.5 ms ramps; it lasts
                        through the burst).
  burst       5-10 ms   the release: white noise through one resonator, a 1 ms rise and an
                        exponential decay to exp(-2.5); b: 500 Hz, bandwidth 2000 Hz, -18 dB
                        (weak, low and flat); d: 3200 Hz (3-4 kHz in speech; at most 3700
                        Hz, under Nyquist), 500 Hz, -6 dB; g: its F2 onset (near the vowel's F2),
                        300 Hz, -8 dB (compact); frequencies and bandwidths x the speaker's
                        scale, levels re the steady vowels' RMS.
  transition  40-60 ms  voicing through the vocal tract, whose output opens over 2.5 ms; each
                        formant glides from its onset to the vowel's target along a raised
                        cosine, F(t) = target + (onset - target) (1 + cos(pi t / T)) / 2.
  vowel       60-140 ms the vowel's targets, steady; the output closes over its last 5 ms (the
                        lips shut for the next stop; the last vowel ends under the utterance's
                        20 ms offset).

Formant onsets at the release, after Delattre, Liberman & Cooper's (1955) loci, in Hz x the
speaker's scale, clipped at 3700 Hz (`consonant_onsets`): F1 250 (at most the vowel's F1) for
every stop; b: F2 800, F3 0.85 x the vowel's F3; d: F2 1800, F3 2700; g: F2 1.1 x the vowel's
F2, F3 halfway between that and the vowel's F3 (the velar pinch of F2 and F3). The onset is the
locus itself (not Delattre's halfway point), so the d glide runs from 1800 Hz in full: down
to a back vowel's F2 (uw 870, aa 1090), up to a front one's (iy 2290).

Rate. The utterance's duration multiplier = the speaker's tempo x U(0.9, 1.1). Where the drawn
string would pass 4000 samples, the whole string is compressed (the multiplier x 4000 /
its length, so it ends at sample 4000); no syllable is dropped, so `consonants` always names
what is said. That squeezes 35% of the 4-syllable strings and 0.1% of the 3-syllable ones
(17.6% of all). Across both splits the multipliers run 0.47-0.72 (median 0.58): closures
14-43 ms (median 26), bursts 2.4-7.1 (4.3), transitions 19-43 (29), steady vowels 29-100 (58),
syllables 71-180 ms (118): fast speech, about 8 syllables a second.

Draws. Every draw comes from `numpy.random.default_rng((_SEED, split id (train 0, test 1),
speaker, vowel, repetition))`, so an utterance is a pure function of its ids. In this order
(`draw_utterance`): the number of syllables (3 or 4); a consonant per syllable; the f0 = base
f0 x U(0.92, 1.08); a declination d ~ U(0.04, 0.10); a rise-fall height h ~ U(0.02, 0.06) per
syllable; one factor U(0.96, 1.04) per formant; the rate factor U(0.9, 1.1); the four nominal
durations of each syllable (syllable by syllable); the voice bar's frequency; the peak level
U(0.3, 0.9); the SNR U(20, 35) dB. Segment boundaries are the running sums of the durations
rounded to samples (each part within a sample of its drawn length). Then, while rendering
(`_prepare`, `_finish`): a jitter value every 10 ms, aspiration noise, burst noise and
background noise, all Gaussian.

  f0(t) = f0 (1 + d (1/2 - t/D)) (1 + h_s sin(pi (t - a_s) / (e_s - a_s))) (1 + jitter(t)):
      a linear fall by the fraction d over the utterance's duration D, centred on its middle;
      a rise-fall of height h_s over the voiced part [a_s, e_s) (transition and vowel) of
      each syllable s; jitter(t) interpolates N(0, 0.005^2) values drawn every 10 ms.
  Source (`glottal_pulses`): a Rosenberg (1971) trigonometric pulse per cycle of the phase
      integral of f0(t), through the whole utterance (the glottis keeps vibrating in a voiced
      stop's closure; what is heard there is only the voice bar): the flow rises as a half
      cosine over the first 70% of the open phase, falls as a quarter cosine over the rest,
      and is zero while the glottis is closed (1 - open quotient of the cycle). Its first
      difference (the lips' radiation, +6 dB/octave, which Klatt 1980 applies as a first
      difference at the output; the filters are linear, so it may act on the source instead)
      is normalised to unit RMS; aspiration noise of RMS = breathiness is added, halved while
      the glottis is closed (a pitch-synchronous modulation in the spirit of Klatt 1980).
  Vocal tract (`time_varying_cascade`): a cascade of 3 of Klatt's (1980) digital resonators,
      y[n] = A[n] x[n] + B[n] y[n-1] + C y[n-2] with C = -exp(-2 pi BW T), B[n] = 2 exp(-pi BW
      T) cos(2 pi F(n) T), A[n] = 1 - B[n] - C (T = 1/8000 s), whose frequencies F(n) follow
      the formant tracks sample by sample (the onsets through closure and burst, the glides,
      the vowel's targets: F1, F2, F3 x the speaker's scale x the utterance's factors,
      clipped at 3700 Hz, which only iy's F3 reaches: in every child's utterance and in 3 of
      woman_3's and 2 of woman_4's) with bandwidths 60, 90, 150 Hz x the speaker's scale.
      The state (each resonator's last two outputs) carries over as the coefficients move,
      so the glides are smooth; the recursion runs vectorised over utterances and, skewed a
      sample per resonator, over the cascade, bit-identical for one utterance or many.
  Mix: the vocal tract's output x the lips' gate (open from each transition to the end of its
      vowel), + the voice bar, + the bursts; 20 ms raised-cosine onset and offset; scaled to
      the peak level; then white noise at the SNR re the steady vowels' mean power (what
      1.0.0's "the token's mean power" was, its token being all vowel) over the utterance's
      samples. Closure frames thus sit about 24 dB (median) under the steady vowel's: the voice
      bar's 25 dB plus the noise floor, which at the lowest SNRs is itself only 20 dB down.

Features: `signal` float32 [4000] (0.5 s at 8 kHz; the utterance from sample 0, zeros after
its end), `length` int32 (the utterance's samples, 1984-4000, median 3314), `label`
ClassLabel(10, the vowels above), `speaker` ClassLabel(12, the speakers above), `consonants`
Text (the stops' letters in order, 3 or 4 of b, d, g). Splits: per (speaker, vowel) 12 train
and 4 test repetitions: train 1,440 utterances (144 per vowel, 120 per speaker), test 480 (48,
40); the same speakers are in both, so a probe of the speaker is meaningful. Keys: speaker *
10000 + vowel * 100 + repetition. Preparing both splits takes 5-10 s on one CPU core (3 s
of it synthesis); the stored records take about 31 MB. For tests and plots,
`synthesise_many` returns each utterance's parameters (`Utterance.boundaries`: the samples
where its closures, bursts, transitions and vowels start and end), f0 contour and formant
tracks.
"""
from collections.abc import Iterator, Sequence
import dataclasses

import numpy as np
from scipy import signal as scipy_signal
import tensorflow_datasets as tfds

SAMPLE_RATE = 8000
MAX_LENGTH = 4000  # 0.5 s, the longest utterance
VOWELS = ("iy", "ih", "eh", "ae", "ah", "aa", "ao", "uh", "uw", "er")
# Peterson & Barney (1952), Table II, averages for men: (F1, F2, F3) in Hz per vowel.
FORMANTS = np.array([
    (270, 2290, 3010), (390, 1990, 2550), (530, 1840, 2480), (660, 1720, 2410),
    (520, 1190, 2390), (730, 1090, 2440), (570, 840, 2410), (440, 1020, 2240),
    (300, 870, 2240), (490, 1350, 1690)], np.float64)
BANDWIDTHS = np.array([60.0, 90.0, 150.0])  # Hz, before the speaker's scale
MAX_FORMANT = 3700.0  # Hz, below the 4 kHz Nyquist frequency
TRAIN_REPETITIONS = 12
TEST_REPETITIONS = 4
RAMP_SECONDS = 0.02  # the utterance's onset and offset

# Syllables: a voiced stop, then the utterance's vowel.
CONSONANTS = ("b", "d", "g")
SYLLABLES = (3, 4)  # the syllables of an utterance, drawn uniformly
SEGMENTS = ("closure", "burst", "transition", "vowel")  # the parts of a syllable, in order
# Nominal duration ranges (ms) of the parts, before the speaking rate's multiplier.
DURATIONS_MS = np.array([(30.0, 60.0), (5.0, 10.0), (40.0, 60.0), (60.0, 140.0)])
RATE_FACTOR = (0.9, 1.1)  # an utterance's multiplier of its speaker's tempo
# Formant onsets at the release (Delattre, Liberman & Cooper 1955), in Hz for a man; every
# one is multiplied by the speaker's scale (a `g` follows its vowel instead).
F1_LOCUS = 250.0  # every stop; at most the vowel's F1
F2_LOCI = {"b": 800.0, "d": 1800.0}
D_F3_LOCUS = 2700.0
B_F3_RATIO = 0.85  # a labial lowers F3 too: its onset is this fraction of the vowel's F3
G_F2_RATIO = 1.1  # a velar's F2 onset: just above the vowel's F2 (F3 halfway down to it)
# Release bursts: (centre Hz, bandwidth Hz, both before the speaker's scale; RMS in dB re the
# steady vowels' RMS). g's centre is its F2 onset (already scaled).
BURSTS = {"b": (500.0, 2000.0, -18.0), "d": (3200.0, 500.0, -6.0), "g": (None, 300.0, -8.0)}
VOICE_BAR_HZ = (150.0, 250.0)  # the closure's low-pass resonator, drawn per utterance
VOICE_BAR_BANDWIDTH = 100.0  # Hz
VOICE_BAR_DB = -25.0  # its RMS in the closures, re the steady vowels' RMS
ACCENT = (0.02, 0.06)  # the height of a syllable's f0 rise-fall, relative
LIPS_OPEN = 20  # samples (2.5 ms): the vocal tract's output rises over these at voicing onset
LIPS_CLOSE = 40  # samples (5 ms): and falls over the last ones of the vowel
VOICE_BAR_RAMP = 20  # samples: the voice bar's rise and fall inside its closure
BURST_RISE = 8  # samples (1 ms), then an exponential decay to exp(-BURST_DECAY)
BURST_DECAY = 2.5

_SEED = 1952
_SPLIT_IDS = {"train": 0, "test": 1}
_RISE_FRACTION = 0.7  # of the open phase (Rosenberg's pulse rises longer than it falls)
_JITTER_STEP_SECONDS = 0.01
_JITTER_STD = 0.005
_CHUNK = 480  # utterances whose vocal-tract filters run together


@dataclasses.dataclass(frozen=True)
class Speaker:
  """A synthetic speaker's fixed parameters (see the module docstring's table)."""
  name: str
  f0: float  # Hz
  scale: float  # multiplies formant frequencies, loci and bandwidths
  tempo: float  # multiplies every nominal duration (smaller is faster)
  open_quotient: float
  breathiness: float


SPEAKERS = (
    Speaker("man_1", 100.0, 1.00, 0.525, 0.50, 0.03),
    Speaker("man_2", 115.0, 1.02, 0.600, 0.55, 0.05),
    Speaker("man_3", 128.0, 0.97, 0.660, 0.52, 0.04),
    Speaker("man_4", 140.0, 1.04, 0.570, 0.58, 0.07),
    Speaker("woman_1", 190.0, 1.15, 0.630, 0.62, 0.10),
    Speaker("woman_2", 205.0, 1.17, 0.540, 0.66, 0.08),
    Speaker("woman_3", 222.0, 1.19, 0.600, 0.65, 0.14),
    Speaker("woman_4", 240.0, 1.20, 0.660, 0.70, 0.12),
    Speaker("child_1", 250.0, 1.30, 0.525, 0.65, 0.06),
    Speaker("child_2", 265.0, 1.32, 0.600, 0.68, 0.09),
    Speaker("child_3", 282.0, 1.33, 0.630, 0.72, 0.07),
    Speaker("child_4", 300.0, 1.35, 0.570, 0.70, 0.10),
)

_CITATION = """\
@article{peterson1952control,
  title = {Control methods used in a study of the vowels},
  author = {Peterson, Gordon E. and Barney, Harold L.},
  journal = {The Journal of the Acoustical Society of America},
  volume = {24}, number = {2}, pages = {175--184},
  year = {1952},
}
@article{delattre1955acoustic,
  title = {Acoustic loci and transitional cues for consonants},
  author = {Delattre, Pierre C. and Liberman, Alvin M. and Cooper, Franklin S.},
  journal = {The Journal of the Acoustical Society of America},
  volume = {27}, number = {4}, pages = {769--773},
  year = {1955},
}
@article{klatt1980software,
  title = {Software for a cascade/parallel formant synthesizer},
  author = {Klatt, Dennis H.},
  journal = {The Journal of the Acoustical Society of America},
  volume = {67}, number = {3}, pages = {971--995},
  year = {1980},
}
@article{rosenberg1971effect,
  title = {Effect of glottal pulse shape on the quality of natural vowels},
  author = {Rosenberg, Aaron E.},
  journal = {The Journal of the Acoustical Society of America},
  volume = {49}, number = {2B}, pages = {583--590},
  year = {1971},
}
"""


@dataclasses.dataclass(frozen=True)
class Utterance:
  """The drawn parameters of one utterance (`draw_utterance`)."""
  speaker: int
  vowel: int
  consonants: tuple[int, ...]  # indices into CONSONANTS, one per syllable
  f0: float  # Hz, at the middle of the utterance before the syllables' rise-falls
  declination: float  # fraction f0 falls over the utterance
  accents: np.ndarray  # [syllables] the height of each syllable's f0 rise-fall
  formants: np.ndarray  # [3] Hz, the vowel's targets after scaling, perturbation, clipping
  bandwidths: np.ndarray  # [3] Hz
  onsets: np.ndarray  # [syllables, 3] Hz, the formants at each release
  rate: float  # the multiplier of the nominal durations actually used
  compressed: bool  # whether the drawn string was compressed to fit MAX_LENGTH
  boundaries: np.ndarray  # [syllables, 5] samples: closure, burst, transition, vowel, end
  voice_bar_hz: float
  level: float  # peak amplitude before the background noise
  snr_db: float  # background noise re the steady vowels' power

  @property
  def length(self) -> int:
    return int(self.boundaries[-1, -1])

  @property
  def text(self) -> str:
    """The consonant letters, e.g. "bdg" (the `consonants` feature)."""
    return "".join(CONSONANTS[c] for c in self.consonants)


def utterance_rng(speaker: int, vowel: int, split: str, repetition: int
                  ) -> np.random.Generator:
  """The generator of every draw of one utterance: a pure function of its ids."""
  return np.random.default_rng((_SEED, _SPLIT_IDS[split], speaker, vowel, repetition))


def consonant_onsets(consonant: int, targets: np.ndarray, scale: float) -> np.ndarray:
  """(F1, F2, F3) in Hz at the release of `consonant` before a vowel with `targets` [3]."""
  name = CONSONANTS[consonant]
  f1 = min(F1_LOCUS * scale, targets[0])
  if name == "b":
    f2, f3 = F2_LOCI["b"] * scale, B_F3_RATIO * targets[2]
  elif name == "d":
    f2, f3 = F2_LOCI["d"] * scale, D_F3_LOCUS * scale
  else:  # the velar pinch: F2 just above the vowel's, F3 halfway down to it
    f2 = G_F2_RATIO * targets[1]
    f3 = 0.5 * (min(f2, MAX_FORMANT) + targets[2])
  return np.minimum(np.array([f1, f2, f3]), MAX_FORMANT)


def burst_parameters(consonant: int, onsets: np.ndarray, scale: float
                     ) -> tuple[float, float, float]:
  """(centre Hz, bandwidth Hz, dB re the vowel's RMS) of `consonant`'s release burst: b low and
  flat (a broad resonance at 500 Hz), d high (3.2 kHz, under the 3.7 kHz clip), g compact at
  its F2 onset, near the vowel's F2."""
  centre, bandwidth, level_db = BURSTS[CONSONANTS[consonant]]
  centre = onsets[1] if centre is None else min(centre * scale, MAX_FORMANT)
  return float(centre), bandwidth * scale, level_db


def draw_utterance(rng: np.random.Generator, speaker: int, vowel: int) -> Utterance:
  """Draws an utterance's parameters, in the module docstring's order, from `rng`."""
  who = SPEAKERS[speaker]
  count = int(rng.integers(SYLLABLES[0], SYLLABLES[-1] + 1))
  consonants = tuple(int(c) for c in rng.integers(0, len(CONSONANTS), size=count))
  f0 = who.f0 * rng.uniform(0.92, 1.08)
  declination = rng.uniform(0.04, 0.10)
  accents = rng.uniform(*ACCENT, size=count)
  factors = rng.uniform(0.96, 1.04, size=3)
  rate = who.tempo * rng.uniform(*RATE_FACTOR)
  durations_ms = rng.uniform(DURATIONS_MS[:, 0], DURATIONS_MS[:, 1], size=(count, 4))
  voice_bar_hz = rng.uniform(*VOICE_BAR_HZ)
  level = rng.uniform(0.3, 0.9)
  snr_db = rng.uniform(20.0, 35.0)
  samples = durations_ms / 1000 * rate * SAMPLE_RATE
  compressed = bool(samples.sum() > MAX_LENGTH)
  if compressed:  # the whole string is spoken faster; no syllable is dropped
    squeeze = MAX_LENGTH / samples.sum()
    rate, samples = rate * squeeze, samples * squeeze
  edges = np.minimum(np.round(np.concatenate([[0.0], np.cumsum(samples.ravel())])),
                     MAX_LENGTH).astype(np.int64)
  boundaries = np.stack([edges[4 * s:4 * s + 5] for s in range(count)])
  formants = np.minimum(FORMANTS[vowel] * who.scale * factors, MAX_FORMANT)
  onsets = np.stack([consonant_onsets(c, formants, who.scale) for c in consonants])
  return Utterance(speaker=speaker, vowel=vowel, consonants=consonants, f0=f0,
                   declination=declination, accents=accents, formants=formants,
                   bandwidths=BANDWIDTHS * who.scale, onsets=onsets, rate=rate,
                   compressed=compressed, boundaries=boundaries, voice_bar_hz=voice_bar_hz,
                   level=level, snr_db=snr_db)


def f0_contour(utterance: Utterance, rng: np.random.Generator) -> np.ndarray:
  """f0 in Hz at each of the utterance's samples [length]: declination, a rise-fall over each
  syllable's voiced part (transition and vowel) and jitter."""
  length = utterance.length
  t = np.arange(length) / SAMPLE_RATE
  duration = length / SAMPLE_RATE
  accent = np.zeros(length)
  for height, (_, _, start, _, end) in zip(utterance.accents, utterance.boundaries):
    accent[start:end] = height * np.sin(np.pi * np.arange(end - start) / (end - start))
  knots = np.arange(0.0, duration + _JITTER_STEP_SECONDS, _JITTER_STEP_SECONDS)
  jitter = np.interp(t, knots, rng.normal(0.0, _JITTER_STD, size=len(knots)))
  return (utterance.f0 * (1 + utterance.declination * (0.5 - t / duration)) * (1 + accent)
          * (1 + jitter))


def formant_tracks(utterance: Utterance) -> np.ndarray:
  """(F1, F2, F3) in Hz at each sample [length, 3]: the release's onsets through the closure
  and the burst, a raised-cosine glide to the vowel's targets over the transition, then the
  targets."""
  tracks = np.empty((utterance.length, 3))
  targets = utterance.formants
  for onset, (closure, _, start, steady, end) in zip(utterance.onsets, utterance.boundaries):
    tracks[closure:start] = onset
    glide = 0.5 * (1 + np.cos(np.pi * np.arange(steady - start) / (steady - start)))
    tracks[start:steady] = targets + (onset - targets) * glide[:, None]
    tracks[steady:end] = targets
  return tracks


def glottal_flow(phase: np.ndarray, open_quotient: float) -> np.ndarray:
  """Rosenberg's (1971) trigonometric glottal flow at cycle phases in [0, 1): a half-cosine
  rise over the first `_RISE_FRACTION` of the open phase, a quarter-cosine fall over the rest,
  zero while closed; peak 1."""
  rise = _RISE_FRACTION * open_quotient
  fall = open_quotient - rise
  return np.where(phase < rise, 0.5 * (1 - np.cos(np.pi * phase / rise)),
                  np.where(phase < open_quotient,
                           np.cos(0.5 * np.pi * (phase - rise) / fall), 0.0))


def glottal_pulses(f0: np.ndarray, open_quotient: float
                   ) -> tuple[np.ndarray, np.ndarray]:
  """(flow derivative [T] at unit RMS, open-glottis mask [T]) for the f0 contour `f0` [T] (Hz).

  The cycle phase is the running integral of f0, so the period follows the contour sample
  by sample; the flow's first difference applies the lips' radiation (+6 dB/octave).
  """
  phase = np.mod(np.cumsum(f0) / SAMPLE_RATE, 1.0)
  flow = glottal_flow(phase, open_quotient)
  derivative = np.diff(flow, prepend=0.0)
  return derivative / np.sqrt(np.mean(derivative ** 2)), phase < open_quotient


def resonator_terms(frequency: float | np.ndarray, bandwidth: float | np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Klatt's (1980) resonator y[n] = A x[n] + B y[n-1] + C y[n-2] as (A, B, C) for a pole
  pair at `frequency` with -3 dB `bandwidth` (Hz; scalars or arrays that broadcast): unit
  gain at 0 Hz."""
  period = 1.0 / SAMPLE_RATE
  c = -np.exp(-2 * np.pi * bandwidth * period)
  b = 2 * np.exp(-np.pi * bandwidth * period) * np.cos(2 * np.pi * frequency * period)
  return 1.0 - b - c, b, c


def resonator_coefficients(frequency: float, bandwidth: float
                           ) -> tuple[np.ndarray, np.ndarray]:
  """(b, a) of a fixed Klatt resonator (`resonator_terms`) for `scipy.signal.lfilter`."""
  a, b, c = resonator_terms(frequency, bandwidth)
  return np.array([a]), np.array([1.0, -b, -c])


def time_varying_cascade(source: np.ndarray, a_terms: np.ndarray, b_terms: np.ndarray,
                         c_terms: np.ndarray) -> np.ndarray:
  """Rows of `source` [N, T] through cascades of 3 Klatt resonators whose coefficients change
  every sample; returns [N, T].

  Resonator k of row i runs y_k[n] = A y_{k-1}[n] + B y_k[n-1] + C y_k[n-2] (y_0 = the
  source) with A = `a_terms`[i, n, k], B = `b_terms`[i, n, k] (both [N, T, 3]) and C =
  `c_terms`[i, k] ([N, 3]: the bandwidths are fixed): the filter state, the last two outputs of
  each resonator, carries over as the coefficients move. Vectorised over the rows and, skewed
  by one sample per resonator, over the cascade: step m runs resonator k on sample m - k, so
  one NumPy step advances all 3 resonators of every row. A row's arithmetic does not depend
  on the others, so it is bit-identical however many run with it.
  """
  count, length = source.shape
  skewed_a = np.zeros((length + 2, 3, count))
  skewed_b = np.zeros((length + 2, 3, count))
  for k in range(3):
    skewed_a[k:k + length, k] = a_terms[:, :, k].T
    skewed_b[k:k + length, k] = b_terms[:, :, k].T
  source = np.ascontiguousarray(source.T)
  c_terms = np.ascontiguousarray(c_terms.T)
  inputs = np.zeros((3, count))
  last = np.zeros((3, count))
  before = np.zeros((3, count))
  out = np.empty((length + 2, count))
  for m in range(length + 2):
    inputs[0] = source[m] if m < length else 0.0
    inputs[1:] = last[:2]
    new = skewed_a[m] * inputs
    new += skewed_b[m] * last
    new += c_terms * before
    before, last = last, new
    out[m] = new[2]
  return out[2:].T


def segment_gate(length: int, spans, rise: int, fall: int) -> np.ndarray:
  """[length]: 1 inside the [start, end) `spans`, each with a raised-cosine rise over its
  first `rise` and fall over its last `fall` samples; 0 elsewhere."""
  gate = np.zeros(length)
  for start, end in spans:
    gate[start:end] = 1.0
    up = min(rise, (end - start) // 2)
    down = min(fall, (end - start) // 2)
    gate[start:start + up] = 0.5 * (1 - np.cos(np.pi * np.arange(up) / up))
    gate[end - down:end] = 0.5 * (1 + np.cos(np.pi * (np.arange(down) + 1) / down))
  return gate


def raised_cosine_envelope(length: int, ramp: int) -> np.ndarray:
  """Ones [length] with `ramp`-sample raised-cosine onset and offset."""
  envelope = np.ones(length)
  rising = 0.5 * (1 - np.cos(np.pi * np.arange(ramp) / ramp))
  envelope[:ramp] = rising
  envelope[length - ramp:] = rising[::-1]
  return envelope


def segment_mask(utterance: Utterance, segment: str) -> np.ndarray:
  """bool [length]: the samples of every syllable's `segment` (one of SEGMENTS)."""
  index = SEGMENTS.index(segment)
  mask = np.zeros(utterance.length, bool)
  for row in utterance.boundaries:
    mask[row[index]:row[index + 1]] = True
  return mask


@dataclasses.dataclass
class _Sources:
  """An utterance's excitations and vocal-tract coefficients (`_prepare`)."""
  f0: np.ndarray  # [length] Hz
  pulses: np.ndarray  # [length] the glottal flow derivative, unit RMS
  tract_source: np.ndarray  # [length] pulses + aspiration
  burst_noise: np.ndarray  # [length] white
  formants: np.ndarray  # [length, 3] Hz, the formant tracks
  terms: tuple[np.ndarray, np.ndarray, np.ndarray]  # (A [length, 3], B [length, 3], C [3])


def _prepare(utterance: Utterance, rng: np.random.Generator) -> _Sources:
  """Draws the jitter, aspiration and burst noise, in that order, and the tract's terms."""
  who = SPEAKERS[utterance.speaker]
  f0 = f0_contour(utterance, rng)
  pulses, glottis_open = glottal_pulses(f0, who.open_quotient)
  aspiration = rng.normal(size=utterance.length) * np.where(glottis_open, 1.0, 0.5)
  burst_noise = rng.normal(size=utterance.length)
  tracks = formant_tracks(utterance)
  return _Sources(f0=f0, pulses=pulses, tract_source=pulses + who.breathiness * aspiration,
                  burst_noise=burst_noise, formants=tracks,
                  terms=resonator_terms(tracks, utterance.bandwidths))


def _finish(utterance: Utterance, sources: _Sources, tract: np.ndarray,
            rng: np.random.Generator) -> np.ndarray:
  """The waveform float32 [MAX_LENGTH] from the vocal tract's output `tract` [length]: the
  lips' gate, the voice bar, the bursts, the envelope, the level and the background noise
  (the last draw of `rng`)."""
  length, who = utterance.length, SPEAKERS[utterance.speaker]
  vowel_rms = np.sqrt(np.mean(tract[segment_mask(utterance, "vowel")] ** 2))
  rows = utterance.boundaries
  lips = segment_gate(length, rows[:, [2, 4]], LIPS_OPEN, LIPS_CLOSE)
  voice_bar = scipy_signal.lfilter(
      *resonator_coefficients(utterance.voice_bar_hz, VOICE_BAR_BANDWIDTH), sources.pulses)
  closures = segment_mask(utterance, "closure")
  voice_bar *= (vowel_rms * 10 ** (VOICE_BAR_DB / 20)
                / np.sqrt(np.mean(voice_bar[closures] ** 2)))
  voice_bar *= segment_gate(length, rows[:, [0, 2]], VOICE_BAR_RAMP, VOICE_BAR_RAMP)
  bursts = np.zeros(length)
  for consonant, onset, (_, start, end, _, _) in zip(utterance.consonants, utterance.onsets,
                                                     rows):
    centre, bandwidth, level_db = burst_parameters(consonant, onset, who.scale)
    noise = scipy_signal.lfilter(*resonator_coefficients(centre, bandwidth),
                                 sources.burst_noise[start:end])
    envelope = np.exp(-BURST_DECAY * np.arange(end - start) / (end - start))
    rise = min(BURST_RISE, end - start)
    envelope[:rise] *= 0.5 * (1 - np.cos(np.pi * (np.arange(rise) + 1) / rise))
    noise *= envelope
    bursts[start:end] = noise * vowel_rms * 10 ** (level_db / 20) / np.sqrt(
        np.mean(noise ** 2))
  voice = tract * lips + voice_bar + bursts
  voice *= raised_cosine_envelope(length, int(RAMP_SECONDS * SAMPLE_RATE))
  gain = utterance.level / np.max(np.abs(voice))
  noise_rms = gain * vowel_rms * 10 ** (-utterance.snr_db / 20)
  waveform = np.zeros(MAX_LENGTH, np.float32)
  waveform[:length] = gain * voice + noise_rms * rng.normal(size=length)
  return waveform


@dataclasses.dataclass(frozen=True)
class Synthesised:
  """One rendered utterance: the stored waveform and what made it."""
  waveform: np.ndarray  # float32 [MAX_LENGTH], zeros after the utterance
  utterance: Utterance  # the drawn parameters, with the segment boundaries
  f0: np.ndarray  # [length] Hz, the contour the glottal source followed
  formants: np.ndarray  # [length, 3] Hz, the vocal tract's formant tracks


def synthesise_many(ids: Sequence[tuple[int, int, str, int]]) -> list[Synthesised]:
  """Renders the utterances of (speaker, vowel, split, repetition) `ids`, their vocal-tract
  filters batched; each is a pure function of its ids (as `synthesise`, bit for bit)."""
  results = []
  for first in range(0, len(ids), _CHUNK):
    chunk = []
    for speaker, vowel, split, repetition in ids[first:first + _CHUNK]:
      rng = utterance_rng(speaker, vowel, split, repetition)
      utterance = draw_utterance(rng, speaker, vowel)
      chunk.append((utterance, _prepare(utterance, rng), rng))
    longest = max(u.length for u, _, _ in chunk)
    source = np.zeros((len(chunk), longest))
    a_terms, b_terms = np.zeros((2, len(chunk), longest, 3))
    c_terms = np.zeros((len(chunk), 3))
    for row, (utterance, sources, _) in enumerate(chunk):
      source[row, :utterance.length] = sources.tract_source
      a_terms[row, :utterance.length], b_terms[row, :utterance.length], c_terms[row] = (
          sources.terms)
    tract = time_varying_cascade(source, a_terms, b_terms, c_terms)
    for row, (utterance, sources, rng) in enumerate(chunk):
      waveform = _finish(utterance, sources, tract[row, :utterance.length], rng)
      results.append(Synthesised(waveform=waveform, utterance=utterance, f0=sources.f0,
                                 formants=sources.formants))
  return results


def utterance_parameters(speaker: int, vowel: int, split: str, repetition: int
                         ) -> Utterance:
  """The drawn parameters of the utterance that `synthesise` renders for the same ids."""
  return draw_utterance(utterance_rng(speaker, vowel, split, repetition), speaker, vowel)


def synthesise(speaker: int, vowel: int, split: str, repetition: int
               ) -> tuple[np.ndarray, int]:
  """(waveform float32 [MAX_LENGTH], length): one utterance, a pure function of its ids."""
  result = synthesise_many([(speaker, vowel, split, repetition)])[0]
  return result.waveform, result.utterance.length


class Vowels(tfds.core.GeneratorBasedBuilder):
  """Synthesised consonant-vowel strings at 8 kHz (see the module docstring): 10 vowels x 12
  speakers, 1,440 train / 480 test utterances of up to 4000 samples."""

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release: 10 Peterson & Barney vowels, 12 speakers.",
      "2.0.0": ("Utterances of 3-4 stop-vowel syllables (b, d, g; one vowel each) with "
                "closures, bursts and time-varying formant transitions; `consonants` added."),
  }

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=("Strings of 3-4 voiced-stop + vowel syllables (ba-da-ga...; one vowel per "
                     "utterance) synthesised at 8 kHz by a Klatt-style cascade formant "
                     "synthesiser with time-varying formants, Peterson & Barney's vowel "
                     "formants, Delattre's loci and 12 synthetic speakers; label = the vowel, "
                     "speaker = the speaker, consonants = the stops' letters."),
        features=tfds.features.FeaturesDict({
            "signal": tfds.features.Tensor(shape=(MAX_LENGTH,), dtype=np.float32),
            "length": tfds.features.Scalar(dtype=np.int32),
            "label": tfds.features.ClassLabel(names=list(VOWELS)),
            "speaker": tfds.features.ClassLabel(names=[s.name for s in SPEAKERS]),
            "consonants": tfds.features.Text(),
        }),
        supervised_keys=("signal", "label"),
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """Synthesises both splits; `dl_manager` is unused because nothing is downloaded."""
    del dl_manager
    return {"train": self._generate_examples("train", TRAIN_REPETITIONS),
            "test": self._generate_examples("test", TEST_REPETITIONS)}

  def _generate_examples(self, split: str, repetitions: int
                         ) -> Iterator[tuple[int, dict[str, np.ndarray | int | str]]]:
    """Yields every (speaker, vowel, repetition) of `split`, keyed stably by those ids."""
    ids = [(speaker, vowel, split, repetition) for speaker in range(len(SPEAKERS))
           for vowel in range(len(VOWELS)) for repetition in range(repetitions)]
    for (speaker, vowel, _, repetition), result in zip(ids, synthesise_many(ids)):
      yield speaker * 10000 + vowel * 100 + repetition, {
          "signal": result.waveform, "length": result.utterance.length, "label": vowel,
          "speaker": speaker, "consonants": result.utterance.text}
