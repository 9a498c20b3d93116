"""audio_video: the sounding_digits builder (sizes, determinism, the note's pitch, a click at
each bounce and nowhere else, loudness by height), the log-mel spectrogram against NumPy, the
audio-video pipeline (exact resumption, padded evaluation, the sound aligned with the frames
of a dataset of variable-length clips with int16 stereo at another rate), and the modality's
batches and raw baselines."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal
import tensorflow_datasets as tfds

from configs.common import base_config
from configs.recipes.audio_video import audio_video_data
from ssl_jax import modalities
from ssl_jax.data import inputs as inputs_lib
from ssl_jax.data import stream
from ssl_jax.data.builders import digits, moving_digits, sounding_digits
from ssl_jax.errors import UserError
from ssl_jax.modalities import audio_video
from ssl_jax.models import spectrogram
from tests.tiny_configs import override

FUNDAMENTALS = (200, 225, 255, 290, 330, 375, 425, 480, 545, 620)  # Hz, digits 0..9
_SAMPLES_PER_FRAME = 400  # 4 kHz sound, 10 frames per second


def _config(data_dir, **dotted):
  config = base_config()
  audio_video_data(config, "sounding_digits", "frames", "audio", "label", 10, 32, 1, 4000, 4000)
  return override(config, **{"data.data_dir": data_dir, "batch_size": 128, **dotted})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("tfds"))
  stream.load_builder(_config(directory))  # prepares sounding_digits offline
  return directory


@pytest.fixture(scope="module")
def test_split(data_dir):
  """The stored test split: frames, audio, labels, and each clip's digit index (found from
  its frames, which the moving_digits clip of that index reproduces)."""
  builder = tfds.builder("sounding_digits", data_dir=data_dir)
  clips = tfds.as_numpy(builder.as_dataset(split="test", batch_size=-1))
  images, _, indices = digits.load_split_indices()
  by_frames = {moving_digits.moving_digit(images[i], "test", i).tobytes(): int(i)
               for i in indices["test"]}
  clips["index"] = np.array([by_frames[f.tobytes()] for f in clips["frames"]])
  return clips


def _motion(split, index):
  """(corners, velocities) of a clip, drawn as the builder draws them."""
  rng = np.random.default_rng((7, {"train": 0, "test": 1}[split], int(index)))
  return moving_digits.trajectory(rng, 10, 16, with_velocities=True)


# The builder.

def test_builder_sizes_shapes_classes_and_determinism(data_dir, test_split):
  builder = tfds.builder("sounding_digits", data_dir=data_dir)
  assert {s: builder.info.splits[s].num_examples for s in ("train", "test")} == {
      "train": 1257, "test": 540}
  features = builder.info.features
  assert features["frames"].shape == (10, 32, 32, 1) and features["frames"].np_dtype == np.uint8
  assert features["audio"].shape == (4000,) and features["audio"].np_dtype == np.float32
  assert features["label"].num_classes == 10
  assert dict(builder.info.metadata) == {"sample_rate": 4000, "frame_rate": 10}
  images, labels, indices = digits.load_split_indices()
  test_counts = np.bincount(test_split["label"], minlength=10)
  np.testing.assert_array_equal(test_counts, [54, 55, 53, 55, 54, 55, 54, 54, 52, 54])
  np.testing.assert_array_equal(test_counts, np.bincount(labels[indices["test"]], minlength=10))
  train_labels = tfds.as_numpy(builder.as_dataset(split="train", batch_size=-1))["label"]
  np.testing.assert_array_equal(np.bincount(train_labels, minlength=10),
                                np.bincount(labels[indices["train"]], minlength=10))
  assert sorted(test_split["index"]) == sorted(indices["test"])  # every clip, once
  audio = test_split["audio"]
  assert audio.dtype == np.float32 and 0.5 < np.abs(audio).max() < 1.0  # never clipped
  # Preparing is deterministic: each stored clip and sound is the synthesis of its digit.
  for row in range(0, 540, 45):
    index = test_split["index"][row]
    frames, sound = sounding_digits.sounding_digit(images[index], int(labels[index]), "test",
                                                   index)
    np.testing.assert_array_equal(test_split["frames"][row], frames)
    np.testing.assert_array_equal(test_split["audio"][row], sound)
    assert test_split["label"][row] == labels[index]
    # The frames are the moving_digits clip, rendered along the motion that makes the sound.
    corners, _ = _motion("test", index)
    sprite = images[index].repeat(2, axis=0).repeat(2, axis=1)
    np.testing.assert_array_equal(frames, moving_digits.render(sprite, corners, 32))
  _, train_sound = sounding_digits.sounding_digit(images[index], int(labels[index]), "train",
                                                  index)
  assert not np.allclose(train_sound, test_split["audio"][row])


def test_the_note_is_the_digits_fundamental(test_split):
  """The FFT peak of every test clip's sound (clicks included: 6 ms bursts against a 1 s
  note) is the digit's fundamental from the table, within its 1% detune and the 1 Hz bins."""
  audio = test_split["audio"].astype(np.float64)
  spectrum = np.abs(np.fft.rfft(audio * np.hanning(4000), axis=1))
  peaks = np.fft.rfftfreq(4000, 1 / 4000)[spectrum.argmax(axis=1)]
  fundamentals = np.array(FUNDAMENTALS)[test_split["label"]]
  error = np.abs(peaks / fundamentals - 1)
  assert error.max() < 0.02, error.max()
  assert 0.002 < np.median(error) < 0.01  # detuned: uniform in +-1%


