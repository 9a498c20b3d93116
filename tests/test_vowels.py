"""The embedded `vowels` dataset: documented sizes, utterances as pure functions of their ids,
what a listener's analysis finds in the waveform against the synthesiser's own timeline (f0 by
autocorrelation and F1/F2 by LPC on steady vowels, near-silent closures, F2 moving from the
d locus to the vowel, frames that change over an utterance), the padding, and the sequence
pipeline reading it for CPC."""
import os
import time

import numpy as np
import pytest
from scipy import signal as scipy_signal
import tensorflow_datasets as tfds

from configs import cpc as cpc_config
from ssl_jax.data import inputs as inputs_lib
from ssl_jax.data import sequence_pipeline
from ssl_jax.data.builders import vowels
from ssl_jax.models import spectrogram
from tests.tiny_configs import override

MAN, CHILD = 0, 11  # man_1 (100 Hz), child_4 (300 Hz)
MEN = (0, 1, 2, 3)
IY, AA, UW = (vowels.VOWELS.index(v) for v in ("iy", "aa", "uw"))
D = vowels.CONSONANTS.index("d")
FS = vowels.SAMPLE_RATE
FRAME = FS // 100  # 10 ms
_NOISE_TOLERANCE = 0.05  # the background noise (SNR >= 20 dB) can move the peak this far
_OFFSET = int(vowels.RAMP_SECONDS * FS)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def builder(data_dir):
  """The dataset prepared once for the module (5-10 s on one core; printed with -s)."""
  builder = tfds.builder("vowels", data_dir=data_dir)
  start = time.perf_counter()
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  print(f"\nvowels prepared in {time.perf_counter() - start:.1f} s")
  return builder


@pytest.fixture(scope="module")
def test_split():
  """Every test-split utterance with its timeline (`vowels.synthesise_many`)."""
  return vowels.synthesise_many(
      [(speaker, vowel, "test", repetition) for speaker in range(12) for vowel in range(10)
       for repetition in range(vowels.TEST_REPETITIONS)])


def _read(builder, split):
  return tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))


def _steady_segments(utterance: vowels.Utterance) -> list[tuple[int, int]]:
  """Each syllable's steady vowel [start, end): its vowel segment without the lips' closing
  ramp (or, for the last syllable, the utterance's offset ramp)."""
  rows = utterance.boundaries
  ends = rows[:, 4] - vowels.LIPS_CLOSE
  ends[-1] = rows[-1, 4] - _OFFSET
  return [(int(start), int(end)) for start, end in zip(rows[:, 3], ends)]


def _steady(utterance: vowels.Utterance) -> tuple[int, int]:
  """The longest steady vowel of the utterance."""
  return max(_steady_segments(utterance), key=lambda span: span[1] - span[0])


def _f0_by_autocorrelation(segment: np.ndarray) -> float:
  """f0 (Hz) at the autocorrelation peak over lags of 70-400 Hz, low-passed at 1 kHz (the
  high formants, near Nyquist, otherwise favour even lags)."""
  lowpass = scipy_signal.butter(4, 1000, fs=FS, output="sos")
  smooth = scipy_signal.sosfiltfilt(lowpass, segment.astype(np.float64))
  smooth = smooth - smooth.mean()
  autocorrelation = np.correlate(smooth, smooth, "full")[len(smooth) - 1:]
  shortest, longest = int(np.ceil(FS / 400)), FS // 70
  lag = shortest + np.argmax(autocorrelation[shortest:longest + 1])
  return FS / lag


def _lpc(frames: list[np.ndarray], order: int) -> np.ndarray:
  """The prediction-error polynomial [order + 1] of an LPC fit by the autocorrelation method
  (Markel & Gray 1976) to `frames`, each pre-emphasised and Hamming-windowed, their
  autocorrelations summed (one fit to several stretches of the same vowel)."""
  r = np.zeros(order + 1)
  for frame in frames:
    frame = frame.astype(np.float64)
    frame = np.append(frame[0], frame[1:] - 0.97 * frame[:-1]) * np.hamming(len(frame))
    r += np.array([frame[:len(frame) - k] @ frame[k:] for k in range(order + 1)])
  toeplitz = r[np.abs(np.arange(order)[:, None] - np.arange(order)[None, :])]
  return np.concatenate([[1.0], -np.linalg.solve(toeplitz, r[1:])])


