"""Tiny versions of the shipped configs, for tests that must run in seconds on 2 CPU cores."""
import importlib

import ml_collections

from configs import simclr


def override(config: ml_collections.ConfigDict, **dotted) -> ml_collections.ConfigDict:
  """override(c, **{"optimizer.lr": 0.1}) sets nested keys by dotted path."""
  for path, value in dotted.items():
    *parents, last = path.split(".")
    section = config
    for name in parents:
      section = section[name]
    section[last] = value
  return config


def tiny_digits(data_dir: str, **dotted) -> ml_collections.ConfigDict:
  """The digits SimCLR config with a 2-stage 8/16-wide CNN and 32-example batches."""
  config = simclr.get_config("digits")
  config.unlock()
  override(config, **{
      "encoder.widths": (8, 16), "projector.hidden_dim": 32, "projector.output_dim": 16,
      "batch_size": 32, "total_steps": 6, "log_every_steps": 2, "checkpoint_every_steps": 3,
      "optimizer.warmup_steps": 2, "data.data_dir": data_dir, "evaluate_at_end": False,
      "eval.labels_per_class": (1, 0), "eval.seeds": 2})
  return override(config, **dotted)


# Each joint-embedding method's digits config, shrunk to a 2-stage 8/16-wide CNN with small heads.
JOINT_EMBEDDING = {
    "simclr": ("simclr", "digits", {"projector.hidden_dim": 32, "projector.output_dim": 16}),
    "byol": ("byol", "digits", {"projector.hidden_dim": 32, "projector.output_dim": 16,
                                "predictor.hidden_dim": 32, "predictor.output_dim": 16}),
    "moco_v2": ("moco", "digits", {"projector.hidden_dim": 32, "projector.output_dim": 16,
                                   "moco.queue_size": 64}),
    "moco_v3": ("moco", "digits,version=3", {
        "projector.hidden_dim": 32, "projector.output_dim": 16, "predictor.hidden_dim": 32,
        "predictor.output_dim": 16}),
    "simsiam": ("simsiam", "digits", {"projector.hidden_dim": 32, "projector.output_dim": 32,
                                      "predictor.hidden_dim": 8, "predictor.output_dim": 32}),
    "dino": ("dino", "digits", {"head.hidden_dim": 32, "head.bottleneck_dim": 16,
                                "head.output_dim": 64, "data.local_views": 2}),
    "barlow_twins": ("barlow_twins", "digits", {"projector.hidden_dim": 32,
                                                "projector.output_dim": 32}),
    "vicreg": ("vicreg", "digits", {"projector.hidden_dim": 32, "projector.output_dim": 32}),
}


def tiny_method(name: str, data_dir: str, **dotted) -> ml_collections.ConfigDict:
  """`JOINT_EMBEDDING[name]`'s digits config, tiny, with 32-example batches."""
  module, arg, heads = JOINT_EMBEDDING[name]
  config = importlib.import_module(f"configs.{module}").get_config(arg)
  config.unlock()
  override(config, **{
      "encoder.widths": (8, 16), "batch_size": 32, "total_steps": 6, "log_every_steps": 2,
      "checkpoint_every_steps": 3, "optimizer.warmup_steps": 2, "data.data_dir": data_dir,
      "evaluate_at_end": False, "eval.labels_per_class": (1, 0), "eval.seeds": 2, **heads})
  return override(config, **dotted)