def _reversals(corners, velocities):
  """Reference bounce samples: where the sampled continuous path turns back (an instant
  between two samples shows at the later one), and sample 0 for a start on a wall heading
  out of the canvas."""
  times = np.arange(4000) / _SAMPLES_PER_FRAME
  positions = sounding_digits.path(corners, velocities, times)
  steps = np.diff(positions, axis=0)
  turns = np.any((steps[1:] * steps[:-1] < 0) | ((steps[1:] != 0) & (steps[:-1] == 0)), axis=1)
  found = set((np.nonzero(turns)[0] + 1).tolist())
  if np.any(((corners[0] == 0) & (velocities[0] < 0)) | ((corners[0] == 16) &
                                                        (velocities[0] > 0))):
    found.add(0)
  return np.array(sorted(found))


def test_bounce_times_are_where_the_path_turns_back():
  """For 600 clips of both splits: the documented formula (t + p / |v|, t + (R - p) / v,
  rounded to a sample) against the sampled continuous path, to one sample (a third of a frame
  is 133.3 samples)."""
  counts = []
  for split, index in itertools.product(("train", "test"), range(300)):
    corners, velocities = _motion(split, index)
    expected = _reversals(corners, velocities)
    got = sounding_digits.bounce_samples(corners, velocities)
    assert len(got) == len(expected) and np.abs(got - expected).max(initial=0) <= 1, (
        split, index, got, expected)
    counts.append(len(got))
  assert min(counts) == 0 and max(counts) >= 4


def _click_envelope(audio):
  """The mean square over 4 ms of the audio high-passed at 1.5 kHz (8th-order Butterworth,
  forwards and backwards, the clip zero-padded): above every harmonic (< 1.42 kHz)."""
  sos = signal.butter(8, 1500, "highpass", fs=4000, output="sos")
  padded = np.pad(audio.astype(np.float64), ((0, 0), (256, 256)))
  high = signal.sosfiltfilt(sos, padded, axis=1, padtype=None)[:, 256:-256]
  return signal.fftconvolve(high ** 2, np.full((1, 16), 1 / 16), mode="same", axes=1)


