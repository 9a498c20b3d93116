r"""Per-device memory of a training step before it is queued: compiled ahead of time for N
fake CPU devices, with no data and no training (no TensorFlow needed).

    python experiments/plan.py --config=configs/mae.py:imagenet2012 --devices=64 \
        --mesh=data:8,fsdp:8 --set encoder.size=large [--precision=bfloat16] [--remat=blocks] \
        [--grad_accum_steps=4]

Builds the real `ssl_jax.train.Trainer` for the config on a mesh of `--devices` fake CPU
devices (`--mesh`, as `config.mesh`), lowers its jitted step on abstract arrays (the state's
shapes and shardings from `config.sharding_rules`, a batch of the pipeline's shapes) and
compiles it. Prints one JSON object: XLA's memory analysis per device (argument, output,
temporary and aliased bytes), the state's bytes per device by part (parameters, optimizer
state, the method's extra state such as EMA targets and queues), FLOPs per step per device,
and for each named accelerator whether the state fits (exact: the same shapes and shardings on
any backend) and whether XLA:CPU's peak (arguments + temporaries + outputs not aliased to
arguments) would.

The temporaries are XLA:CPU's buffer assignment, not an accelerator's. Measured here
(`experiments/cpu_remat_memory.py`, ViT-B/16,
16 images, one device): the backward pass took 3.28 GB of temporaries with every activation
kept and 3.28 GB with every activation recomputed (`jax.checkpoint`, nothing saved), against
0.41 GB for the forward alone, so on CPU they do not show what rematerialisation saves; the
FLOPs do (about a third more). Read `peak_fits` as a rough bound, `state_fits` as exact.
"""
import argparse
import ast
import json
import os
import sys

# Accelerator memory per device, in bytes (vendors' data sheets).
ACCELERATORS = {"TPU v3 core (16 GB)": 16e9, "TPU v4 (32 GB)": 32e9, "H100 (80 GB)": 80e9,
                "H200 (141 GB)": 141e9}


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True, help="config spec, e.g. configs/mae.py:digits")
  parser.add_argument("--devices", type=int, default=8, help="fake CPU devices to plan for")
  parser.add_argument("--mesh", default=None, help="config.mesh, e.g. data:8,fsdp:8")
  parser.add_argument("--batch_size", type=int, default=None, help="global batch override")
  parser.add_argument("--precision", default=None, help="config.precision: float32, bfloat16")
  parser.add_argument("--remat", default=None, help="config.remat: none, blocks")
  parser.add_argument("--grad_accum_steps", type=int, default=None,
                      help="config.grad_accum_steps: microbatches per step")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="a config override (dotted key, Python literal or string); repeatable")
  return parser.parse_args(argv)


def apply_overrides(config, overrides: list[str], mesh: str | None,
                    batch_size: int | None, **policy) -> None:
  """`--set KEY=VALUE` items, then the named flags (`policy`: precision, remat,
  grad_accum_steps; None leaves the config's)."""
  config.unlock()
  for item in overrides:
    key, _, text = item.partition("=")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    *parents, last = key.split(".")
    section = config
    for name in parents:
      section = section[name]
    section[last] = value
  if mesh:
    config.mesh = mesh
  if batch_size:
    config.batch_size = batch_size
  for key, value in policy.items():
    if value is not None:
      config[key] = value


def state_bytes_per_device(abstract_state) -> dict[str, int]:
  """Bytes of each top-level part of the state held by one device (a leaf split n ways holds
  1/n of its bytes on each)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  totals = {}
  for part, tree in abstract_state.items():
    total = 0
    for leaf in jax.tree.leaves(tree):
      shard = leaf.sharding.shard_shape(leaf.shape)
      total += int(np.prod(shard, dtype=np.int64)) * leaf.dtype.itemsize
    totals[part] = total
  return totals


def plan(args: argparse.Namespace) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from experiments.benchmark import CHANNELS, load_config  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top
  from ssl_jax import config_lib, methods, modalities, parallel, train

  config = load_config(args.config)
  apply_overrides(config, args.set, args.mesh, args.batch_size, precision=args.precision,
                  remat=args.remat, grad_accum_steps=args.grad_accum_steps)
  mesh = parallel.make_mesh(config.mesh)
  config_lib.check_batch_size(config.batch_size, mesh.size, 1)
  length = config_lib.TrainingLength(steps_per_epoch=1000, total_steps=100_000,
                                     schedule_steps=100_000)
  modality = modalities.find(config)
  shape = modality.nominal_input_shape(config, CHANNELS.get(config.dataset, 3))
  trainer = train.Trainer(config, methods.build(config, length), mesh, shape, num_classes=10,
                          length=length)
  one = modality.synthetic_batch(config, shape, 1, np.random.default_rng(0))
  batch_sharding = parallel.batch_sharded(mesh)
  batch = {key: jax.ShapeDtypeStruct((config.batch_size, *value.shape[1:]), value.dtype,
                                     sharding=batch_sharding) for key, value in one.items()}
  compiled = trainer.train_step.lower(trainer.abstract_state, batch).compile()
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  state = state_bytes_per_device(trainer.abstract_state)
  state_total = sum(state.values())
  peak = (memory.argument_size_in_bytes + memory.temp_size_in_bytes
          + memory.output_size_in_bytes - memory.alias_size_in_bytes)
  return {
      "config": args.config, "overrides": args.set, "devices": mesh.size,
      "mesh": dict(zip(mesh.axis_names, (int(n) for n in mesh.devices.shape))),
      "batch_size": config.batch_size, "input_shape": list(shape),
      "precision": config.precision, "remat": config.remat,
      "grad_accum_steps": config.grad_accum_steps,
      "parameters": int(sum(np.prod(leaf.shape) for leaf in
                            jax.tree.leaves(trainer.abstract_state["params"]))),
      "per_device_bytes": {
          "params": state["params"], "opt_state": state["opt_state"], "extra": state["extra"],
          "arguments": memory.argument_size_in_bytes, "outputs": memory.output_size_in_bytes,
          "aliased": memory.alias_size_in_bytes, "temporaries": memory.temp_size_in_bytes,
          "state": state_total, "peak": peak},
      # XLA's cost analysis counts a loop's body once: with microbatches (a scan) the step's
      # FLOPs would show as one microbatch's, so they are not reported.
      "gflops_per_step_per_device": (round(float(cost.get("flops", 0.0)) / 1e9, 1)
                                     if cost and config.grad_accum_steps == 1 else None),
      "state_fits": {name: bool(state_total <= capacity)
                     for name, capacity in ACCELERATORS.items()},
      "peak_fits": {name: bool(peak <= capacity) for name, capacity in ACCELERATORS.items()},
  }


def main(argv=None):
  args = parse_args(argv)
  os.environ["JAX_PLATFORMS"] = "cpu"  # plan on fake CPU devices, also on a GPU machine
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={args.devices}")
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from ssl_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  try:
    print(json.dumps(plan(args)), flush=True)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main()
