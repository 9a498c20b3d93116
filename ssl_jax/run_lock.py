"""One training run per workdir: `WORKDIR/run.lock`, held for the run's whole life.

Two runs in one workdir would interleave their metrics rows and overwrite each other's
checkpoints, and a resume of either would then start from the other's state. So the run
(process 0 of a multi-host run) creates the lock atomically (`O_CREAT | O_EXCL`) before it
writes anything there, and removes it when it ends, whether it finishes, fails or stops on
SIGTERM. A second launch fails with one line naming the holder.

The lock is JSON: {host, pid, started (ISO time), boot_id, process_start}. A process killed
with SIGKILL (or a crashed machine) cannot remove its lock, so a lock whose process is gone
is taken over with a warning, but only on the host that wrote it: there, the pid can be
checked (it no longer exists, or it now belongs to another process: the process start time
in /proc/<pid>/stat differs, or the machine rebooted: the boot id differs). A lock from
another host is never taken over; the message says to remove it if that run is gone.
Evaluation only reads a workdir and takes no lock.
"""
import contextlib
import dataclasses
import datetime
import json
import os
import socket
import time
from typing import Iterator

from absl import logging

from ssl_jax.errors import UserError

LOCK_FILE = "run.lock"
_ATTEMPTS = 5  # creations tried while other launches race to take over the same stale lock
_READ_RETRIES = 10  # a lock just created is written at once; wait this many 0.1 s for it


@dataclasses.dataclass(frozen=True)
class Holder:
  """Who holds a lock: what the lock file says."""
  host: str
  pid: int
  started: str
  boot_id: str | None = None
  process_start: int | None = None  # clock ticks after boot (/proc/<pid>/stat field 22)

  @classmethod
  def current(cls) -> "Holder":
    pid = os.getpid()
    return cls(host=socket.gethostname(), pid=pid,
               started=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
               boot_id=current_boot_id(), process_start=start_ticks(pid))

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self))

  @classmethod
  def from_json(cls, text: str) -> "Holder":
    """Raises ValueError for a file that is not a lock written by `Holder.to_json`."""
    try:
      fields = json.loads(text)
      return cls(host=str(fields["host"]), pid=int(fields["pid"]), started=str(fields["started"]),
                 boot_id=fields.get("boot_id"), process_start=fields.get("process_start"))
    except (TypeError, KeyError, json.JSONDecodeError) as e:
      raise ValueError(f"not a lock file ({type(e).__name__}: {e})") from None


def current_boot_id() -> str | None:
  """This boot of this machine (Linux): pids start again after a reboot."""
  try:
    with open("/proc/sys/kernel/random/boot_id") as f:
      return f.read().strip() or None
  except OSError:
    return None


def start_ticks(pid: int) -> int | None:
  """When `pid` started, in clock ticks after boot (Linux), to tell a reused pid apart."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      stat = f.read()
  except OSError:
    return None
  # "pid (command) state ppid ...": the command may hold spaces and ")"; field 22 is the start.
  fields = stat[stat.rfind(")") + 2:].split()
  return int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else None


def _pid_exists(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # it exists, owned by another user
    return True
  return True


def is_gone(holder: Holder) -> str | None:
  """Why `holder`'s process is certainly gone (a reason to take its lock over), else None.

  Only a lock written on this host can be judged: another host's pids mean nothing here.
  """
  if holder.host != socket.gethostname():
    return None
  this_boot = current_boot_id()
  if holder.boot_id and this_boot and holder.boot_id != this_boot:
    return "this machine has rebooted since"
  if not _pid_exists(holder.pid):
    return "that process is gone"
  started = start_ticks(holder.pid)
  if None not in (holder.process_start, started) and started != holder.process_start:
    return f"pid {holder.pid} is now another process"
  return None


class WorkdirLock:
  """A held lock; `release` removes the file if it is still this lock."""

  def __init__(self, path: str, holder: Holder):
    self.path = path
    self.holder = holder

  def release(self) -> None:
    try:
      with open(self.path) as f:
        still_mine = Holder.from_json(f.read()) == self.holder
    except (OSError, ValueError):
      return  # gone, or replaced by something that is not this lock: leave it alone
    if still_mine:
      with contextlib.suppress(FileNotFoundError):
        os.remove(self.path)


def _create(path: str, holder: Holder) -> bool:
  """Creates the lock file with `holder` in it; False when a lock file already exists."""
  try:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
  except FileExistsError:
    return False
  try:
    os.write(fd, holder.to_json().encode())
  except OSError:  # e.g. a full disk: an empty lock would block every later launch
    os.close(fd)
    os.remove(path)
    raise
  os.close(fd)
  return True


def _read(path: str, workdir: str) -> Holder | None:
  """The holder named in the lock file; None when it has gone meanwhile."""
  for attempt in range(_READ_RETRIES):
    try:
      with open(path) as f:
        return Holder.from_json(f.read())
    except FileNotFoundError:
      return None
    except ValueError as e:  # empty: just created by another launch, being written
      if attempt == _READ_RETRIES - 1:
        raise UserError(f"workdir {workdir} is locked by {path}, which cannot be read ({e}); "
                        f"remove it if no run is using this workdir") from None
      time.sleep(0.1)
  return None


def _set_aside(path: str, stale: Holder) -> bool:
  """Moves the stale lock out of the way; False when another launch took it over first.

  The rename is atomic, so of several launches that found the same stale lock one moves it;
  a launch that finds it moved a fresh lock instead (the winner's) puts it back.
  """
  aside = f"{path}.stale.{os.getpid()}"
  try:
    os.rename(path, aside)
  except FileNotFoundError:
    return False
  try:
    with open(aside) as f:
      moved = f.read()
    if _parses_to(moved, stale):
      return True
    with contextlib.suppress(FileExistsError):
      os.link(aside, path)
    return False
  finally:
    os.remove(aside)


def _parses_to(text: str, holder: Holder) -> bool:
  try:
    return Holder.from_json(text) == holder
  except ValueError:
    return False


def acquire(workdir: str) -> WorkdirLock:
  """Takes `workdir`'s lock, or raises a one-line UserError naming the run that holds it."""
  path = os.path.join(workdir, LOCK_FILE)
  me = Holder.current()
  for _ in range(_ATTEMPTS):
    try:
      if _create(path, me):
        return WorkdirLock(path, me)
    except OSError as e:
      raise UserError(f"cannot create the lock {path}: {e.strerror or e}") from None
    holder = _read(path, workdir)
    if holder is None:
      continue  # released meanwhile: try again
    reason = is_gone(holder)
    if reason is None:
      raise UserError(f"workdir {workdir} is in use by pid {holder.pid} on host {holder.host} "
                      f"since {holder.started} ({path}); wait for it or remove the lock if "
                      f"that run is gone")
    if _set_aside(path, holder):
      logging.warning("took over the stale lock %s of pid %d on host %s (since %s): %s",
                      path, holder.pid, holder.host, holder.started, reason)
  raise UserError(f"could not take the lock {path}: other launches on workdir {workdir} keep "
                  f"taking it; start one run per workdir")


@contextlib.contextmanager
def hold(workdir: str, active: bool = True) -> Iterator[WorkdirLock | None]:
  """Holds `workdir`'s lock for the `with` block, however it ends. `active=False` (the other
  processes of a multi-host run: process 0 holds it for the run) holds nothing."""
  if not active:
    yield None
    return
  lock = acquire(workdir)
  try:
    yield lock
  finally:
    lock.release()