def test_a_click_at_every_bounce_and_nowhere_else(test_split):
  """Every test clip: the envelope's peaks above a fixed level are each within 5 ms (20
  samples) of a computed bounce sample, and every bounce has one."""
  envelope = _click_envelope(test_split["audio"])
  threshold = 4e-4  # the noise stays below 2.5e-4; the weakest click of the dataset reaches 6e-4
  bounces_per_clip, errors = [], []
  for row, index in enumerate(test_split["index"]):
    bounces = sounding_digits.bounce_samples(*_motion("test", index))
    above = envelope[row] > threshold
    edges = np.flatnonzero(np.diff(np.concatenate([[0], above.astype(int), [0]])))
    peaks = [start + np.argmax(envelope[row, start:end])
             for start, end in zip(edges[::2], edges[1::2])]
    for peak in peaks:  # no peak away from a bounce
      assert len(bounces) and np.abs(bounces - peak).min() <= 20, (index, peak, bounces)
    for bounce in bounces:  # no bounce without its click
      distances = np.abs(np.array(peaks, int) - bounce)
      assert len(peaks) and distances.min() <= 20, (index, bounce, peaks)
      errors.append(distances.min())
    bounces_per_clip.append(len(bounces))
  assert np.bincount(bounces_per_clip)[0] >= 5  # clips without a bounce are silent up there
  assert max(bounces_per_clip) >= 4 and np.median(errors) <= 4


def test_loudness_follows_the_digits_height(test_split):
  """Over each frame's tenth of a second without a click, the RMS of the note (audio below
  1.45 kHz) is 0.15 * gain, gain = 0.3 + 0.7 * (1 - row / 16) at the middle of the frame,
  within 10% (noise at 20-40 dB adds at most 0.5%)."""
  sos = signal.butter(8, 1450, "lowpass", fs=4000, output="sos")
  low = signal.sosfiltfilt(sos, test_split["audio"].astype(np.float64), axis=1)
  ratios, heights = [], []
  for row, index in enumerate(test_split["index"][:100]):
    corners, velocities = _motion("test", index)
    bounces = sounding_digits.bounce_samples(corners, velocities)
    for frame in range(1, 9):  # away from the fades at both ends
      start = frame * _SAMPLES_PER_FRAME
      if np.any((bounces > start - 30) & (bounces < start + _SAMPLES_PER_FRAME)):
        continue
      height = sounding_digits.path(corners, velocities, np.array([frame + 0.5]))[0, 0]
      gain = 0.3 + 0.7 * (1 - height / 16)
      rms = np.sqrt(np.mean(low[row, start:start + _SAMPLES_PER_FRAME] ** 2))
      ratios.append(rms / (0.15 * gain))
      heights.append(height)
  ratios = np.array(ratios)
  assert len(ratios) > 500 and np.abs(ratios - 1).max() < 0.1, np.abs(ratios - 1).max()
  assert np.ptp(heights) >= 14  # from the top of the canvas to the bottom


# The log-mel spectrogram.

