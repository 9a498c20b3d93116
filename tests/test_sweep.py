"""Sweeps (`python -m ssl_jax.sweep`): grids from flags or a config's `get_sweep`, bad grids
refused before anything runs, a grid of tiny digits runs through submitit's local executor
(a table whose means and stds are those of the trials' reports; reruns that skip finished
trials, resume an interrupted one and retry a failed one), the SLURM array job submitit would
submit, and a real 2-task array on a one-node SLURM cluster with a preempted, requeued task."""
import functools
import glob
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from ssl_jax.errors import UserError
from ssl_jax.sweep import launch, product, results, runner, sweep, trials, zip_
import one_node_slurm
from tiny_configs import override, tiny_digits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = "configs/simclr.py:digits"


def test_grid_helpers_combine_settings():
  temperatures = sweep("simclr.temperature", [0.1, 0.2])
  assert product([temperatures, sweep("seed", [0, 1])]) == [
      {"simclr.temperature": 0.1, "seed": 0}, {"simclr.temperature": 0.1, "seed": 1},
      {"simclr.temperature": 0.2, "seed": 0}, {"simclr.temperature": 0.2, "seed": 1}]
  assert zip_([temperatures, sweep("batch_size", [64, 128])]) == [
      {"simclr.temperature": 0.1, "batch_size": 64},
      {"simclr.temperature": 0.2, "batch_size": 128}]
  assert trials.parse_flag("encoder.widths=(8, 16),(16,32)") == [
      {"encoder.widths": (8, 16)}, {"encoder.widths": (16, 32)}]
  assert trials.parse_flag("encoder.name=vit,resnet") == [
      {"encoder.name": "vit"}, {"encoder.name": "resnet"}]
  assert trials.trial_name({"simclr.temperature": 0.1, "encoder.widths": (8, 16),
                            "seed": 0}) == "temperature=0.1,widths=8-16,seed=0"
  assert trials.trial_name({"a.width": 1, "b.width": 2}) == "a.width=1,b.width=2"


def test_a_config_modules_get_sweep_and_the_flags_give_the_same_trials(tmp_path):
  module = tmp_path / "simclr_sweep.py"
  module.write_text(
      "import sys\nsys.path.insert(0, %r)\n" % ROOT
      + "from configs.simclr import get_config\nfrom ssl_jax import sweep as hyper\n\n"
      "def get_sweep(arg):\n"
      "  return hyper.product([hyper.sweep('simclr.temperature', [0.1, 0.5]),\n"
      "                        hyper.sweep('batch_size', [32, 64])])\n")
  base = tiny_digits(str(tmp_path))
  from_config = runner.plan(f"{module}:digits", base, {}, str(tmp_path / "a"), [], seeds=2)
  from_flags = runner.plan(SPEC, base, {}, str(tmp_path / "b"),
                           ["simclr.temperature=0.1,0.5", "batch_size=32,64"], seeds=2)
  assert [t.name for t in from_config] == [t.name for t in from_flags]
  assert len(from_flags) == 8 and from_flags[0].name == "temperature=0.1,batch_size=32,seed=0"
  assert from_flags[-1].config.simclr.temperature == 0.5 and from_flags[-1].config.seed == 1
  assert from_flags[-1].config.batch_size == 64
  saved = json.loads((tmp_path / "b" / "sweep.json").read_text())
  assert saved["config"] == SPEC and len(saved["trials"]) == 8


@pytest.mark.parametrize("flags,seeds,cause", [
    (["simclr.no_such=1,2"], None, "sweep key simclr.no_such: the config has no"),
    (["simclr.temperature="], None, "the list of values for simclr.temperature is empty"),
    (["simclr.temperature=warm,0.1"], None, "'warm' does not fit the config's float value"),
    (["batch_size=0.5"], None, "0.5 does not fit the config's int value"),
    (["seed=1,2"], 2, "--seeds cannot be combined with a sweep that sets seed"),
    (["simclr.temperature=-1.0"], None, "config.simclr.temperature must be a number > 0"),
])
def test_a_bad_sweep_is_one_line_before_anything_runs(flags, seeds, cause, tmp_path):
  with pytest.raises(UserError, match=cause):
    runner.plan(SPEC, tiny_digits(str(tmp_path)), {}, str(tmp_path / "sweep"), flags, seeds)
  assert not (tmp_path / "sweep").exists()


