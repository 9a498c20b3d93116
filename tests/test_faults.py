"""Corrupt checkpoints and a full volume: a resume and a restore fall back past steps that
cannot be read; a save that cannot be written is one line (README "Interruptions and
failures").

The end-to-end tests run the real command line in subprocesses on `tiny_digits` (through a
config file that returns it) and compare final states bit for bit with one uninterrupted
run.
"""
import errno
import glob
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from ssl_jax import checkpoint as checkpoint_lib
from ssl_jax import config_lib, methods, parallel, train
from ssl_jax.data import inputs as inputs_lib
from ssl_jax.errors import UserError
from tiny_configs import tiny_digits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))

# Waits in orbax's commit of the chosen step: its data is written to
# `<step>.orbax-checkpoint-tmp`, not yet renamed to `<step>`. Writes `marker` there and goes
# on once `release` exists (never, for a run that is to be killed).
DRIVER = """
import os, sys, time
sys.path.insert(0, {root!r})
from orbax.checkpoint._src.path import atomicity
marker, release, step = sys.argv[1:4]
del sys.argv[1:4]
commit = atomicity.AtomicRenameTemporaryPath.finalize

async def commit_after_release(self):
  if os.path.basename(str(self._final_path)) == step:
    with open(marker, "w") as f:
      f.write(str(self._tmp_path))
    while not os.path.exists(release):
      time.sleep(0.05)
  await commit(self)

atomicity.AtomicRenameTemporaryPath.finalize = commit_after_release
from absl import app, logging
from ssl_jax import main
logging.set_verbosity(logging.INFO)
app.run(main.main, flags_parser=main.parse_flags)
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tensorflow_datasets"))


@pytest.fixture(scope="module")
def scripts(tmp_path_factory, data_dir):
  """The config file (tiny_digits on one device) and the driver, and an environment whose
  persistent compilation cache lets each subprocess load the programs the first compiled."""
  folder = tmp_path_factory.mktemp("scripts")
  (folder / "tiny_config.py").write_text(textwrap.dedent(f"""
      import sys
      sys.path.insert(0, {TESTS!r})
      from tiny_configs import tiny_digits

      def get_config():
        return tiny_digits({data_dir!r}, mesh_data_axis=1)
      """))
  (folder / "driver.py").write_text(DRIVER.format(root=ROOT))
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(folder / "jax_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
  return {"config": f"--config={folder / 'tiny_config.py'}", "driver": str(folder / "driver.py"),
          "env": env}


def command(scripts, workdir, *overrides, driver_args=()):
  entry = [scripts["driver"], *driver_args] if driver_args else ["-m", "ssl_jax.main"]
  return [sys.executable, *entry, scripts["config"], f"--workdir={workdir}", *overrides]


def run_main(scripts, workdir, *overrides, timeout=240):
  return subprocess.run(command(scripts, workdir, *overrides), cwd=ROOT, env=scripts["env"],
                        capture_output=True, text=True, timeout=timeout)


def start_blocked(scripts, workdir, step, tmp_path, *overrides):
  """Starts the driver on `workdir`, waits until it is inside the save of `step`; returns
  (process, marker, release)."""
  marker, release = tmp_path / f"in_save_{step}", tmp_path / f"release_{step}"
  process = subprocess.Popen(
      command(scripts, workdir, *overrides, driver_args=(str(marker), str(release), str(step))),
      cwd=ROOT, env=scripts["env"], stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 240
  while not marker.exists():
    assert process.poll() is None, process.stderr.read()[-3000:]
    assert time.monotonic() < deadline, "the run never reached the save"
    time.sleep(0.1)
  return process, marker, release


def error_lines(stderr: str) -> list[str]:
  return [line for line in stderr.splitlines() if line.startswith("error:")]


def steps_in(workdir) -> list[str]:
  return sorted(os.listdir(os.path.join(workdir, "checkpoints")))


def metric_steps(workdir) -> list[int]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line)["step"] for line in f]


@pytest.fixture(scope="module")
def trainer(data_dir, scripts, reference):
  """A trainer of the subprocesses' config: its abstract state restores their checkpoints."""
  del scripts, reference  # the reference run has prepared the dataset
  config = tiny_digits(data_dir, mesh_data_axis=1)
  info = inputs_lib.Inputs(config).info()
  length = config_lib.training_length(config, info.num_train_examples)
  return train.Trainer(config, methods.build(config, length), parallel.make_mesh(1),
                       info.input_shape, info.num_classes, length)


def restored(trainer, workdir, step):
  checkpoints = checkpoint_lib.Checkpointer(str(workdir), read_only=True)
  try:
    return jax.device_get(checkpoints.restore(trainer.abstract_state, step))
  finally:
    checkpoints.close()


def assert_bit_identical(a, b):
  leaves_a, leaves_b = jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b) > 10
  for (path, x), y in zip(leaves_a, leaves_b):
    assert np.array_equal(np.asarray(x), np.asarray(y)), jax.tree_util.keystr(path)


