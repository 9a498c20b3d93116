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
  c.data.update(data)
