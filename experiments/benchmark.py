r"""Train-step throughput on synthetic data (no TensorFlow needed): images/s and MFU.

    python experiments/benchmark.py                         # digits + ResNet-18 CIFAR SimCLR
    python experiments/benchmark.py --config=configs/simclr.py:cifar10 --batch_size=512
    python experiments/benchmark.py --config=configs/mlm.py:python_docs   # text: rows/s

Times the real jitted train step of `ssl_jax.train.Trainer` (device augmentation, forward,
backward, optimizer, online probe) on random uint8 views already on the devices, so it
measures the step, not the input pipeline. FLOPs per step come from XLA's cost analysis of the
compiled step; MFU = achieved FLOP/s / the device's peak (known accelerators only, or
--peak_tflops). Prints one JSON line per config.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from ssl_jax import config_lib, methods, modalities, parallel, train

# Dense bf16 peak FLOP/s per device, from the vendors' data sheets.
PEAK_FLOPS = {"NVIDIA H100": 989e12, "NVIDIA H200": 989e12, "NVIDIA A100": 312e12,
              "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5p": 459e12}

# Channels of each dataset's images (the benchmark skips the pipeline that would read them).
CHANNELS = {"digits": 1, "cifar10": 3, "imagenet2012": 3, "photos": 3}


def load_config(spec: str):
  """'configs/simclr.py:digits' -> the config its get_config returns."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("benchmark_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def peak_flops(device) -> float | None:
  for name, flops in PEAK_FLOPS.items():
    if device.device_kind.startswith(name):
      return flops
  return None


def benchmark(spec: str, batch_size: int | None, steps: int, warmup: int,
              peak_tflops: float | None) -> dict:
  config = load_config(spec)
  if batch_size:
    config.unlock()
    config.batch_size = batch_size
  mesh = parallel.make_mesh(config.mesh)
  length = config_lib.TrainingLength(steps_per_epoch=100, total_steps=steps + warmup,
                                     schedule_steps=steps + warmup)
  local = config.batch_size // jax.process_count()
  modality = modalities.find(config)
  shape = modality.nominal_input_shape(config, CHANNELS.get(config.dataset, 3))
  host_batch = modality.synthetic_batch(config, shape, local, np.random.default_rng(0))
  trainer = train.Trainer(config, methods.build(config, length), mesh, shape,
                          num_classes=10, length=length)
  batch = parallel.global_batch(host_batch, mesh)
  state = trainer.create_state(config.seed)
  compiled = trainer.train_step.lower(state, batch).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops_per_step = float(cost.get("flops", 0.0)) if cost else 0.0
  for _ in range(warmup):
    state, measurements = trainer.train_step(state, batch)
  jax.block_until_ready(measurements)
  started = time.perf_counter()
  for _ in range(steps):
    state, measurements = trainer.train_step(state, batch)
  jax.block_until_ready(measurements)
  seconds = (time.perf_counter() - started) / steps
  device = jax.devices()[0]
  peak = peak_tflops * 1e12 if peak_tflops else peak_flops(device)
  # cost_analysis reports the per-device program; the step runs on every device at once.
  achieved = flops_per_step / seconds if flops_per_step else None
  network = config.get("encoder") or config.get("transformer")
  return {"config": spec, "method": config.method, "encoder": dict(network),
          "batch_size": config.batch_size, "input_shape": list(shape),
          "devices": jax.device_count(), "device_kind": device.device_kind,
          "step_ms": round(seconds * 1e3, 2),
          "images_per_second": round(config.batch_size / seconds, 1),
          "images_per_second_per_device": round(config.batch_size / seconds / jax.device_count(), 1),
          "gflops_per_step_per_device": round(flops_per_step / 1e9, 2) if flops_per_step else None,
          "mfu": round(achieved / peak, 4) if achieved and peak else None}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", action="append",
                      help="config spec; repeatable (default: simclr digits and cifar10)")
  parser.add_argument("--batch_size", type=int, default=None, help="override the global batch")
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--peak_tflops", type=float, default=None,
                      help="device peak for MFU when the device is not in the known table")
  args = parser.parse_args()
  for spec in args.config or ["configs/simclr.py:digits", "configs/simclr.py:cifar10"]:
    print(json.dumps(benchmark(spec, args.batch_size, args.steps, args.warmup,
                               args.peak_tflops)), flush=True)


if __name__ == "__main__":
  main()
