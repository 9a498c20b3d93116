"""Interruptions and failures: kill -9 during a save, corrupt checkpoints, a full volume, two
launches on one workdir, stale locks (README "Interruptions and failures").

The end-to-end tests run the real command line in subprocesses on `tiny_digits` (through a
config file that returns it) and compare final states bit for bit with one uninterrupted
run. To stop a run inside a save without a hook in the library, a driver script patches
orbax's final rename of a step's temporary folder to wait there.
"""
import errno
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from ssl_jax import checkpoint as checkpoint_lib
from ssl_jax import config_lib, methods, parallel, run_lock, train
from ssl_jax.data import inputs as inputs_lib
from ssl_jax.errors import UserError
from tiny_configs import tiny_digits

# A failed restore in this process leaves orbax's reads behind: coroutines that raise when
# collected, and TensorStore completions into orbax's closed event loop. pytest reports them in
# whichever test collects them; the command line prints no traceback (tested below).
pytestmark = [
    pytest.mark.filterwarnings("ignore:Exception ignored in. <coroutine object _read_array_index"
                               ":pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings(r"ignore:Exception ignored in. None[\s\S]*Event loop is closed"
                               ":pytest.PytestUnraisableExceptionWarning")]

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
        return tiny_digits({data_dir!r}, mesh="data:1")
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
  config = tiny_digits(data_dir, mesh="data:1")
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
# kill -9 inside a save, then the same command again.
# ----------------------------------------------------------------------------------------------


def test_sigkill_during_a_save_then_rerun_equals_the_uninterrupted_run(
    scripts, reference, trainer, tmp_path):
  workdir = tmp_path / "run"
  process, marker, _ = start_blocked(scripts, workdir, 6, tmp_path)
  partial = marker.read_text()
  assert os.path.basename(partial).startswith("6.orbax-checkpoint-tmp") and os.listdir(partial)
  process.send_signal(signal.SIGKILL)
  process.wait(timeout=60)
  assert process.returncode == -signal.SIGKILL
  assert steps_in(workdir) == ["3", os.path.basename(partial)]  # step 6 never committed
  lock = json.loads((workdir / "run.lock").read_text())
  assert lock["pid"] == process.pid and lock["host"] == socket.gethostname()

  result = run_main(scripts, workdir)
  assert result.returncode == 0, result.stderr[-3000:]
  assert (f"took over the stale lock {workdir}/run.lock of pid {process.pid} on host "
          f"{socket.gethostname()}") in result.stderr
  assert "that process is gone" in result.stderr
  assert f"resumed from {workdir}/checkpoints at step 3" in result.stderr
  assert steps_in(workdir) == ["3", "6"]  # the partial folder was removed, step 6 redone
  assert not (workdir / "run.lock").exists()
  assert_bit_identical(restored(trainer, workdir, 6), restored(trainer, reference, 6))


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
  assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
  checkpoints = f"{workdir}/checkpoints"
  warnings = [line for line in result.stderr.splitlines()
              if f"checkpoint of step 6 in {checkpoints} could not be restored" in line]
  assert len(warnings) == 1 and "trying an older one: OUT_OF_RANGE: " in warnings[0], warnings
  assert (f"moved the unreadable checkpoint of step 6 to {checkpoints}/6.corrupt; restored "
          f"step 3") in result.stderr
  assert f"resumed from {checkpoints} at step 3" in result.stderr
  assert steps_in(workdir) == ["3", "6", "6.corrupt"]
  assert_bit_identical(restored(trainer, workdir, 6), restored(trainer, reference, 6))


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


# ----------------------------------------------------------------------------------------------
# Two launches on one workdir; stale locks.
# ----------------------------------------------------------------------------------------------