def test_the_config_file_as_a_swept_axis(tmp_path):
  """`--configs` (and `experiments/compare_methods.py`): each trial starts from its own config
  file, with the shared overrides and the other swept keys on top; a glob skips the files
  without the variant."""
  made = runner.plan(None, None, {"total_steps": 3}, str(tmp_path / "a"),
                     ["optimizer.warmup_steps=1,2"], None,
                     configs=["configs/simclr.py:digits", "configs/moco.py:digits,version=3"])
  assert [t.name for t in made] == [
      "simclr-digits,warmup_steps=1", "simclr-digits,warmup_steps=2",
      "moco-digits+version=3,warmup_steps=1", "moco-digits+version=3,warmup_steps=2"]
  assert [t.config.method for t in made] == ["simclr", "simclr", "moco", "moco"]
  assert made[3].config.moco.version == 3 and made[3].config.optimizer.warmup_steps == 2
  assert {t.config.total_steps for t in made} == {3}
  specs, skipped = trials.expand_configs(["configs/*.py:photos"])
  assert "configs/colorization.py:photos" in specs and "configs/mlm.py:photos" in skipped
  with pytest.raises(UserError, match="no config file matches"):
    trials.expand_configs(["configs/nothing*.py:digits"])


def test_reproduce_keeps_the_configs_with_published_targets(tmp_path):
  made = runner.plan(None, None, {}, str(tmp_path), [], None, configs=["configs/*.py:cifar10"],
                     reproduce=True)
  assert "simclr-cifar10" in [t.name for t in made] and "mae-cifar10" not in [
      t.name for t in made]
  simclr = next(t for t in made if t.name == "simclr-cifar10")
  assert simclr.config.expected.targets[0]["accuracy"] == 90.74
  with pytest.raises(UserError, match="none of these configs states a published number"):
    runner.plan(None, None, {}, str(tmp_path / "b"), [], None,
                configs=["configs/*.py:digits"], reproduce=True)


@pytest.mark.parametrize("target,cause", [
    ({"cell": "linear", "accuracy": 1.0, "source": "", "compute": ""}, "protocol@labels"),
    ({"cell": "linear@all", "accuracy": 101, "source": "", "compute": ""}, "must be a percentage"),
    ({"cell": "linear@all", "accuracy": 1.0}, "with the keys cell, accuracy, source"),
])
def test_a_malformed_target_is_one_line(target, cause, tmp_path):
  from ssl_jax import expected  # pylint: disable=g-import-not-at-top
  config = tiny_digits(str(tmp_path))
  config.expected.targets = (target,)
  with pytest.raises(UserError, match=cause):
    expected.check(config)


def test_a_workdir_holding_another_sweep_is_refused(tmp_path):
  base = tiny_digits(str(tmp_path))
  runner.plan(SPEC, base, {}, str(tmp_path), ["simclr.temperature=0.1,0.2"], None)
  with pytest.raises(UserError, match="holds another sweep"):
    runner.plan(SPEC, base, {}, str(tmp_path), ["simclr.temperature=0.3"], None)
  again = runner.plan(SPEC, base, {}, str(tmp_path), [], None)  # no grid: the recorded one
  assert [t.name for t in again] == ["temperature=0.1", "temperature=0.2"]


