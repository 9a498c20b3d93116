"""Sequence dataset recipes: the keys of the sequence pipeline (sensor channels, audio)."""
import ml_collections


def sequence_data(c: ml_collections.ConfigDict, dataset: str, max_length: int,
                  **data) -> None:
  """The sequence pipeline's keys (ssl_jax/data/sequence_pipeline.py) for `dataset`."""
  c.dataset = dataset
  c.data.update(modality="sequence", num_views=1)
  c.data.signal_key = "signal"
  c.data.length_key = "length"
  c.data.max_length = max_length
  c.data.signal_scale = 1.0
  c.data.standardize = True
  c.data.stats_examples = 100_000
  # The `raw` baseline: "signal" (the flattened window) or "log_mel" (its log-mel spectrogram,
  # flattened: 25 ms windows every 10 ms, 40 mel bands, at `sample_rate`).
  c.data.raw_baseline = "signal"
  c.data.update(data)
  if c.data.get("sample_rate"):
    rate = c.data.sample_rate
    c.data.log_mel = ml_collections.ConfigDict(dict(
        window_length=round(0.025 * rate), hop_length=round(0.010 * rate), num_mels=40))