@pytest.fixture(scope="module")
def reference(scripts, tmp_path_factory):
  """One uninterrupted 6-step run: checkpoints at steps 3 and 6."""
  workdir = tmp_path_factory.mktemp("reference") / "run"
  result = run_main(scripts, workdir)
  assert result.returncode == 0, result.stderr[-3000:]
  assert steps_in(workdir) == ["3", "6"] and metric_steps(workdir) == [2, 4, 6]
  assert not os.path.exists(workdir / "run.lock")
  return workdir


# ----------------------------------------------------------------------------------------------
# Corrupt checkpoints.
# ----------------------------------------------------------------------------------------------


def data_files(workdir, step):
  """The OCDBT files of a step's array data."""
  files = glob.glob(os.path.join(workdir, "checkpoints", str(step), "default", "ocdbt.process_*",
                                 "d", "*"))
  assert len(files) >= 3, files
  return files


def truncate(files):
  for path in files:
    os.truncate(path, os.path.getsize(path) // 2)


def flip_first_bytes(files, count=16):
  for path in files:
    with open(path, "r+b") as f:
      head = f.read(count)
      f.seek(0)
      f.write(bytes(b ^ 0xFF for b in head))


def test_truncated_newest_checkpoint_is_moved_aside_and_the_rerun_equals_the_reference(
    scripts, reference, trainer, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  truncate(data_files(workdir, 6))
  result = run_main(scripts, workdir)
  assert result.returncode == 0, result.stderr[-3000:]
  checkpoints = f"{workdir}/checkpoints"
  warnings = [line for line in result.stderr.splitlines()
              if f"checkpoint of step 6 in {checkpoints} could not be restored" in line]
  assert len(warnings) == 1 and "trying an older one: OUT_OF_RANGE: " in warnings[0], warnings
  assert (f"moved the unreadable checkpoint of step 6 to {checkpoints}/6.corrupt; restored "
          f"step 3") in result.stderr
  assert f"resumed from {checkpoints} at step 3" in result.stderr
  assert steps_in(workdir) == ["3", "6", "6.corrupt"]
  assert_bit_identical(restored(trainer, workdir, 6), restored(trainer, reference, 6))


# Orbax leaves the reads of a failed restore as coroutines that raise when collected; pytest
# reports them (a command line prints nothing).
ABANDONED_READS = ("ignore:Exception ignored in. <coroutine object "
                   "_read_array_index_and_device_put:pytest.PytestUnraisableExceptionWarning")


@pytest.mark.filterwarnings(ABANDONED_READS)
def test_flipped_bytes_fall_back_and_a_second_corrupt_copy_gets_a_suffix(
    reference, trainer, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  flip_first_bytes(data_files(workdir, 6))
  os.makedirs(workdir / "checkpoints" / "6.corrupt")  # an earlier one, kept
  checkpoints = checkpoint_lib.Checkpointer(str(workdir), read_only=True)
  state, step = checkpoints.restore_newest(trainer.abstract_state)
  assert step == 3 and checkpoints.latest_step() == 3
  checkpoints.close()
  assert_bit_identical(jax.device_get(state), restored(trainer, reference, 3))
  assert steps_in(workdir) == ["3", "6.corrupt", "6.corrupt.2"]
  # Orbax lists only numeric names: a fresh manager sees step 3 alone.
  fresh = checkpoint_lib.Checkpointer(str(workdir), read_only=True)
  assert fresh.latest_step() == 3 and fresh.all_steps() == [3]
  fresh.close()


@pytest.mark.filterwarnings(ABANDONED_READS)
def test_when_no_checkpoint_restores_it_is_one_user_error_and_nothing_is_renamed(
    reference, trainer, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  truncate(data_files(workdir, 6))
  flip_first_bytes(data_files(workdir, 3))
  checkpoints = checkpoint_lib.Checkpointer(str(workdir), read_only=True)
  with pytest.raises(UserError) as raised:
    checkpoints.restore_newest(trainer.abstract_state)
  checkpoints.close()
  message = str(raised.value)
  assert "\n" not in message
  assert message.startswith(f"no checkpoint in {workdir}/checkpoints could be restored (steps "
                            f"6, 3); step 6: ")
  assert steps_in(workdir) == ["3", "6"]


def test_no_checkpoint_restores_to_none(trainer, tmp_path):
  checkpoints = checkpoint_lib.Checkpointer(str(tmp_path / "empty"))
  assert checkpoints.restore_newest(trainer.abstract_state) is None
  checkpoints.close()


# ----------------------------------------------------------------------------------------------
# A volume that fills up during a save.
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def small_volume(tmp_path):
  """A 1 MiB tmpfs (root only), unmounted afterwards."""
  if os.geteuid() != 0:
    pytest.skip("mounting a small tmpfs needs root")
  mount_point = tmp_path / "volume"
  mount_point.mkdir()
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                           capture_output=True, text=True)
  if mounted.returncode != 0:
    pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
  try:
    yield mount_point
  finally:
    subprocess.run(["umount", str(mount_point)], check=True)


def test_full_volume_is_one_line_error_and_leaves_no_partial_checkpoint(
    scripts, reference, small_volume):
  workdir = small_volume / "run"
  os.makedirs(workdir / "checkpoints")
  shutil.copy(reference / "config.json", workdir)
  shutil.copytree(reference / "checkpoints" / "3", workdir / "checkpoints" / "3")
  # Leave 48 KiB: the small files of a run fit (lock, config, metrics, TensorBoard, a page
  # each), a checkpoint (about 200 KiB) does not.
  free = os.statvfs(small_volume)
  with open(small_volume / "filler", "wb") as f:
    f.write(b"\0" * (free.f_bavail * free.f_frsize - 48 * 1024))

  result = run_main(scripts, workdir, "--config.total_steps=9")
  assert result.returncode == 2, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  assert error_lines(result.stderr) == [
      f"error: could not write the checkpoint of step 6 in {workdir}/checkpoints: No space "
      f"left on device; the newest good checkpoint is step 3"], result.stderr[-3000:]
  assert not glob.glob(f"{workdir}/**/*.orbax-checkpoint-tmp*", recursive=True)
  assert steps_in(workdir) == ["3"] and not (workdir / "run.lock").exists()
  assert metric_steps(workdir) == [4, 6, 8, 9]  # stopped in the save of step 9: it waits for 6


# ----------------------------------------------------------------------------------------------
# Storage errors as orbax reports them, in each place one can surface.
# ----------------------------------------------------------------------------------------------


TENSORSTORE_ENOSPC = ValueError(
    'RESOURCE_EXHAUSTED: Error writing local file "/w/checkpoints/6.orbax-checkpoint-tmp/x": '
    "Failed to write 17693 bytes to file 8: No space left on device [os_error_code='28']")


def wrapped(error: BaseException) -> Exception:
  try:
    raise RuntimeError("background save failed") from error
  except RuntimeError as outer:
    return outer


@pytest.mark.parametrize("error,expected", [
    (TENSORSTORE_ENOSPC, errno.ENOSPC),
    (wrapped(TENSORSTORE_ENOSPC), errno.ENOSPC),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), errno.EDQUOT),
    (wrapped(PermissionError(errno.EACCES, "Permission denied")), errno.EACCES),
    (ValueError("PERMISSION_DENIED: ... [os_error_code=1]"), errno.EPERM),
    (OSError(errno.EROFS, "Read-only file system"), errno.EROFS),
    (ValueError("OUT_OF_RANGE: Error reading ... in OCDBT database"), None),
    (OSError(errno.EIO, "Input/output error"), None),
])
def test_storage_errno_is_found_anywhere_in_the_chain(error, expected):
  assert checkpoint_lib.storage_errno(error) == expected


class FailingManager:
  """Stands for orbax's manager: `save` starts, `wait_until_finished` raises what it is told."""

  def __init__(self, directory, on_save=None, on_wait=None, latest=None):
    self.directory, self.on_save, self.on_wait, self.latest = directory, on_save, on_wait, latest

  def save(self, step, args, force):
    del args, force
    os.makedirs(os.path.join(self.directory, f"{step}.orbax-checkpoint-tmp-123", "default"))
    if self.on_save:
      raise self.on_save

  def wait_until_finished(self):
    error, self.on_wait = self.on_wait, None  # orbax raises a background error once
    if error:
      raise error

  def reload(self):
    pass

  def latest_step(self):
    return self.latest

  def close(self):
    self.wait_until_finished()


@pytest.mark.parametrize("surfaces_in", ["save", "next save", "wait", "close"])
def test_storage_error_of_a_save_is_one_line_naming_its_step(surfaces_in, tmp_path):
  checkpoints = checkpoint_lib.Checkpointer(str(tmp_path))
  checkpoints.close()
  fake = FailingManager(checkpoints.directory, latest=3)
  checkpoints._manager = fake  # pylint: disable=protected-access
  reason = wrapped(TENSORSTORE_ENOSPC)
  if surfaces_in == "save":
    fake.on_save = reason
    call = lambda: checkpoints.save(6, {})
  else:
    checkpoints.save(6, {})
    fake.on_wait = reason
    call = {"next save": lambda: checkpoints.save(9, {}), "wait": checkpoints.wait,
            "close": checkpoints.close}[surfaces_in]
  with pytest.raises(UserError) as raised:
    call()
  assert str(raised.value) == (f"could not write the checkpoint of step 6 in {tmp_path}/"
                               f"checkpoints: No space left on device; the newest good "
                               f"checkpoint is step 3")
  assert raised.value.__cause__ is None and raised.value.__suppress_context__
  assert not glob.glob(f"{tmp_path}/checkpoints/6.orbax-checkpoint-tmp*")


def test_other_save_errors_keep_their_traceback(tmp_path):
  checkpoints = checkpoint_lib.Checkpointer(str(tmp_path))
  checkpoints.close()
  fake = FailingManager(checkpoints.directory, on_save=ValueError("a bug"))
  checkpoints._manager = fake  # pylint: disable=protected-access
  with pytest.raises(ValueError, match="a bug"):
    checkpoints.save(3, {})
  assert glob.glob(f"{tmp_path}/checkpoints/3.orbax-checkpoint-tmp*")  # not ours to remove