def _reference_log_mel(waveform, sample_rate, window_length, hop_length, num_mels, fmin, fmax):
  """From the definitions, by loops: periodic Hann frames without padding, |rfft|^2, HTK
  triangles between mel-spaced corners, log(x + 1e-6)."""
  mel = lambda hz: 2595 * np.log10(1 + hz / 700)
  hz = lambda m: 700 * (10 ** (m / 2595) - 1)
  corners = hz(np.linspace(mel(fmin), mel(fmax), num_mels + 2))
  window = np.array([0.5 - 0.5 * np.cos(2 * np.pi * n / window_length)
                     for n in range(window_length)])
  filters = np.zeros((window_length // 2 + 1, num_mels))
  for k in range(window_length // 2 + 1):
    f = k * sample_rate / window_length
    for m in range(num_mels):
      left, centre, right = corners[m:m + 3]
      if left <= f <= centre:
        filters[k, m] = (f - left) / (centre - left)
      elif centre < f <= right:
        filters[k, m] = (right - f) / (right - centre)
  rows = []
  for start in range(0, len(waveform) - window_length + 1, hop_length):
    power = np.abs(np.fft.rfft(waveform[start:start + window_length] * window)) ** 2
    rows.append(np.log(power @ filters + 1e-6))
  return np.array(rows)


@pytest.mark.parametrize("settings", [
    dict(sample_rate=4000, window_length=256, hop_length=128, num_mels=40, fmin=0.0,
         fmax=None),
    dict(sample_rate=16000, window_length=400, hop_length=160, num_mels=64, fmin=60.0,
         fmax=7600.0),
])
def test_log_mel_matches_numpy(settings):
  rng = np.random.default_rng(0)
  length = 4000
  waveform = 0.3 * rng.standard_normal((2, 3, length)) + np.sin(
      2 * np.pi * 440 * np.arange(length) / settings["sample_rate"])
  got = jax.jit(lambda x: spectrogram.log_mel_spectrogram(x, **settings))(
      jnp.asarray(waveform, jnp.float32))
  frames = 1 + (length - settings["window_length"]) // settings["hop_length"]
  assert got.shape == (2, 3, frames, settings["num_mels"]) and got.dtype == jnp.float32
  assert spectrogram.num_frames(length, settings["window_length"],
                                settings["hop_length"]) == frames
  fmax = settings["fmax"] or settings["sample_rate"] / 2
  for index in ((0, 0), (1, 2)):
    expected = _reference_log_mel(waveform[index], settings["sample_rate"],
                                  settings["window_length"], settings["hop_length"],
                                  settings["num_mels"], settings["fmin"], fmax)
    np.testing.assert_allclose(got[index], expected, atol=1e-4)


def test_log_mel_frame_count():
  assert spectrogram.num_frames(4000, 256, 128) == 30  # the sounding_digits default
  assert spectrogram.num_frames(256, 256, 128) == 1
  assert spectrogram.num_frames(383, 256, 128) == 1 and spectrogram.num_frames(384, 256, 128) == 2
  with pytest.raises(ValueError, match="shorter than"):
    spectrogram.num_frames(255, 256, 128)


# The pipeline on sounding_digits.

def test_pipeline_shapes_resumes_exactly_and_pads_evaluation(data_dir, test_split):
  config = _config(data_dir)
  inputs = inputs_lib.Inputs(config)
  info = inputs.info()
  assert info.input_shape == (10, 32, 32, 1) and info.num_classes == 10
  assert (info.num_train_examples, info.num_test_examples) == (1257, 540)
  stream_from = lambda start, count: list(itertools.islice(inputs.train_batches(
      start_step=start, process_index=0, process_count=1), count))
  whole, resumed = stream_from(0, 11), stream_from(8, 3)  # 9 steps an epoch: crosses one
  for expected, got in zip(whole[8:], resumed):
    assert set(got) == {"frames", "audio", "label"}
    for key in got:
      np.testing.assert_array_equal(expected[key], got[key], err_msg=key)
  batch = whole[0]
  assert batch["frames"].dtype == np.uint8 and batch["frames"].shape == (128, 10, 32, 32, 1)
  assert batch["audio"].dtype == np.float32 and batch["audio"].shape == (128, 4000)
  assert batch["label"].dtype == np.int32 and not np.array_equal(batch["label"],
                                                                 whole[9]["label"])
  train = tfds.as_numpy(tfds.builder("sounding_digits", data_dir=data_dir).as_dataset(
      split="train", batch_size=-1))
  sound_of = {frames.tobytes(): audio for frames, audio in zip(train["frames"], train["audio"])}
  for frames, audio in zip(batch["frames"], batch["audio"]):  # each clip with its own sound
    np.testing.assert_array_equal(audio, sound_of[frames.tobytes()])

  batches = list(inputs.eval_batches("test", batch_size=256))
  assert len(batches) == 3 and sum(int(b["mask"].sum()) for b in batches) == 540
  last = batches[-1]
  assert last["mask"][:28].all() and not last["mask"][28:].any()
  assert not last["frames"][28:].any() and not last["audio"][28:].any()
  evaluated = np.concatenate([b["audio"] for b in batches])[:540]
  np.testing.assert_array_equal(evaluated, test_split["audio"])  # in order, whole clips
  np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches])[:540],
                                test_split["label"])


