"""Bad input: one-line error naming the cause, non-zero exit, no traceback, nothing written.

Also SIGTERM: the run saves a checkpoint and stops cleanly. These run the real entry points in
subprocesses (8 fake devices are inherited from conftest.py's environment).
"""
import json
import os
import signal
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config.encoder.widths=(8,16)", "--config.projector.hidden_dim=32",
        "--config.batch_size=32"]


def run_main(*args, data_dir, timeout=180):
  command = [sys.executable, "-m", "ssl_jax.main", *args, f"--config.data.data_dir={data_dir}"]
  return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tensorflow_datasets"))


CASES = {
    "unknown method": (["--config.method=nosuch"], "unknown method 'nosuch'"),
    "unknown dataset": (["--config.dataset=no_such_dataset"], "unknown dataset 'no_such_dataset'"),
    "unknown config key": (["--config.no_such_key=1"], "the config has no 'no_such_key'"),
    "zero batch size": (["--config.batch_size=0"], "batch_size must be a positive integer"),
    "batch not divisible": (["--config.batch_size=12"],
                            "batch_size 12 is not divisible by the device count 8"),
    "views the method cannot take": (["--config.data.num_views=3"],
                                     "SimCLR takes 2 views per image"),
    "unknown modality": (["--config.data.modality=audio"],
                         "config.data.modality must be one of audio_video, image, image_text, sequence"),
    "negative duration": (["--config.total_steps=-5"], "total_steps must be >= 0"),
    # Evaluation settings, checked before the first training step.
    "unknown probe protocol": (["--config.evals.probes.protocols=('no_such',)"],
                               "config.evals.probes.protocols must be one of linear, knn"),
    "negative labels per class": (["--config.evals.probes.labels_per_class=(-1,)"],
                                  "config.evals.probes.labels_per_class must be an integer >= 0"),
    "more labels per class than a class has": (
        ["--config.evals.probes.labels_per_class=(1, 500)"],
        "config.evals.probes.labels_per_class asks for 500 labelled examples of each class, "
        "but class"),
    "no seeds": (["--config.evals.probes.seeds=0"],
                 "config.evals.probes.seeds must be an integer >= 1"),
    "kNN k of 0": (["--config.evals.probes.knn_k=0"], "config.evals.probes.knn_k must be an "
                   "integer >= 1"),
    "propagation alpha of 1.5": (["--config.evals.probes.propagation_alpha=1.5"],
                                 "config.evals.probes.propagation_alpha must be a number > 0 "
                                 "and < 1"),
    "unknown feature source": (["--config.eval.feature_sources=('pixels',)"],
                               "unknown feature source 'pixels'"),
    "fine-tuning epochs per fraction": (["--config.evals.finetune.fractions=(0.5,)"],
                                        "config.evals.finetune.epochs needs one entry per"),
    "fine-tuning fraction above 1": (["--config.evals.finetune.fractions=(1.5, 0.1)"],
                                     "config.evals.finetune.fractions must be a number > 0 and "
                                     "<= 1"),
    "prompt without a placeholder": (["--config.evals.zero_shot.prompts=('a photo',)"],
                                     "config.evals.zero_shot.prompts must each contain '{}'"),
    "negative pictures": (["--config.evals.pictures.num_pictures=-1"],
                          "config.evals.pictures.num_pictures must be an integer >= 0"),
    "method setting out of range": (["--config.simclr.temperature=0.0"],
                                    "config.simclr.temperature must be a number > 0"),
    "projector size of 0": (["--config.projector.output_dim=0"],
                            "config.projector.output_dim must be an integer >= 1"),
    # Devices.
    "unknown mesh axis": (["--config.mesh=model:8"],
                          "config.mesh must be axes data and fsdp as 'name:size,...'"),
    "mesh larger than the machine": (["--config.mesh=data:2,fsdp:8"],
                                     "config.mesh 'data:2,fsdp:8' needs 16 devices; there are 8"),
    "unknown precision": (["--config.precision=float16"],
                          "config.precision must be one of float32, bfloat16"),
    "accumulating a contrastive loss": (
        ["--config.grad_accum_steps=2"],
        "config.grad_accum_steps=2 is refused for simclr: the other images of the batch are its "
        "negatives"),
    # Optimizer values.
    "negative learning rate": (["--config.optimizer.lr=-1.0"],
                               "config.optimizer.lr must be a number > 0, got -1.0"),
    "negative weight decay": (["--config.optimizer.weight_decay=-0.1"],
                              "config.optimizer.weight_decay must be a number >= 0"),
    "Adam beta of 1": (["--config.optimizer.b2=1.0"],
                       "config.optimizer.b2 must be a number >= 0 and < 1"),
    "unknown optimizer": (["--config.optimizer.name=rmsprop"],
                          "config.optimizer.name must be one of lars, adamw, adam, sgd"),
}