def test_the_command_line_fails_with_one_line(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "ssl_jax.sweep", f"--config={SPEC}", f"--workdir={tmp_path / 's'}",
       "--sweep=simclr.no_such=1,2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2 and "Traceback" not in result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert errors == ["error: sweep key simclr.no_such: the config has no 'simclr.no_such'"]
  assert not (tmp_path / "s").exists()


def test_statistics_are_the_mean_std_and_students_t_interval():
  cell = results.summary([90.0, 92.0, 97.0])
  assert cell["n"] == 3 and cell["mean"] == pytest.approx(93.0)
  assert cell["std"] == pytest.approx(np.std([90, 92, 97], ddof=1))
  half = 4.302652729911275 * cell["std"] / np.sqrt(3)  # t(0.975, 2)
  assert cell["ci95"] == pytest.approx([93.0 - half, 93.0 + half])
  assert results.summary([91.0]) == {"n": 1, "mean": 91.0, "std": None, "ci95": None}


def _tiny_base(data_dir):
  return tiny_digits(data_dir, **{"evals.probes.protocols": ("linear", "knn"),
                                  "eval.feature_sources": ("ssl",), "evaluate_at_end": True,
                                  "total_steps": 4, "checkpoint_every_steps": 2,
                                  "mesh": "data:1"})


@pytest.mark.slow
def test_a_grid_runs_locally_resumes_retries_and_tabulates(tmp_path, monkeypatch):
  """2 settings x 2 seeds through submitit's LocalExecutor, 2 at a time. One trial was
  interrupted after 2 of its 4 steps (it resumes there) and one holds a foreign run (it fails
  while the other 3 finish, is listed with its error, and is retried by the rerun once the
  workdir is fixed). The table's means and stds are those of the 4 reports."""
  from ssl_jax.data import inputs  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path / "tfds")
  # Only the cells the table reads (linear@all, knn@all), one probe seed each: the table's
  # std is over the trials.
  base = override(_tiny_base(data_dir), **{"evals.probes.labels_per_class": (0,),
                                           "evals.probes.seeds": 1})
  base.expected.targets = ({"cell": "knn@all", "accuracy": 60.0, "source": "a test",
                            "compute": "none"},)
  inputs.Inputs(base, str(tmp_path), create_tokenizer=False).info()  # build digits once
  sweep_dir = str(tmp_path / "sweep")
  grid = dict(sweep_flags=["evals.probes.knn_k=5,20"], seeds=2, executor="local", parallel=2, metrics="linear@all,knn@all")
  planned = runner.plan(SPEC, base, {}, sweep_dir, grid["sweep_flags"], 2)
  assert len(planned) == 4
  interrupted, foreign = planned[1], planned[2]
  from ssl_jax import train  # pylint: disable=g-import-not-at-top
  from ssl_jax.run import run  # pylint: disable=g-import-not-at-top

  class SigtermAfterStep1(train._PreemptionFlag):  # pylint: disable=protected-access
    """As if SIGTERM landed during step 2: the trainer saves step 2 and stops."""
    reads = 0

    @property
    def raised(self):
      self.reads += 1
      return self.reads >= 2

    @raised.setter
    def raised(self, value):
      del value

  # The trial's own config (4 steps), stopped after step 2 the way a preempted run stops: the
  # trials then load the train step this process compiled from the session's cache.
  with monkeypatch.context() as patch:
    patch.setattr(train, "_PreemptionFlag", SigtermAfterStep1)
    outcome = run(interrupted.config.copy_and_resolve_references(),
                  interrupted.workdir(sweep_dir))
  assert not outcome.completed and int(outcome.state["step"]) == 2
  os.makedirs(foreign.workdir(sweep_dir))
  with open(os.path.join(foreign.workdir(sweep_dir), "config.json"), "w") as f:
    f.write(override(base.copy_and_resolve_references(), seed=99).to_json_best_effort())

  # The local executor's wait polls every 0.5 s instead of every 2 s.
  monkeypatch.setattr(launch, "run_local", functools.partial(launch.run_local, poll_seconds=0.5))
  found = runner.run(SPEC, base, {}, sweep_dir, **grid)
  assert list(found["failed"]) == [foreign.name]
  assert "holds a run with seed=99" in found["failed"][foreign.name]
  assert foreign.name in open(os.path.join(sweep_dir, "results.md")).read()
  statuses = {t.name: launch.read_status(t.workdir(sweep_dir)) for t in planned}
  assert sum(s["status"] == "finished" for s in statuses.values()) == 3
  with open(os.path.join(interrupted.workdir(sweep_dir), "metrics.jsonl")) as f:
    steps = [json.loads(line)["step"] for line in f]
  assert steps == [2, 4]  # resumed after step 2: steps 1-2 were not trained again

  os.remove(os.path.join(foreign.workdir(sweep_dir), "config.json"))
  finished_at = {name: os.path.getmtime(os.path.join(t.workdir(sweep_dir), "metrics.jsonl"))
                 for t in planned if (name := t.name) != foreign.name}
  found = runner.run(SPEC, base, {}, sweep_dir, **grid)  # retries the failed trial only
  assert not found["failed"] and not found["unfinished"]
  for t in planned:
    if t.name != foreign.name:
      assert os.path.getmtime(os.path.join(t.workdir(sweep_dir), "metrics.jsonl")) == \
          finished_at[t.name]
  assert launch.read_status(foreign.workdir(sweep_dir))["attempts"] == 2

  reports = {t.name: json.load(open(os.path.join(t.workdir(sweep_dir), "eval", "report.json")))
             for t in planned}
  assert len(found["rows"]) == 2
  for row in found["rows"]:
    members = [t for t in planned if all(t.setting[k] == v for k, v in row["setting"].items())]
    assert len(members) == 2 and row["finished"] == 2
    for cell, (protocol, labels) in (("linear@all", ("linear", None)),
                                     ("knn@all", ("knn", None))):
      values = [100 * next(r["accuracy"] for r in reports[t.name]["results"]
                           if (r["protocol"], r["labels_per_class"], r["features"]) ==
                           (protocol, labels, "ssl")) for t in members]
      assert row["metrics"][cell]["mean"] == pytest.approx(np.mean(values))
      assert row["metrics"][cell]["std"] == pytest.approx(np.std(values, ddof=1))
    (compared,) = row["expected"]  # the published target and the mean's difference
    assert compared["difference"] == pytest.approx(row["metrics"]["knn@all"]["mean"] - 60.0)
  table = open(os.path.join(sweep_dir, "results.csv")).read().splitlines()
  assert len(table) == 3 and table[0].startswith("evals.probes.knn_k")
  assert os.path.exists(os.path.join(sweep_dir, "sweep_evals_probes_knn_k.png"))

  # TensorBoard's HParams dashboard: the experiment's keys and metrics, each trial's setting.
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  from tensorboard.plugins.hparams import plugin_data_pb2  # pylint: disable=g-import-not-at-top
  def plugin_data(logdir):
    accumulator = event_accumulator.EventAccumulator(logdir)
    accumulator.Reload()
    content = accumulator.PluginTagToContent("hparams")
    return {tag: plugin_data_pb2.HParamsPluginData.FromString(data)
            for tag, data in content.items()}
  experiment = plugin_data(os.path.join(sweep_dir, "hparams"))["_hparams_/experiment"]
  assert [h.name for h in experiment.experiment.hparam_infos] == [
      "evals.probes.knn_k", "seed"]
  session = plugin_data(os.path.join(sweep_dir, "hparams", planned[3].name))
  start = session["_hparams_/session_start_info"].session_start_info
  assert start.hparams["evals.probes.knn_k"].number_value == planned[3].setting[
      "evals.probes.knn_k"]


