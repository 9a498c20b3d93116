r"""Entry point: `python -m ssl_jax.main --config=configs/simclr.py:digits --workdir=W`.

Trains the configured objective in W (resuming if W holds a checkpoint of the same run,
`ssl_jax.train`) and, with `evaluate_at_end`, evaluates it (`ssl_jax.evaluate`). Any key can be overridden: `--config.batch_size=512`.
On a multi-host TPU/GPU pod pass `--distributed` (or the coordinator flags) so
`jax.distributed.initialize()` runs before any device is touched.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow only feeds data here.

from absl import app, flags, logging  # pylint: disable=g-import-not-at-top
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

from ssl_jax import command_line  # pylint: disable=g-import-not-at-top
from ssl_jax.errors import UserError  # pylint: disable=g-import-not-at-top
from ssl_jax.run import run  # pylint: disable=g-import-not-at-top

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/simclr.py:digits.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, eval report.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() (auto-detected on TPU pods, "
                                 "SLURM, Open MPI) before training.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0, for a multi-process run by hand.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a run by hand.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in a run by hand.")


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with config-file and override errors turned into one-line errors."""
  return command_line.parse_flags(argv, _CONFIG)


def main(argv):
  try:
    command_line.check_required(argv, _CONFIG.value, _WORKDIR.value)
    import jax  # pylint: disable=g-import-not-at-top
    if _DISTRIBUTED.value or _COORDINATOR.value:
      jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                                 num_processes=_NUM_PROCESSES.value,
                                 process_id=_PROCESS_ID.value)
    run(_CONFIG.value, _WORKDIR.value)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  logging.set_verbosity(logging.INFO)
  app.run(main, flags_parser=parse_flags)