def _lpc_formants(frames: list[np.ndarray], order: int = 12) -> np.ndarray:
  """Resonances (Hz, ascending, bandwidth < 400 Hz) of an LPC fit. Order 12: the 2 + fs / 1 kHz
  = 10 of the vocal tract, plus a pole pair that takes up the white noise floor above F3
  instead of pulling F2 away."""
  roots = np.roots(_lpc(frames, order))
  roots = roots[roots.imag > 0]
  frequencies = np.angle(roots) * FS / (2 * np.pi)
  bandwidths = -np.log(np.abs(roots)) * FS / np.pi
  return np.sort(frequencies[(frequencies > 90) & (bandwidths < 400)])


def _lpc_peak(segment: np.ndarray, low: float, high: float = 2600.0) -> float:
  """The frequency (Hz) of the highest peak of an order-10 LPC envelope between `low` and
  `high`: F2 picked on a short (12.5 ms) window, where the roots' bandwidths are unreliable."""
  grid = np.arange(low, high, 10.0)
  _, response = scipy_signal.freqz(1.0, _lpc([segment], 10), worN=grid, fs=FS)
  return float(grid[np.argmax(np.abs(response))])


def _frame_db(segment: np.ndarray) -> float:
  return float(10 * np.log10(np.mean(segment.astype(np.float64) ** 2) + 1e-20))


def test_builder_prepares_the_documented_splits(builder, data_dir):
  info = builder.info
  assert (info.splits["train"].num_examples, info.splits["test"].num_examples) == (1440, 480)
  assert info.features["signal"].shape == (4000,)
  assert info.features["label"].names == list(vowels.VOWELS)
  assert info.features["speaker"].num_classes == 12
  assert isinstance(info.features["consonants"], tfds.features.Text)
  assert info.supervised_keys == ("signal", "label")
  for split, per_vowel, per_speaker in (("train", 144, 120), ("test", 48, 40)):
    data = _read(builder, split)
    np.testing.assert_array_equal(np.bincount(data["label"], minlength=10), [per_vowel] * 10)
    np.testing.assert_array_equal(np.bincount(data["speaker"], minlength=12),
                                  [per_speaker] * 12)
    assert 1500 <= data["length"].min() and data["length"].max() <= 4000
    texts = [t.decode() for t in data["consonants"]]
    assert {len(t) for t in texts} == {3, 4} and set("".join(texts)) == set("bdg")
  files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(data_dir, "vowels"))
           for f in fs]
  size = sum(os.path.getsize(f) for f in files)
  print(f"\nvowels on disk: {size / 1e6:.1f} MB")
  assert 28e6 < size < 34e6  # 1,920 x 4000 float32 = 30.7 MB of signal, as documented


def test_stored_utterances_are_the_synthesised_ones(builder):
  data = _read(builder, "test")
  chosen = (data["speaker"] == CHILD) & (data["label"] == AA)
  stored = sorted(zip(data["length"][chosen], data["consonants"][chosen],
                      map(tuple, data["signal"][chosen])))
  results = vowels.synthesise_many([(CHILD, AA, "test", r) for r in range(4)])
  expected = sorted((r.utterance.length, r.utterance.text.encode(), tuple(r.waveform))
                    for r in results)
  assert [s[:2] for s in stored] == [e[:2] for e in expected]
  np.testing.assert_array_equal(np.array([s[2] for s in stored]),
                                np.array([e[2] for e in expected]))


def test_an_utterance_is_a_pure_function_of_its_ids():
  first, length = vowels.synthesise(3, 4, "train", 5)
  again, length_again = vowels.synthesise(3, 4, "train", 5)
  np.testing.assert_array_equal(first, again)
  assert length == length_again
  batched = vowels.synthesise_many([(3, 4, "train", r) for r in (4, 5, 6)])[1]
  np.testing.assert_array_equal(first, batched.waveform)  # the batched filters are exact
  other, _ = vowels.synthesise(3, 4, "train", 6)
  test_utterance, _ = vowels.synthesise(3, 4, "test", 5)
  assert np.max(np.abs(first - other)) > 0.1 and np.max(np.abs(first - test_utterance)) > 0.1