def test_second_launch_is_refused_while_the_first_runs(scripts, reference, tmp_path):
  del reference  # prepared the dataset and the compilation cache
  workdir = tmp_path / "run"
  first, _, release = start_blocked(scripts, workdir, 3, tmp_path)
  lock = json.loads((workdir / "run.lock").read_text())
  second = run_main(scripts, workdir)
  release.touch()
  _, first_stderr = first.communicate(timeout=240)
  assert first.returncode == 0, first_stderr[-3000:]
  assert second.returncode == 2 and "Traceback" not in second.stderr
  assert error_lines(second.stderr) == [
      f"error: workdir {workdir} is in use by pid {first.pid} on host {socket.gethostname()} "
      f"since {lock['started']} ({workdir}/run.lock); wait for it or remove the lock if that "
      f"run is gone"]
  assert metric_steps(workdir) == [2, 4, 6] and steps_in(workdir) == ["3", "6"]
  assert not (workdir / "run.lock").exists()


def write_lock(workdir, **fields):
  holder = dict(host=socket.gethostname(), pid=os.getpid(), started="2026-12-03T08:00:00+00:00",
                boot_id=run_lock.current_boot_id(), process_start=run_lock.start_ticks(os.getpid()))
  holder.update(fields)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, run_lock.LOCK_FILE), "w") as f:
    json.dump(holder, f)


def dead_pid() -> int:
  child = subprocess.Popen([sys.executable, "-c", "pass"])
  child.wait()
  return child.pid


def test_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path, caplog):
  pid = dead_pid()
  write_lock(tmp_path, pid=pid, process_start=None)
  with run_lock.hold(str(tmp_path)) as lock:
    assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()
    assert lock.holder.pid == os.getpid()
  assert not (tmp_path / "run.lock").exists()
  assert [r.getMessage() for r in caplog.records if "stale lock" in r.getMessage()] == [
      f"took over the stale lock {tmp_path}/run.lock of pid {pid} on host "
      f"{socket.gethostname()} (since 2026-12-03T08:00:00+00:00): that process is gone"]


def test_reused_pid_and_reboot_make_a_lock_stale(tmp_path):
  # This process's pid, but started at another time: the pid was reused.
  holder = run_lock.Holder(host=socket.gethostname(), pid=os.getpid(), started="then",
                           process_start=run_lock.start_ticks(os.getpid()) + 1)
  assert run_lock.is_gone(holder) == f"pid {os.getpid()} is now another process"
  rebooted = run_lock.Holder(host=socket.gethostname(), pid=os.getpid(), started="then",
                             boot_id="another-boot")
  assert run_lock.is_gone(rebooted) == "this machine has rebooted since"
  assert run_lock.is_gone(run_lock.Holder.current()) is None


def test_live_or_foreign_locks_are_never_taken_over(tmp_path):
  write_lock(tmp_path)  # this very process holds it
  with pytest.raises(UserError, match=rf"is in use by pid {os.getpid()} on host "):
    run_lock.acquire(str(tmp_path))
  pid = dead_pid()
  write_lock(tmp_path, host="another-host", pid=pid, boot_id=None)
  with pytest.raises(UserError) as raised:
    run_lock.acquire(str(tmp_path))
  assert str(raised.value) == (
      f"workdir {tmp_path} is in use by pid {pid} on host another-host since "
      f"2026-12-03T08:00:00+00:00 ({tmp_path}/run.lock); wait for it or remove the lock if "
      f"that run is gone")
  assert json.loads((tmp_path / "run.lock").read_text())["host"] == "another-host"


def test_unreadable_lock_is_a_user_error_and_release_leaves_others_alone(tmp_path):
  (tmp_path / "run.lock").write_text("")
  with pytest.raises(UserError, match=r"run.lock, which cannot be read .*remove it if no run"):
    run_lock.acquire(str(tmp_path))
  os.remove(tmp_path / "run.lock")
  lock = run_lock.acquire(str(tmp_path))
  write_lock(tmp_path, pid=12345)  # someone else's now
  lock.release()
  assert json.loads((tmp_path / "run.lock").read_text())["pid"] == 12345
  os.remove(tmp_path / "run.lock")
  with run_lock.hold(str(tmp_path), active=False) as nothing:  # processes other than 0
    assert nothing is None and not (tmp_path / "run.lock").exists()