def test_slurm_submits_one_array_job_of_the_trials(tmp_path, monkeypatch):
  """The array job submitit would hand to sbatch (no cluster here): one task per trial, at
  most `parallel` at once, the resources from --slurm, requeued on preemption."""
  import submitit  # pylint: disable=g-import-not-at-top
  planned = runner.plan(SPEC, tiny_digits(str(tmp_path)), {}, str(tmp_path / "sweep"),
                        ["simclr.temperature=0.1,0.2,0.5"], 2)
  script = tmp_path / "submitted.sh"
  monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # "srun"
  monkeypatch.setattr(
      submitit.SlurmExecutor, "_make_submission_command",
      lambda self, path: ["sh", "-c", f"cp {path} {script}; echo Submitted batch job 4242"])
  executor = launch.slurm_executor(
      str(tmp_path / "submitit"), runner.parse_assignments(
          ["partition=learnfair", "gpus_per_task=8", "time=4320"], "slurm"), parallel=2)
  jobs = executor.map_array(launch.TrialRun(), [t.config for t in planned],
                            [t.workdir(str(tmp_path / "sweep")) for t in planned])
  assert [job.job_id for job in jobs] == [f"4242_{i}" for i in range(6)]
  text = script.read_text()
  for line in ("#SBATCH --array=0-5%2", "#SBATCH --partition=learnfair",
               "#SBATCH --gpus-per-task=8", "#SBATCH --time=4320", "#SBATCH --signal=USR2@90"):
    assert line in text, text
  assert "submitit.core._submit" in text
  assert isinstance(jobs[0].submission().function, submitit.helpers.Checkpointable)
  assert jobs[5].submission().args[1] == planned[5].workdir(str(tmp_path / "sweep"))