def test_drawn_parameters_stay_in_their_documented_ranges():
  for speaker, who in enumerate(vowels.SPEAKERS):
    for vowel in range(10):
      for repetition in range(2):
        u = vowels.utterance_parameters(speaker, vowel, "train", repetition)
        assert len(u.consonants) in (3, 4) and set(u.text) <= set("bdg")
        assert abs(u.f0 / who.f0 - 1) <= 0.08
        assert np.all(u.formants <= vowels.MAX_FORMANT)
        unclipped = u.formants < vowels.MAX_FORMANT
        ratio = u.formants[unclipped] / (vowels.FORMANTS[vowel][unclipped] * who.scale)
        assert np.all(np.abs(ratio - 1) <= 0.04)
        # The rate: the speaker's tempo x U(0.9, 1.1), lower only when squeezed into 4000.
        assert u.rate <= 1.1 * who.tempo + 1e-9
        if u.compressed:
          assert u.length == vowels.MAX_LENGTH
        else:
          assert u.rate >= 0.9 * who.tempo - 1e-9 and u.length <= vowels.MAX_LENGTH
        # Segments tile the utterance, each its nominal range x the rate (+-1 sample).
        rows = u.boundaries
        assert rows[0, 0] == 0 and np.all(rows[1:, 0] == rows[:-1, 4])
        nominal_ms = np.diff(rows, axis=1) / (u.rate * FS) * 1000
        slack = 1000 / (u.rate * FS)
        assert np.all(nominal_ms >= vowels.DURATIONS_MS[:, 0] - slack)
        assert np.all(nominal_ms <= vowels.DURATIONS_MS[:, 1] + slack)
        for consonant, onset in zip(u.text, u.onsets):  # Delattre's loci x the scale
          assert onset[0] == min(250 * who.scale, u.formants[0])
          if consonant == "b":
            assert onset[1] == 800 * who.scale
          elif consonant == "d":
            assert onset[1] == 1800 * who.scale
          else:
            assert onset[1] == pytest.approx(min(1.1 * u.formants[1], vowels.MAX_FORMANT))
          assert onset[1] < onset[2] <= vowels.MAX_FORMANT
  # iy's F3 (3010 Hz) scaled by a child's 1.35 would pass 3700 Hz: it is clipped there.
  assert vowels.utterance_parameters(CHILD, IY, "train", 0).formants[2] == vowels.MAX_FORMANT


