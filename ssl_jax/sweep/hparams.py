"""The sweep for TensorBoard's HParams dashboard: `tensorboard --logdir WORKDIR` then shows
every trial's training curves and, in the HParams tab, a table (and parallel-coordinates
view) of the swept keys against the chosen report cells.

Written with TensorBoard's own protos and event writer (no TensorFlow session needed):
`WORKDIR/hparams/` holds the experiment's configuration (the swept keys, the metrics) and
`WORKDIR/hparams/<trial>/` each finished trial's setting and report cells (accuracy in %,
as tags `eval/<cell>`). Rewritten whole each time the results are.
"""
import os
import shutil
import time

from ssl_jax.sweep.results import cell_values

DIRECTORY = "hparams"


def _write(logdir: str, summary) -> None:
  from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top
  from tensorboard.summary.writer.event_file_writer import EventFileWriter  # pylint: disable=g-import-not-at-top
  writer = EventFileWriter(logdir)
  writer.add_event(event_pb2.Event(wall_time=time.time(), step=0, summary=summary))
  writer.close()


def _value(value):
  """HParams take bool, number or string values: anything else (a tuple) as its text."""
  return value if isinstance(value, (bool, int, float, str)) else repr(value)


def write(sweep_dir: str, found: dict, settings: dict[str, dict], cells: dict[str, dict]
          ) -> None:
  """`settings`: {trial name: setting}; `cells`: {trial name: {cell name: accuracy %}} of
  the finished trials."""
  from tensorboard.compat.proto import summary_pb2  # pylint: disable=g-import-not-at-top
  from tensorboard.plugins.hparams import api as hp  # pylint: disable=g-import-not-at-top
  root = os.path.join(sweep_dir, DIRECTORY)
  shutil.rmtree(root, ignore_errors=True)
  keys = sorted({key for setting in settings.values() for key in setting})
  metrics = [f"eval/{name}" for name in found["metrics"]]
  _write(root, hp.hparams_config_pb(hparams=[hp.HParam(key) for key in keys],
                                    metrics=[hp.Metric(tag) for tag in metrics]))
  for trial, values in cells.items():
    logdir = os.path.join(root, trial)
    setting = {key: _value(value) for key, value in settings[trial].items()}
    _write(logdir, hp.hparams_pb(setting, trial_id=trial))
    _write(logdir, summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag=f"eval/{name}", simple_value=accuracy)
        for name, accuracy in values.items()]))


def trial_cells(report: dict, names: list[str]) -> dict[str, float]:
  """{cell name: accuracy in %} of `report` for the table's cells."""
  values = cell_values(report)
  return {name: values[name] for name in names if name in values}
