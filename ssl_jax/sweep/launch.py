"""Running a sweep's trials through submitit (no scheduler of our own).

- `local`: `submitit.LocalExecutor`, each trial a separate process, `parallel` at a time; on
  a machine with GPUs each running trial sees its own `gpus // parallel` of them.
- `slurm`: `submitit.SlurmExecutor`, one array job with a task per trial (`--slurm=KEY=VALUE`
  gives submitit's SLURM parameters, e.g. partition, gpus_per_task, time); a preempted or
  timed-out task is requeued and continues from the trial's newest checkpoint.
- `debug`: every trial in this process, one after another (tests, debugging). submitit's own
  DebugExecutor opens pdb on an error, which a sweep must not do.

A trial writes `sweep_trial.json` in its workdir when it ends: "finished" with its wall time,
"failed" with its error's last line, or "interrupted" (stopped by SIGTERM after a
checkpoint). A rerun of the sweep skips finished trials and runs the others again: training
resumes from each trial's newest checkpoint, so an interrupted trial continues and a failed
one is retried. One failing trial never stops the others.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from typing import Any

import submitit

from ssl_jax.errors import UserError
from ssl_jax.sweep.trials import Trial

STATUS_FILE = "sweep_trial.json"
EXECUTORS = ("local", "slurm", "debug")


def read_status(trial_dir: str) -> dict:
  path = os.path.join(trial_dir, STATUS_FILE)
  if not os.path.exists(path):
    return {"status": "pending"}
  with open(path) as f:
    return json.load(f)


def _write_status(trial_dir: str, status: dict) -> None:
  os.makedirs(trial_dir, exist_ok=True)
  path = os.path.join(trial_dir, STATUS_FILE)
  with open(path + ".tmp", "w") as f:
    json.dump(status, f, indent=2)
  os.replace(path + ".tmp", path)


def _error_line(error: BaseException) -> str:
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return f"{type(error).__name__}: {lines[-1] if lines else ''}".rstrip(": ")


class TrialRun(submitit.helpers.Checkpointable):
  """One trial as a submitit job: `ssl_jax.run.run` (train, then evaluate) in its workdir.

  `Checkpointable`: on preemption or time-out submitit resubmits the same call, which
  resumes from the trial's newest checkpoint. Under SLURM the stop is graceful: submitit's
  signal (USR2, sent `signal_delay_s` before the time limit or by a preemption) first asks
  the trainer to save a checkpoint at the next step and stop, exactly as SIGTERM does; only
  then does submitit's own handler requeue the task and exit. A task stopped by SIGTERM
  alone (SLURM's own preemption or `scancel`) exits without a result, so the sweep keeps
  waiting for the requeued task instead of reading the stopped one as its answer."""

  def __call__(self, config, workdir: str) -> dict:
    from ssl_jax.run import run  # pylint: disable=g-import-not-at-top  (jax, in the worker)
    start = time.time()
    share_compilation_cache(workdir)
    previous = read_status(workdir)
    attempts = previous.get("attempts", 0) + 1
    timings = {}
    with _GracefulRequeue() as requeue:
      try:
        outcome = run(config, workdir, timings)
      except BaseException as e:  # pylint: disable=broad-except  (recorded, then re-raised)
        _write_status(workdir, {"status": "failed", "error": _error_line(e), "attempts": attempts,
                                "traceback": traceback.format_exc()[-4000:]})
        raise
    status = {"status": "finished" if outcome.completed else "interrupted", "attempts": attempts,
              "wall_seconds": previous.get("wall_seconds", 0.0) + time.time() - start,
              "train_seconds": previous.get("train_seconds", 0.0) + timings["train_seconds"],
              "eval_seconds": timings["eval_seconds"]}
    _write_status(workdir, status)
    if not outcome.completed:
      requeue.hand_over()
    return status


def share_compilation_cache(workdir: str) -> None:
  """In a trial's own process (local or SLURM), the trials of a sweep share JAX's persistent
  compilation cache, `SWEEP_WORKDIR/xla_cache`, unless the user set one
  (JAX_COMPILATION_CACHE_DIR): trials that differ only in evaluation settings or the seed
  compile the same programs, and all but the first read them (a tiny digits trial here: 25 s
  -> 11 s). The in-process debug executor leaves the calling process's JAX settings alone."""
  if os.environ.get("SUBMITIT_EXECUTOR") not in ("local", "slurm"):
    return
  import jax  # pylint: disable=g-import-not-at-top
  if jax.config.jax_compilation_cache_dir is None:
    jax.config.update("jax_compilation_cache_dir",
                      os.path.join(os.path.dirname(os.path.abspath(workdir)), "xla_cache"))


class _GracefulRequeue:
  """Under SLURM, while a trial trains: submitit's preemption signal is forwarded to the
  SIGTERM handler in force (the trainer's: checkpoint at the next step, then stop), and
  submitit's handler for it is kept for `hand_over`. Elsewhere it does nothing."""

  def __init__(self):
    self.signum = None
    self._submitit_handler = None
    self.received = False

  def __enter__(self):
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
      return self
    from submitit.slurm.slurm import SlurmJobEnvironment  # pylint: disable=g-import-not-at-top
    self.signum = SlurmJobEnvironment._usr_sig()  # pylint: disable=protected-access
    self._submitit_handler = signal.signal(self.signum, self._forward)
    return self

  def _forward(self, signum, frame):
    del signum
    self.received = True
    handler = signal.getsignal(signal.SIGTERM)
    if callable(handler):
      handler(signal.SIGTERM, frame)

  def __exit__(self, *exc):
    if self.signum is not None:
      signal.signal(self.signum, self._submitit_handler)

  def hand_over(self) -> None:
    """The trial stopped early under SLURM: requeue through submitit (after its signal), or
    exit without a result (after SIGTERM alone: SLURM requeues or cancels the task itself)."""
    if self.signum is None:
      return
    if self.received and callable(self._submitit_handler):
      self._submitit_handler(self.signum, None)  # checkpoints the call, requeues, exits
    raise SystemExit(-1)


def local_gpus() -> list[int]:
  """The GPU indices this machine offers (CUDA_VISIBLE_DEVICES, else `nvidia-smi -L`)."""
  visible = os.environ.get("CUDA_VISIBLE_DEVICES")
  if visible is not None:
    return [int(i) for i in visible.split(",") if i.strip().isdigit()]
  if shutil.which("nvidia-smi") is None:
    return []
  try:
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=True)
  except (OSError, subprocess.CalledProcessError):
    return []
  return list(range(sum(line.startswith("GPU ") for line in listing.stdout.splitlines())))