# The pipeline on a user's own dataset: variable-length videos, int16 stereo at another rate.

_LENGTHS = (12, 15, 18, 21)  # frames at 30 fps; the sound has 1000 / 30 samples a frame


class AlignedClips(tfds.core.GeneratorBasedBuilder):
  """Clips whose content says when it is: every pixel of frame k is 10 k, and the int16 stereo
  sound at 1 kHz has 1000 k' +- (7 + n mod 3) in its two channels at sample n, k' = floor(3n /
  100) the frame shown then (so the mean of the channels is 1000 k'). Label: which length."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "video": tfds.features.Tensor(shape=(None, 10, 14, 3), dtype=np.uint8),
        "audio": tfds.features.Audio(shape=(None, 2), dtype=np.int16, sample_rate=1000),
        "label": tfds.features.ClassLabel(num_classes=len(_LENGTHS)),
    }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(range(12)),
            "test": self._generate_examples(range(12, 16))}

  def _generate_examples(self, keys):
    for key in keys:
      label = key % len(_LENGTHS)
      num_frames = _LENGTHS[label]
      video = np.broadcast_to(10 * np.arange(num_frames, dtype=np.uint8)[:, None, None, None],
                              (num_frames, 10, 14, 3))
      samples = np.arange(num_frames * 100 // 3)
      shown, wobble = 1000 * (3 * samples // 100), 7 + samples % 3
      audio = np.stack([shown + wobble, shown - wobble], axis=1).astype(np.int16)
      yield key, {"video": np.ascontiguousarray(video), "audio": audio, "label": label}


@pytest.fixture(scope="module")
def aligned_config(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("aligned"))
  tfds.builder("aligned_clips", data_dir=directory).download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  config = base_config()
  # 4 frames every 2nd (a span of 7 frames, 233 samples), 300 samples: 9 frames' worth, so a
  # window that starts late runs past the end of the sound.
  audio_video_data(config, "aligned_clips", "video", "audio", "label", 4, 8, 3, 300, 1000,
                   frame_stride=2, audio_scale=1 / 32768)
  return override(config, **{"data.data_dir": directory, "batch_size": 4})


def _expected_sound(first_frame, label, audio_length=300):
  """The window of AlignedClips' sound from the instant of `first_frame`, as floats."""
  num_frames = _LENGTHS[label]
  num_samples = num_frames * 100 // 3
  samples = round(first_frame * num_samples / num_frames) + np.arange(audio_length)
  return np.where(samples < num_samples, 1000 * (3 * samples // 100), 0) / 32768


def test_sound_is_aligned_with_the_frames_of_variable_length_stereo_clips(aligned_config):
  inputs = inputs_lib.Inputs(aligned_config)
  assert inputs.info().input_shape == (4, 8, 8, 3)
  batches = list(itertools.islice(inputs.train_batches(start_step=0, process_index=0,
                                                       process_count=1), 12))  # 4 epochs
  starts, padded = [], 0
  for batch in batches:
    assert batch["frames"].shape == (4, 4, 8, 8, 3) and batch["audio"].shape == (4, 300)
    assert batch["audio"].dtype == np.float32
    for frames, audio, label in zip(batch["frames"], batch["audio"], batch["label"]):
      first = int(frames[0, 0, 0, 0]) // 10
      np.testing.assert_array_equal(frames.reshape(4, -1).T,
                                    np.broadcast_to(10 * (first + 2 * np.arange(4)), (192, 4)))
      # Mono (the channels' mean), scaled by 1/32768, from the instant frame `first` is shown.
      np.testing.assert_allclose(audio, _expected_sound(first, label), atol=1e-7)
      starts.append(first)
      padded += audio[-1] == 0
  assert len(set(starts)) >= 5 and padded >= 3  # random starts; some windows run past the end
  evaluated = list(inputs.eval_batches("test", batch_size=3))
  assert [b["mask"].tolist() for b in evaluated] == [[True] * 3, [True, False, False]]
  for batch in evaluated:
    for frames, audio, label, real in zip(batch["frames"], batch["audio"], batch["label"],
                                          batch["mask"]):
      if real:  # evaluation: the first clip of each video, from sample 0
        assert frames[:, 0, 0, 0].tolist() == [0, 20, 40, 60]
        np.testing.assert_allclose(audio, _expected_sound(0, label), atol=1e-7)


@pytest.mark.parametrize("dotted,message", [
    ({"data.audio_key": "sound"}, "has no feature 'sound'"),
    ({"data.sample_rate": 16000}, "stores 'audio' at 1000 Hz"),
    ({"data.audio_length": 0}, "audio_length must be >= 1"),
    ({"data.audio_key": "label"}, "not \\[A\\] or \\[A, channels\\]"),
])
def test_bad_audio_settings_are_one_line_errors(aligned_config, dotted, message):
  config = override(aligned_config.copy_and_resolve_references(), **dotted)
  with pytest.raises(UserError, match=message):
    inputs_lib.Inputs(config).info()


# The modality.

def test_modality_batches_paired_inputs_and_raw_baselines(data_dir, test_split):
  config = _config(data_dir)
  modality = modalities.find(config)
  assert modality is audio_video.MODALITY
  assert (modality.kind, modality.paired_kind) == ("video", "audio")
  example = modality.example_batch(config, (10, 32, 32, 1), 3)
  assert {k: (v.shape, v.dtype) for k, v in example.items()} == {
      "frames": ((3, 10, 32, 32, 1), jnp.float32), "audio": ((3, 4000), jnp.float32)}
  assert modality.nominal_input_shape(config, 1) == (10, 32, 32, 1)
  synthetic = modality.synthetic_batch(config, (10, 32, 32, 1), 5, np.random.default_rng(0))
  assert {k: (v.shape, v.dtype) for k, v in synthetic.items()} == {
      "frames": ((5, 10, 32, 32, 1), np.uint8), "audio": ((5, 4000), np.float32),
      "label": ((5,), np.int32)}

  batch = next(iter(inputs_lib.Inputs(config).eval_batches("test", batch_size=8)))
  preprocessed = modality.device_preprocess(jax.random.PRNGKey(0), batch, config)
  np.testing.assert_allclose(preprocessed["frames"], batch["frames"] / 255.0, rtol=1e-6)
  np.testing.assert_array_equal(preprocessed["audio"], batch["audio"])
  assert set(modality.represent_inputs(preprocessed)) == {"frames"}
  clips, paired, valid = modality.paired_inputs(batch)
  assert set(clips) == {"frames", "audio", "mask"} and set(paired) == {"audio"}
  np.testing.assert_array_equal(paired["audio"], test_split["audio"][:8])
  assert valid.shape == (8, 1) and valid.dtype == jnp.bool_ and bool(valid.all())

  raw_audio = jax.jit(modality.raw_paired_features(config))(paired)
  assert raw_audio.shape == (8, 30 * 40) and raw_audio.dtype == jnp.float32
  log_mel = spectrogram.log_mel_spectrogram(jnp.asarray(paired["audio"]), 4000, 256, 128, 40)
  np.testing.assert_array_equal(raw_audio, np.asarray(log_mel).reshape(8, -1))
  np.testing.assert_allclose(
      raw_audio[1].reshape(30, 40),
      _reference_log_mel(test_split["audio"][1].astype(np.float64), 4000, 256, 128, 40, 0.0,
                         2000.0), atol=1e-4)
  raw_frames = modality.raw_features(config)(modality.eval_inputs(batch))
  np.testing.assert_allclose(raw_frames, batch["frames"].reshape(8, -1) / 255.0, rtol=1e-6)

  _, labels, indices = digits.load_split_indices()
  np.testing.assert_array_equal(modality.label_counts(config),
                                np.bincount(labels[indices["train"]], minlength=10))