@pytest.mark.slow
@pytest.mark.skipif(bool(one_node_slurm.unavailable()), reason=one_node_slurm.unavailable())
def test_a_real_two_task_array_on_a_one_node_slurm_cluster(tmp_path, monkeypatch):
  """`--executor=slurm` against real slurmctld/slurmd daemons: one array job of 2 tasks.
  Task 0 gets submitit's preemption signal (USR2) once it has saved a checkpoint: the trainer
  saves at its next step and stops, submitit requeues the task, and the requeued task
  resumes there, so no step is trained twice. Both trials finish and are tabulated."""
  from ssl_jax.data import inputs  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path / "tfds")
  base = _tiny_base(data_dir)
  override(base, **{"evals.probes.protocols": ("knn",), "evals.probes.labels_per_class": (0,),
                    "evals.probes.seeds": 1, "total_steps": 120,
                    "checkpoint_every_steps": 20, "log_every_steps": 10})
  # The wait for the array job polls every second, not backing off to 10 s between polls.
  monkeypatch.setattr(launch, "run_slurm", functools.partial(launch.run_slurm,
                                                             max_poll_seconds=1.0))
  inputs.Inputs(base, str(tmp_path), create_tokenizer=False).info()  # build digits once
  sweep_dir = str(tmp_path / "sweep")
  flags = ["simclr.temperature=0.1,0.5"]
  first = runner.plan(SPEC, base, {}, sweep_dir, flags, None)[0].workdir(sweep_dir)
  with one_node_slurm.cluster(str(tmp_path / "slurm")) as conf:
    monkeypatch.setenv("SLURM_CONF", conf)
    signalled = []

    def preempt_task_0():  # as a scheduler would, once the trial has a checkpoint
      deadline = time.time() + 600
      while time.time() < deadline and not signalled:
        if os.path.isdir(os.path.join(first, "checkpoints", "20")):
          jobs = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True,
                                text=True).stdout.split()
          task = next(j for j in jobs if j.endswith("_0"))
          subprocess.run(["scancel", "--signal=USR2", task], check=True)
          signalled.append(task)
        time.sleep(0.2)

    watcher = threading.Thread(target=preempt_task_0, daemon=True)
    watcher.start()
    found = runner.run(SPEC, base, {}, sweep_dir, sweep_flags=flags, executor="slurm",
                       parallel=2, slurm=("partition=debug", "time=30", "cpus_per_task=1"),
                       metrics="knn@all")
    watcher.join(timeout=1)
  assert signalled, "task 0 never reached its first checkpoint"
  assert not found["failed"] and not found["unfinished"], found
  statuses = [launch.read_status(t.workdir(sweep_dir))
              for t in runner.plan(SPEC, base, {}, sweep_dir, [], None)]
  assert [s["status"] for s in statuses] == ["finished", "finished"]
  assert [s["attempts"] for s in statuses] == [2, 1]  # task 0 ran twice: stopped, requeued
  with open(os.path.join(first, "metrics.jsonl")) as f:
    steps = [json.loads(line)["step"] for line in f]
  assert steps == sorted(set(steps)) and steps[-1] == 120, steps  # resumed, never repeated
  logs = "".join(open(p).read() for p in glob.glob(str(tmp_path / "sweep" / "submitit" / "*_0_log.err")))
  assert "Caught signal SIGUSR2" in logs and "Requeued job" in logs, logs
  assert len(found["rows"]) == 2 and all(r["finished"] == 1 for r in found["rows"])