def run_debug(trials: list[tuple[Trial, str]]) -> dict[str, str]:
  """Every trial in this process; returns {trial name: error line} of those that failed."""
  failures = {}
  for trial, workdir in trials:
    try:
      TrialRun()(trial.config, workdir)
    except Exception as e:  # pylint: disable=broad-except  (one trial never stops the rest)
      failures[trial.name] = _error_line(e)
      print(f"trial {trial.name} failed: {failures[trial.name]}", file=sys.stderr)
  return failures


def run_local(trials: list[tuple[Trial, str]], folder: str, parallel: int,
              timeout_min: float, poll_seconds: float = 2.0) -> dict[str, str]:
  """Each trial a `submitit.LocalExecutor` process, `parallel` at a time, each with its slot's
  share of the GPUs; returns {trial name: error line} of those that failed."""
  executor = submitit.LocalExecutor(folder=folder)
  gpus = local_gpus()
  share = len(gpus) // parallel if gpus else 0
  slots = [gpus[i * share:(i + 1) * share] for i in range(parallel)]
  waiting, running, failures = list(trials), {}, {}
  while waiting or running:
    free = [slot for slot in range(parallel) if slot not in running.values()]
    while waiting and free:
      trial, workdir = waiting.pop(0)
      slot = free.pop(0)
      executor.update_parameters(timeout_min=timeout_min, gpus_per_node=share,
                                 visible_gpus=tuple(slots[slot]))
      job = executor.submit(TrialRun(), trial.config, workdir)
      running[(job, trial.name)] = slot
    time.sleep(poll_seconds)
    for job, name in [key for key in running if key[0].done()]:
      del running[(job, name)]
      try:
        job.result()
      except Exception as e:  # pylint: disable=broad-except  (submitit's FailedJobError)
        failures[name] = _last_error(e)
        print(f"trial {name} failed: {failures[name]}", file=sys.stderr)
  return failures


def _last_error(error: BaseException) -> str:
  """The worker's exception line from submitit's FailedJobError (which holds its traceback)."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  errors = [line for line in lines if ":" in line and line.split(":")[0].endswith(
      ("Error", "Exception"))]
  return errors[-1] if errors else (lines[-1] if lines else type(error).__name__)


def slurm_executor(folder: str, parameters: dict[str, Any], parallel: int
                   ) -> submitit.SlurmExecutor:
  """submitit's SLURM executor with the user's parameters (`--slurm=KEY=VALUE`) and at most
  `parallel` array tasks at once."""
  if submitit.SlurmExecutor.affinity() < 0:
    raise UserError("--executor=slurm needs a SLURM cluster: srun is not on this machine's "
                    "PATH (use --executor=local here)")
  executor = submitit.SlurmExecutor(folder=folder)
  try:
    executor.update_parameters(array_parallelism=parallel, **parameters)
  except ValueError as e:  # submitit names the unknown parameter and the valid ones
    raise UserError(f"--slurm: {str(e).splitlines()[0]}") from None
  return executor


def run_slurm(trials: list[tuple[Trial, str]], executor: submitit.SlurmExecutor,
              max_poll_seconds: float = 10.0) -> dict[str, str]:
  """One array job, a task per trial; waits for them; returns the failed trials' lines.

  The wait polls every second at first and backs off to `max_poll_seconds`; a poll reads the
  task's result file, and submitit itself rate-limits its `sacct` calls."""
  jobs = executor.map_array(TrialRun(), [t.config for t, _ in trials], [w for _, w in trials])
  print(f"submitted array job {jobs[0].job_id.split('_')[0]} ({len(jobs)} trials)", flush=True)
  failures, poll = {}, 1.0
  for job, (trial, _) in zip(jobs, trials):
    while not job.done():
      time.sleep(poll)
      poll = min(2 * poll, max_poll_seconds)
    try:
      job.result()
    except Exception as e:  # pylint: disable=broad-except
      failures[trial.name] = _last_error(e)
  return failures
