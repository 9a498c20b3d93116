r"""`python -m ssl_jax.sweep`: a grid of config overrides as ordinary runs, and a table of their
results with error bars.

    python -m ssl_jax.sweep --config=configs/simclr.py:digits --workdir=runs/temperature \
        --sweep=simclr.temperature=0.05,0.1,0.2,0.5 --sweep=batch_size=128,256 --seeds=3
    python -m ssl_jax.sweep --config=configs/simclr.py:digits --workdir=runs/temperature

The second command (the same workdir, no grid) continues the sweep `sweep.json` records:
finished trials are skipped, interrupted ones resume from their checkpoints, failed ones are
retried. Without `--sweep` flags the grid is the config module's `get_sweep(arg)` when it
has one. `--config.KEY=VALUE` overrides apply to every trial. Every trial's config is
checked before the first one starts. See `ssl_jax/sweep/runner.py` for the steps,
`launch.py` for the executors and `results.py` for the tables.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # pylint: disable=g-import-not-at-top
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

from ssl_jax import command_line  # pylint: disable=g-import-not-at-top
from ssl_jax.errors import UserError  # pylint: disable=g-import-not-at-top
from ssl_jax.sweep import launch, runner, trials as trials_lib  # pylint: disable=g-import-not-at-top

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. "
                                          "configs/simclr.py:digits.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep directory: sweep.json, one directory "
                               "per trial, results.md/.csv/.json.")
_CONFIGS = flags.DEFINE_multi_string("configs", [], "Config files as a swept axis instead of "
                                     "--config: SPEC or a glob such as configs/*.py:cifar10 "
                                     "(files without that variant are skipped).")
_REPRODUCE = flags.DEFINE_bool("reproduce", False, "Run only the configs that state published "
                                "targets (config.expected) and tabulate achieved vs expected.")
_SET = flags.DEFINE_multi_string("set", [], "KEY=VALUE: a config override for every trial "
                                  "(what --config.KEY=VALUE does for --config; with "
                                  "--configs, the way to override).")
_SWEEP = flags.DEFINE_multi_string("sweep", [], "KEY=V1,V2,...: a swept config key; several "
                                   "flags give their product.")
_SEEDS = flags.DEFINE_integer("seeds", None, "Training seeds per setting (config.seed, +1, ...).")
_EXECUTOR = flags.DEFINE_enum("executor", "local", launch.EXECUTORS,
                              "local: submitit processes on this machine; slurm: a submitit "
                              "array job; debug: in this process.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Trials running at once (local: processes "
                                 "sharing this machine's GPUs; slurm: array parallelism).")
_SLURM = flags.DEFINE_multi_string("slurm", [], "KEY=VALUE: a submitit SlurmExecutor "
                                   "parameter (partition, time, gpus_per_task, ...).")
_TIMEOUT = flags.DEFINE_float("timeout_min", 7 * 24 * 60, "Local executor: minutes a trial "
                              "may run.")
_METRICS = flags.DEFINE_string("metrics", None, "Report cells for the table, e.g. "
                               "linear@all,knn@all,label_propagation@1 (default: every ssl "
                               "cell of the reports).")


def main(argv):
  try:
    command_line.check_required(argv, _CONFIG.value if not _CONFIGS.value else True,
                                _WORKDIR.value)
    if _CONFIGS.value and _CONFIG.value is not None:
      raise UserError("give --config or --configs, not both (with --configs, override keys "
                      "with --set=KEY=VALUE)")
    spec, base, overrides = None, _CONFIG.value, runner.parse_assignments(_SET.value)
    if base is not None:
      spec = config_flags.get_config_filename(flags.FLAGS["config"])
      base = trials_lib.apply(base, overrides)
      overrides = {**config_flags.get_override_values(flags.FLAGS["config"]), **overrides}
    found = runner.run(spec, base, overrides, _WORKDIR.value, configs=_CONFIGS.value,
                       reproduce=_REPRODUCE.value,
                       sweep_flags=_SWEEP.value, seeds=_SEEDS.value, executor=_EXECUTOR.value,
                       parallel=_PARALLEL.value, slurm=_SLURM.value,
                       timeout_min=_TIMEOUT.value, metrics=_METRICS.value)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  with open(os.path.join(_WORKDIR.value, "results.md")) as f:
    print(f.read())
  if found["failed"]:
    sys.exit(1)


def parse_flags(argv: list[str]) -> list[str]:
  """absl parsing; a bad flag or config is one line and exit code 2."""
  return command_line.parse_flags(argv, _CONFIG)


if __name__ == "__main__":
  logging.set_verbosity(logging.INFO)
  app.run(main, flags_parser=parse_flags)