# Each table runs in one process per entry point (python, TensorFlow and jax take about 8 s to
# import): a driver runs the entry point as `python -m` would (`runpy`, as __main__, with the
# case's argv), once per case, catching the exit, with stderr captured; any other exception ends
# the driver with a traceback, which fails the table.
DRIVER = """
import contextlib, io, json, runpy, sys
from absl import flags
name, cases, output, results = sys.argv[1], sys.argv[2], sys.argv[3], {}
for case, argv in json.load(open(cases)).items():
  # The flags the previous case's entry point (registered under argv[0]) and config defined.
  defined = [flag.name for flag in flags.FLAGS.flags_by_module_dict().get(name, [])]
  for flag in {*defined, *(flag for flag in flags.FLAGS if flag.startswith("config."))}:
    if flag in flags.FLAGS:
      delattr(flags.FLAGS, flag)
  flags.FLAGS.unparse_flags()
  sys.argv = [name, *argv]
  stderr, code = io.StringIO(), 0
  with contextlib.redirect_stderr(stderr):
    try:
      runpy.run_module(name, run_name="__main__", alter_sys=True)
    except SystemExit as e:
      code = e.code
  results[case] = [code, stderr.getvalue()]
json.dump(results, open(output, "w"))
"""


def run_cases(folder, module: str, argvs: dict[str, list[str]]) -> dict[str, list]:
  """{case: [exit code, stderr]} of each argv through `module`'s parser and main."""
  (folder / f"{module}_cases.json").write_text(json.dumps(argvs))
  (folder / "driver.py").write_text(DRIVER)
  result = subprocess.run([sys.executable, str(folder / "driver.py"), module,
                           str(folder / f"{module}_cases.json"),
                           str(folder / f"{module}_results.json")], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": ROOT})
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads((folder / f"{module}_results.json").read_text())


@pytest.fixture(scope="module")
def bad_config_results(tmp_path_factory, data_dir):
  """{case: (exit code, stderr, workdir)} of every CASES entry through `ssl_jax.main`."""
  folder = tmp_path_factory.mktemp("bad_configs")
  argvs = {case: ["--config=configs/simclr.py:digits", f"--workdir={folder / str(index)}",
                  *overrides, f"--config.data.data_dir={data_dir}"]
           for index, (case, (overrides, _)) in enumerate(sorted(CASES.items()))}
  results = run_cases(folder, "ssl_jax.main", argvs)
  return {case: (*results[case], folder / str(index))
          for index, case in enumerate(sorted(CASES))}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_fails_with_one_line(case, bad_config_results):
  _, expected = CASES[case]
  code, stderr, workdir = bad_config_results[case]
  assert code == 2, stderr
  assert "Traceback" not in stderr
  errors = [line for line in stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and expected in errors[0], stderr
  assert not (workdir / "config.json").exists() and not (workdir / "checkpoints").exists()


def test_a_bad_config_value_through_the_command_line(tmp_path, data_dir):
  """The entry point as a user runs it (the table above shares one process)."""
  workdir = tmp_path / "run"
  result = run_main("--config=configs/simclr.py:digits", f"--workdir={workdir}",
                    "--config.optimizer.lr=-1.0", data_dir=data_dir)
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert "error: config.optimizer.lr must be a number > 0, got -1.0" in result.stderr
  assert not workdir.exists() or not os.listdir(workdir)


def test_missing_config_file(tmp_path, data_dir):
  result = run_main("--config=configs/no_such_file.py", f"--workdir={tmp_path}",
                    data_dir=data_dir)
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert "error: cannot load config: [Errno 2] No such file or directory" in result.stderr


def test_unwritable_workdir(tmp_path, data_dir):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  result = run_main("--config=configs/simclr.py:digits", f"--workdir={blocker}/run", *TINY,
                    data_dir=data_dir)
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert f"error: workdir '{blocker}/run' is not writable" in result.stderr


def test_workdir_of_another_run_is_not_overwritten(tmp_path, data_dir):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text('{"method": "simclr", "dataset": "cifar10"}')
  result = run_main("--config=configs/simclr.py:digits", f"--workdir={workdir}", *TINY,
                    data_dir=data_dir)
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert "holds a run with dataset='cifar10'" in result.stderr
  assert '"cifar10"' in (workdir / "config.json").read_text()


def _saved_run(tmp_path, config_module: str, variant: str):
  """A workdir holding only the config.json a run of `config_module:variant` would save."""
  import importlib  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, ROOT)
  config = importlib.import_module(f"configs.{config_module}").get_config(variant)
  workdir = tmp_path / config_module
  workdir.mkdir()
  (workdir / "config.json").write_text(config.to_json_best_effort())
  return workdir


# Command lines that read a finished run: (module, run's config, arguments, expected error).
RUN_CASES = {
    "evaluate without --workdir": ("evaluate", None, [], "--workdir is required"),
    "evaluate overriding a training key": (
        "evaluate", ("simclr", "digits"), ["--config.batch_size=3"],
        "--config.batch_size: only evaluation settings can change after training"),
    "evaluate overriding an unknown key": (
        "evaluate", ("simclr", "digits"), ["--config.evals.probes.no_such=1"],
        "unknown config key in --config.evals.probes.no_such"),
    "evaluate override of the wrong type": (
        "evaluate", ("simclr", "digits"), ["--config.evals.probes.seeds=many"],
        "--config.evals.probes.seeds=many: expected a value of type int"),
    "evaluate override out of range": (
        "evaluate", ("simclr", "digits"), ["--config.evals.probes.knn_k=0"],
        "config.evals.probes.knn_k must be an integer >= 1"),
    "fill_mask on a run that is not a masked LM": (
        "fill_mask", ("simclr", "digits"), ["The [MASK] is."],
        "fill_mask needs a masked-LM run"),
    "fill_mask with top_k 0": ("fill_mask", ("mlm", "python_docs"), ["--top_k=0", "A [MASK]."],
                               "--top_k must be >= 1"),
    "fill_mask without a text": ("fill_mask", ("mlm", "python_docs"), [],
                                 "give at least one text with [MASK]"),
    "generate on a run that is not a causal LM": (
        "generate", ("mlm", "python_docs"), ["Return the"], "generate needs a causal-LM run"),
    "generate with a negative temperature": (
        "generate", ("causal_lm", "python_docs"), ["--temperature=-1", "Return the"],
        "--temperature and --top_k must be >= 0"),
}


@pytest.fixture(scope="module")
def run_reader_results(tmp_path_factory):
  """{case: (exit code, stderr, case folder, its listing before)} of every RUN_CASES entry,
  one process per entry point; each case has its own folder holding its saved run."""
  base = tmp_path_factory.mktemp("run_readers")
  argvs, folders = {}, {}
  for index, (case, (module, run_config, args, _)) in enumerate(sorted(RUN_CASES.items())):
    folder = folders[case] = base / str(index)
    folder.mkdir()
    workdir = [f"--workdir={_saved_run(folder, *run_config)}"] if run_config else []
    argvs.setdefault(module, {})[case] = [*workdir, *args]
  before = {case: sorted(os.listdir(folder)) for case, folder in folders.items()}
  results = {}
  for module, cases in argvs.items():
    results.update(run_cases(base, f"ssl_jax.{module}", cases))
  return {case: (*results[case], folders[case], before[case]) for case in RUN_CASES}


@pytest.mark.parametrize("case", sorted(RUN_CASES))
def test_bad_input_to_the_run_readers_fails_with_one_line(case, run_reader_results):
  _, run_config, _, expected = RUN_CASES[case]
  code, stderr, folder, before = run_reader_results[case]
  assert code == 2, stderr
  assert "Traceback" not in stderr
  errors = [line for line in stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and expected in errors[0], stderr
  assert sorted(os.listdir(folder)) == before  # nothing written beside the run
  if run_config:
    assert sorted(os.listdir(folder / run_config[0])) == ["config.json"]


def test_evaluate_without_a_run(tmp_path):
  result = subprocess.run([sys.executable, "-m", "ssl_jax.evaluate", f"--workdir={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert "error: no run in workdir" in result.stderr


def test_sigterm_saves_a_checkpoint_and_stops(tmp_path, data_dir):
  workdir = tmp_path / "run"
  command = [sys.executable, "-m", "ssl_jax.main", "--config=configs/simclr.py:digits",
             f"--workdir={workdir}", *TINY, "--config.total_steps=100000",
             "--config.log_every_steps=1", "--config.mesh=data:1",
             f"--config.data.data_dir={data_dir}"]
  process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
  for line in process.stderr:
    if "step 3/100000" in line:
      process.send_signal(signal.SIGTERM)
      break
  _, rest = process.communicate(timeout=120)
  assert process.returncode == 0, rest
  assert "SIGTERM: saved a checkpoint at step" in rest
  steps = [int(name) for name in os.listdir(workdir / "checkpoints") if name.isdigit()]
  assert steps and max(steps) >= 3, (os.listdir(workdir / "checkpoints"), rest[-3000:])
  assert not (workdir / "eval").exists()
