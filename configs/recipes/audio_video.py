"""Audio-video dataset recipes: the keys of the audio-video pipeline (clips with their sound)."""
import ml_collections

from configs.recipes.video import video_data

# Log-mel framing for 4 kHz sound: 64 ms windows every 32 ms, 40 mel bands up to 2 kHz (1 s
# gives 30 frames). The raw audio baseline and an audio tower read the same settings.
LOG_MEL_4KHZ = dict(window_length=256, hop_length=128, num_mels=40)


def audio_video_data(c: ml_collections.ConfigDict, dataset: str, video_key: str,
                     audio_key: str, label_key: str | None, num_frames: int, image_size: int,
                     channels: int, audio_length: int, sample_rate: int, **data) -> None:
  """The audio-video pipeline's keys (ssl_jax/data/audio_video_pipeline.py) for `dataset`:
  the video recipe's (frames on the [0, 1] scale, mean 0 / std 1), the sound's key, window
  (`audio_length` samples at `sample_rate` Hz, scaled by `audio_scale`: 1/32768 for int16) and
  log-mel framing; `data` overrides any of them."""
  c.data.audio_key = audio_key
  c.data.audio_length = audio_length
  c.data.sample_rate = sample_rate
  c.data.audio_scale = 1.0
  c.data.log_mel = ml_collections.ConfigDict(LOG_MEL_4KHZ)
  video_data(c, dataset, video_key, label_key, num_frames, image_size, channels,
             **{"modality": "audio_video", **data})
