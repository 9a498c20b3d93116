"""Bad input: one-line error naming the cause, non-zero exit, no traceback, nothing written.

Also SIGTERM: the run saves a checkpoint and stops cleanly. These run the real entry points in
subprocesses (8 fake devices are inherited from conftest.py's environment).
"""
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
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_fails_with_one_line(case, tmp_path, data_dir):
  overrides, expected = CASES[case]
  workdir = tmp_path / "run"
  result = run_main("--config=configs/simclr.py:digits", f"--workdir={workdir}", *overrides,
                    data_dir=data_dir)
  assert result.returncode == 2, result.stderr
  assert "Traceback" not in result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and expected in errors[0], result.stderr
  assert not (workdir / "config.json").exists() and not (workdir / "checkpoints").exists()


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


def test_evaluate_without_a_run(tmp_path):
  result = subprocess.run([sys.executable, "-m", "ssl_jax.evaluate", f"--workdir={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert "error: no run in workdir" in result.stderr


def test_sigterm_saves_a_checkpoint_and_stops(tmp_path, data_dir):
  workdir = tmp_path / "run"
  command = [sys.executable, "-m", "ssl_jax.main", "--config=configs/simclr.py:digits",
             f"--workdir={workdir}", *TINY, "--config.total_steps=100000",
             "--config.log_every_steps=1", "--config.mesh_data_axis=1",
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