def test_time_varying_cascade_is_the_direct_recursion():
  """The skewed, vectorised cascade against the recursion written out sample by sample, and,
  with fixed coefficients, against scipy.signal.lfilter."""
  rng = np.random.default_rng(0)
  source = rng.normal(size=(2, 300))
  tracks = np.stack([np.linspace(250, 700, 300), np.linspace(1800, 900, 300),
                     np.full(300, 2500.0)], axis=1)
  a, b, c = vowels.resonator_terms(tracks, vowels.BANDWIDTHS)
  a_terms, b_terms = np.stack([a, a[::-1]]), np.stack([b, b[::-1]])
  c_terms = np.stack([c, c])
  out = vowels.time_varying_cascade(source, a_terms, b_terms, c_terms)
  for row in range(2):
    signal = source[row]
    for k in range(3):
      y = np.zeros(302)  # two zeros of history, then the output
      for n in range(300):
        y[n + 2] = (a_terms[row, n, k] * signal[n] + b_terms[row, n, k] * y[n + 1]
                    + c_terms[row, k] * y[n])
      signal = y[2:]
    np.testing.assert_allclose(out[row], signal, rtol=1e-12, atol=1e-12)
  fixed = np.broadcast_to(tracks[150], (300, 3))
  a, b, c = vowels.resonator_terms(fixed, vowels.BANDWIDTHS)
  out = vowels.time_varying_cascade(source[:1], a[None], b[None], c[None])
  expected = source[0]
  for frequency, bandwidth in zip(tracks[150], vowels.BANDWIDTHS):
    expected = scipy_signal.lfilter(*vowels.resonator_coefficients(frequency, bandwidth),
                                    expected)
  np.testing.assert_allclose(out[0], expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("speaker", [MAN, CHILD])
def test_autocorrelation_finds_the_f0_of_a_steady_vowel(speaker):
  results = vowels.synthesise_many([(speaker, vowel, "train", repetition)
                                    for vowel in (IY, AA, UW) for repetition in range(2)])
  for result in results:
    start, end = _steady(result.utterance)
    assert end - start >= 200  # 25 ms at least: 2.5 periods of the lowest f0
    measured = _f0_by_autocorrelation(result.waveform[start:end])
    expected = result.f0[start:end].mean()
    assert abs(measured / expected - 1) < 0.10, (result.utterance.vowel, measured, expected)


def test_lpc_finds_the_first_two_formants_of_the_steady_vowels_of_men():
  """One LPC fit to the steady vowels of an utterance (all the same vowel). F1 is always within
  12%. iy's F2 lies 20-25 dB under its F1, as much as the white background noise at the
  lowest SNRs, so F2 is asserted where the noise is 25 dB down and for 90% overall."""
  results = vowels.synthesise_many([(speaker, vowel, "train", repetition)
                                    for speaker in MEN for vowel in (IY, AA, UW)
                                    for repetition in range(4)])
  both = []
  for result in results:
    u = result.utterance
    found = _lpc_formants([result.waveform[a:b] for a, b in _steady_segments(u)])
    message = f"{u.speaker} {vowels.VOWELS[u.vowel]} {u.text} {u.snr_db:.1f} dB: {found}"
    assert len(found) >= 1 and abs(found[0] / u.formants[0] - 1) < 0.12, message
    f2_found = len(found) >= 2 and abs(found[1] / u.formants[1] - 1) < 0.12
    if u.snr_db >= 25:
      assert f2_found, message
    both.append(f2_found)
  print(f"\nLPC: F1 and F2 within 12% in {np.mean(both):.0%} of {len(both)} men's utterances")
  assert np.mean(both) >= 0.9


def test_closures_are_near_silent(test_split):
  """10 ms frames inside closures against the steady vowel's frames of the same utterance: the
  voice bar is 25 dB down, so they are at least 20 dB down wherever the background noise is
  (SNR >= 25 dB); at SNR 20-25 dB the noise floor itself is 20-25 dB down, so there every
  closure frame is still at least 16 dB down."""
  gaps = []
  for result in test_split:
    u, waveform = result.utterance, result.waveform
    start, end = _steady(u)
    vowel_db = np.median([_frame_db(waveform[s:s + FRAME])
                          for s in range(start, end - FRAME + 1, FRAME)])
    closure_db = np.array([_frame_db(waveform[s:s + FRAME]) for closure, burst in
                           u.boundaries[:, :2] for s in range(closure, burst - FRAME + 1, FRAME)])
    assert len(closure_db) >= 1
    assert np.all(closure_db <= vowel_db - 16), (u.speaker, u.vowel, u.snr_db, closure_db)
    mean_gap = 10 * np.log10(np.mean(10 ** (closure_db / 10))) - vowel_db
    if u.snr_db >= 25:
      assert mean_gap <= -20, (u.speaker, u.vowel, u.snr_db, mean_gap)
    gaps.append(mean_gap)
  print(f"\nclosure frames re steady vowel frames: median {np.median(gaps):.1f} dB, "
        f"loudest utterance {np.max(gaps):.1f} dB")
  assert np.median(gaps) <= -22


@pytest.mark.parametrize("vowel", [AA, UW])
def test_f2_moves_from_the_d_locus_to_the_vowel(vowel):
  """F2 on the first and last 12.5 ms of each d transition of men: nearer the 1800 Hz locus
  (x the speaker's scale) than the back vowel's F2 at the start, nearer the vowel's at the end;
  for the median syllable and, short-window LPC being noisy, for most of them."""
  results = vowels.synthesise_many([(speaker, vowel, "train", repetition)
                                    for speaker in MEN for repetition in range(12)])
  window = FS // 80
  starts, ends = [], []
  for result in results:
    u = result.utterance
    locus = 1800 * vowels.SPEAKERS[u.speaker].scale
    target = u.formants[1]
    low = 0.5 * (u.formants[0] + target)  # between F1 and F2: above F1, below both F2s
    for consonant, (_, _, release, steady, _) in zip(u.consonants, u.boundaries):
      if consonant != D:
        continue
      assert steady - release >= window
      first = _lpc_peak(result.waveform[release:release + window], low)
      last = _lpc_peak(result.waveform[steady - window:steady], low)
      starts.append(abs(first - locus) < abs(first - target))
      ends.append(abs(last - target) < abs(last - locus))
      # The synthesiser's own track agrees: onset at the locus, the target at the end.
      assert result.formants[release, 1] == pytest.approx(locus)
      assert result.formants[steady, 1] == pytest.approx(target)
  assert len(starts) >= 40
  print(f"\n{vowels.VOWELS[vowel]}: {len(starts)} d transitions, F2 nearer the locus at the "
        f"start in {np.mean(starts):.0%}, nearer the vowel at the end in {np.mean(ends):.0%}")
  assert np.mean(starts) >= 0.75 and np.mean(ends) >= 0.75


def test_frames_change_over_an_utterance(test_split):
  """The log-mel frames (25 ms every 10 ms, 40 bands: the `log_mel` baseline's) of a whole
  utterance spread out far more than those of its steady vowel, which were all that a
  sustained vowel (version 1.0.0) had."""
  chosen = test_split[::4]
  bands = np.asarray(spectrogram.log_mel_spectrogram(
      np.stack([r.waveform for r in chosen]), FS, FS // 40, FRAME, 40))
  starts = FRAME * np.arange(bands.shape[1])  # each frame covers [start, start + FS // 40)
  spread = lambda b: np.mean(np.sum((b - b.mean(axis=0)) ** 2, axis=1))
  ratios = []
  for result, frames in zip(chosen, bands):
    u = result.utterance
    start, end = _steady(u)
    recorded = frames[starts + FS // 40 <= u.length]
    steady = frames[(starts >= start) & (starts + FS // 40 <= end)]
    if len(steady) >= 2:
      ratios.append(spread(recorded) / spread(steady))
  print(f"\nlog-mel spread, utterance / steady vowel: median {np.median(ratios):.1f}, "
        f"least {np.min(ratios):.1f}")
  assert len(ratios) >= 100 and np.median(ratios) >= 8 and np.min(ratios) >= 3


def test_length_padding_and_peak_level(builder):
  data = _read(builder, "test")
  for waveform, length in zip(data["signal"], data["length"]):
    assert np.flatnonzero(waveform)[-1] + 1 == length
    assert np.all(waveform[length:] == 0)
    assert 0.3 - _NOISE_TOLERANCE <= np.max(np.abs(waveform)) <= 0.9 + _NOISE_TOLERANCE


def test_sequence_pipeline_reads_the_raw_waveforms(builder, data_dir):
  config = cpc_config.get_config("vowels,runlocal=True")
  config.unlock()
  override(config, **{"data.data_dir": data_dir})
  info = sequence_pipeline.dataset_info(config)
  assert info.input_shape == (4000, 1) and info.num_classes == 10
  assert (info.num_train_examples, info.num_test_examples) == (1440, 480)
  batch = next(iter(inputs_lib.Inputs(config).eval_batches("test", batch_size=64)))
  stored = next(iter(tfds.as_numpy(builder.as_dataset(split="test", batch_size=64))))
  np.testing.assert_array_equal(batch["signal"][..., 0], stored["signal"])  # as is: scale 1
  np.testing.assert_array_equal(batch["length"], stored["length"])
  np.testing.assert_array_equal(batch["label"], stored["label"])


def test_eval_label_key_probes_the_speaker_of_the_training_dataset(data_dir, builder):
  from ssl_jax import evaluate, modalities  # pylint: disable=g-import-not-at-top
  config = override(cpc_config.get_config("vowels,runlocal=True"), **{"data.data_dir": data_dir})
  config.unlock()
  assert evaluate.probe_config(config) is config  # no eval.dataset, no eval.label_key
  config.eval.label_key = "speaker"
  probed = evaluate.probe_config(config)
  assert probed.data.label_key == "speaker" and probed.dataset == "vowels"
  counts = modalities.find(probed).label_counts(probed)
  np.testing.assert_array_equal(counts, np.full(12, 120))  # 12 speakers, 120 each
