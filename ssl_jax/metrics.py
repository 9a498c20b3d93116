"""Training metrics: JSONL + TensorBoard, and a readable log line with throughput and ETA.

Only process 0 writes. TensorBoard goes through clu's writers, which need TensorFlow; on a
machine without it (some accelerator images) the JSONL file is still written.
"""
import datetime
import json
import os
import time
from typing import Any

import jax
from absl import logging


class MetricsWriter:
  """Appends {"step": s, ...} rows to WORKDIR/metrics.jsonl and scalars to TensorBoard."""

  def __init__(self, workdir: str):
    self._active = jax.process_index() == 0
    self._jsonl_path = os.path.join(workdir, "metrics.jsonl")
    self._tensorboard = None
    if self._active:
      try:
        from clu import metric_writers  # pylint: disable=g-import-not-at-top
        self._tensorboard = metric_writers.SummaryWriter(os.path.join(workdir, "tensorboard"))
      except ImportError:
        logging.warning("TensorBoard writer unavailable (no TensorFlow); writing JSONL only")

  def write(self, step: int, scalars: dict[str, Any]) -> None:
    if not self._active:
      return
    row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    with open(self._jsonl_path, "a") as f:
      f.write(json.dumps(row) + "\n")
    if self._tensorboard is not None:
      self._tensorboard.write_scalars(int(step), {k: float(v) for k, v in scalars.items()})
      self._tensorboard.flush()

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()


class Throughput:
  """Images/s and ETA between log steps (wall-clock, includes input and host time)."""

  def __init__(self, start_step: int, total_steps: int, batch_size: int):
    self._total_steps = total_steps
    self._batch_size = batch_size
    self._last_step = start_step
    self._last_time = time.perf_counter()

  def update(self, step: int) -> dict[str, float]:
    now = time.perf_counter()
    seconds = max(now - self._last_time, 1e-9)
    steps_per_second = (step - self._last_step) / seconds
    self._last_step, self._last_time = step, now
    return {"images_per_second": steps_per_second * self._batch_size,
            "images_per_second_per_device": steps_per_second * self._batch_size / jax.device_count(),
            "eta_seconds": (self._total_steps - step) / max(steps_per_second, 1e-9)}


def log_line(step: int, total_steps: int, scalars: dict[str, float]) -> str:
  eta = datetime.timedelta(seconds=int(scalars["eta_seconds"]))
  parts = [f"step {step}/{total_steps}", f"loss {scalars['loss']:.4f}", f"lr {scalars['lr']:.3g}",
           f"{scalars['images_per_second']:.0f} img/s", f"ETA {eta}"]
  if "probe_accuracy" in scalars:
    parts.insert(3, f"probe acc {scalars['probe_accuracy']:.3f}")
  return " | ".join(parts)
