"""Checkpoints of the whole train state with orbax `CheckpointManager`.

`WORKDIR/checkpoints/<step>/` holds one step; orbax writes into a temporary folder
(`<step>.orbax-checkpoint-tmp...`) and renames it when complete, so an interrupted save never
leaves a half-written step that a resume would pick up (a writing manager removes such
folders when it starts). The state is restored straight into its target shardings (no host
round-trip), and since the input stream is a pure function of (seed, step), the step alone
restores the data position too.

Faults are reported, not raised as tracebacks:
- A step that cannot be read (truncated or damaged files) is skipped for the next newest.
  Orbax 0.12.8 checksums only its OCDBT index nodes (crc32c), not the array data, so damage
  inside a compressed chunk can also restore without an error: this catches what fails to
  decode. Once an older step has restored, the newer ones that failed are renamed
  `<step>.corrupt` (kept for inspection; orbax lists only numeric names). When no step
  restores nothing is renamed, because then the cause is more likely the reader (another
  state layout, memory, permissions) than every step's data, and it is one UserError.
- A save that fails for lack of space, quota or permission, or on a read-only volume, is one
  UserError naming the step, the cause and the newest good step; the failed step's
  temporary folder is removed. Saves finish in the background, so such an error surfaces in
  the next `save`, in `wait` or in `close`, and names the step it belongs to.
"""
import contextlib
import errno
import glob
import logging as python_logging
import os
import re
import shutil
import sys
import traceback
from typing import Any, Iterator

import jax
import orbax.checkpoint as ocp
from absl import logging

from ssl_jax.errors import UserError

CORRUPT_SUFFIX = ".corrupt"
# What orbax appends to a step's folder name while writing it (orbax's TMP_DIR_SUFFIX).
TEMPORARY_SUFFIX = ".orbax-checkpoint-tmp"
# Errors of the volume, not of the program: the user must free space or fix the workdir.
STORAGE_ERRNOS = {errno.ENOSPC: "No space left on device", errno.EDQUOT: "Disk quota exceeded",
                  errno.EACCES: "Permission denied", errno.EPERM: "Operation not permitted",
                  errno.EROFS: "Read-only file system"}
# TensorStore reports a failed file operation as ValueError("...: No space left on device
# [os_error_code='28']"), without an OSError in the exception chain.
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")
# Orbax splits the writing of a replicated array across its replicas (replica-parallel
# saving), each writing a slice, which it cuts with a compiled `slice` per array shape: on a
# mesh of 8 CPU devices a ViT's first save compiled ~150 of them and took 5.1 s instead of
# 0.05 s. A slice this small gains nothing from parallel writes, so only arrays of at least
# this many bytes per replica are split (orbax's own threshold setting; its default on GPUs
# is not to split at all).
MIN_REPLICA_SLICE_BYTES = 1 << 20


def _register_array_handler() -> None:
  """Orbax's handler of jax.Array with MIN_REPLICA_SLICE_BYTES, for every save in the process
  (without orbax's warning that a handler replaces its default: this one is meant to)."""
  def replacing_notice(record: python_logging.LogRecord) -> bool:
    return "overriding" not in str(record.msg)
  absl_logger = logging.get_absl_logger()
  absl_logger.addFilter(replacing_notice)
  try:
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(
            min_slice_bytes_for_replica_parallel=MIN_REPLICA_SLICE_BYTES), override=True)
  finally:
    absl_logger.removeFilter(replacing_notice)


_register_array_handler()


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def first_line(error: BaseException, limit: int = 300) -> str:
  """The first line of the innermost error behind `error`, for a one-line report: orbax wraps
  TensorStore's error ("OUT_OF_RANGE: Error reading ... in OCDBT database ...") in one that
  names only the array index."""
  while error.__cause__ is not None or error.__context__ is not None:
    error = error.__cause__ or error.__context__
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  line = lines[0] if lines else type(error).__name__
  return line if len(line) <= limit else line[:limit - 3] + "..."


def _chain(error: BaseException) -> Iterator[BaseException]:
  """`error`, its causes and contexts, and the members of exception groups, each once."""
  pending, seen = [error], set()
  while pending:
    current = pending.pop()
    if current is None or id(current) in seen:
      continue
    seen.add(id(current))
    yield current
    pending += [current.__cause__, current.__context__]
    if isinstance(current, BaseExceptionGroup):
      pending += list(current.exceptions)


def storage_errno(error: BaseException) -> int | None:
  """The errno of a full, over-quota, unwritable or read-only volume behind `error`, else None.

  Orbax re-raises TensorStore's errors from its background threads, sometimes wrapped, so the
  whole chain is searched, for an OSError and for TensorStore's `os_error_code`.
  """
  for current in _chain(error):
    if isinstance(current, OSError) and current.errno in STORAGE_ERRNOS:
      return current.errno
    for match in _OS_ERROR_CODE.finditer(str(current)):
      if int(match.group(1)) in STORAGE_ERRNOS:
        return int(match.group(1))
  return None


class _QuietStorageTracebacks(python_logging.Filter):
  """Drops the traceback from orbax's and asyncio's log records of a storage error.

  Orbax logs the error of a failed background save, with its traceback, from each thread
  involved (four or five times), and asyncio its tasks that failed with it, before orbax
  re-raises it to the caller, which reports it as one line. Their messages stay; records of
  other errors keep their tracebacks.
  """

  def filter(self, record: python_logging.LogRecord) -> bool:
    from_orbax = f"{os.sep}orbax{os.sep}" in record.pathname or record.name == "asyncio"
    if (from_orbax and record.exc_info and record.exc_info[1] is not None
        and storage_errno(record.exc_info[1]) is not None):
      record.exc_info = None
      record.exc_text = None
    return True


class _QuietAbandonedReads(python_logging.Filter):
  """Drops asyncio's "Future exception was never retrieved" records of the other array reads
  of a restore that already failed on one array (an unreadable step, which `restore_newest`
  reports in one line and skips): orbax gathers the reads, re-raises the first failure, and
  the futures of the others are collected unread, each logged with its traceback (how many
  depends on timing: one CI run printed them, the runs before it did not)."""

  def filter(self, record: python_logging.LogRecord) -> bool:
    if record.name != "asyncio" or not record.exc_info or record.exc_info[2] is None:
      return True
    if "exception was never retrieved" not in str(record.msg):
      return True
    frames = traceback.extract_tb(record.exc_info[2])
    return not any(frame.name == "_read_array_index_and_device_put"
                   and f"{os.sep}orbax{os.sep}" in frame.filename for frame in frames)


class _SkipLateCompletions:
  """An unraisable-error hook that skips TensorStore completing a write or read after the
  event loop of orbax's failed save or restore has closed, and the unawaited reads a failed
  restore leaves behind: nobody waits for them any more, and the failure itself is reported. Python would print each as a traceback (dozens, on a full
  disk). Everything else goes to the previous hook."""

  def __init__(self, previous: Any):
    self.previous = previous

  def __call__(self, unraisable: Any) -> None:
    if self.late_completion(unraisable) or self.abandoned_read(unraisable):
      logging.debug("an I/O finished after its failed checkpoint operation was abandoned")
    else:
      self.previous(unraisable)

  @staticmethod
  def abandoned_read(unraisable: Any) -> bool:
    """A read of one array of a restore that already failed on another (an unreadable step,
    reported and skipped by `restore_newest`): orbax leaves the coroutine unawaited, and when
    it is collected Python prints its own read error as a traceback."""
    code = getattr(unraisable.object, "cr_code", None)
    return (code is not None and code.co_name == "_read_array_index_and_device_put"
            and f"{os.sep}orbax{os.sep}" in code.co_filename)

  @staticmethod
  def late_completion(unraisable: Any) -> bool:
    if (unraisable.exc_type is not RuntimeError
        or str(unraisable.exc_value) != "Event loop is closed"):
      return False
    frames = traceback.extract_tb(unraisable.exc_traceback) if unraisable.exc_traceback else []
    return any(frame.name == "call_soon_threadsafe"
               and frame.filename.endswith(os.path.join("asyncio", "base_events.py"))
               for frame in frames)


def _quiet_failure_noise() -> None:
  """Keeps a failed save or restore to the one line it is reported as: no orbax or asyncio
  tracebacks of its storage error (`_QuietStorageTracebacks`), none of its abandoned I/O
  (`_SkipLateCompletions`, `_QuietAbandonedReads`). Installed once per process; anything else
  prints as before."""
  for logger in (logging.get_absl_logger(), python_logging.getLogger("asyncio")):
    if not any(isinstance(f, _QuietStorageTracebacks) for f in logger.filters):
      logger.addFilter(_QuietStorageTracebacks())
  asyncio_logger = python_logging.getLogger("asyncio")
  if not any(isinstance(f, _QuietAbandonedReads) for f in asyncio_logger.filters):
    asyncio_logger.addFilter(_QuietAbandonedReads())
  if not isinstance(sys.unraisablehook, _SkipLateCompletions):
    sys.unraisablehook = _SkipLateCompletions(sys.unraisablehook)


class Checkpointer:
  """Save periodically, at the end and on demand; keep the newest `keep`; restore the newest
  step that can be read."""

  def __init__(self, workdir: str, keep: int = 3, read_only: bool = False):
    self.directory = checkpoint_dir(workdir)
    # Only a writer cleans up temporary folders: the workdir lock (ssl_jax.run_lock) makes
    # it the only one, while a reader (evaluation) may run beside a save in flight.
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                           read_only=read_only, save_interval_steps=1,
                                           cleanup_tmp_directories=not read_only)
    self._manager = ocp.CheckpointManager(self.directory, options=options)
    self._pending: int | None = None  # the step whose save may still be running
    _quiet_failure_noise()

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """The complete steps, oldest first (not `<step>.corrupt` or temporary folders)."""
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any) -> None:
    """Starts an asynchronous save; device->host copy happens before this returns.

    The previous save is finished first, so that its storage error (see the module
    docstring) is reported for its own step.
    """
    self._finish_pending()
    with self._storage_errors(step):
      self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
    self._pending = step

  def restore(self, abstract_state: Any, step: int | None = None) -> Any:
    """Restores `step` (default newest) into the shapes, dtypes and shardings of `abstract_state`."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise UserError("no checkpoint to restore")
    try:
      return self._restore_step(abstract_state, step)
    except Exception as e:  # pylint: disable=broad-except  (orbax raises plain Exception too)
      raise UserError(f"checkpoint at step {step} could not be restored: {first_line(e)}"
                      ) from None

  def restore_newest(self, abstract_state: Any) -> tuple[Any, int] | None:
    """(state, step) of the newest step that restores; None when there is no checkpoint.

    A step that fails is logged (one warning line) and the next newest is tried; the failed
    ones are renamed `<step>.corrupt` once an older step has restored. When none restores it
    is a UserError and nothing is renamed (see the module docstring).
    """
    failed: list[tuple[int, str]] = []
    for step in reversed(self.all_steps()):
      try:
        state = self._restore_step(abstract_state, step)
      except Exception as e:  # pylint: disable=broad-except  (orbax raises plain Exception too)
        failed.append((step, first_line(e)))
        logging.warning("checkpoint of step %d in %s could not be restored, trying an older "
                        "one: %s", step, self.directory, failed[-1][1])
        continue
      self._move_aside([bad for bad, _ in failed], restored=step)
      return state, step
    if failed:
      steps = ", ".join(str(step) for step, _ in failed)
      raise UserError(f"no checkpoint in {self.directory} could be restored (steps {steps}); "
                      f"step {failed[0][0]}: {failed[0][1]}")
    return None

  def wait(self) -> None:
    """Blocks until the save in flight is complete (or its storage error is a UserError)."""
    self._finish_pending()

  def close(self) -> None:
    self._finish_pending()
    self._manager.close()

  def _restore_step(self, abstract_state: Any, step: int) -> Any:
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

  def _move_aside(self, steps: list[int], restored: int) -> None:
    """Renames each step's folder to `<step>.corrupt` (`.corrupt.2`, ... if taken), then lets
    the manager list the steps again: it caches them, and a renamed step must not be deleted
    or overwritten through a stale entry."""
    for step in steps:
      source = os.path.join(self.directory, str(step))
      target = source + CORRUPT_SUFFIX
      copy = 1
      while os.path.exists(target):  # never "_<n>": orbax would read "<x>_<n>" as step n
        copy += 1
        target = f"{source}{CORRUPT_SUFFIX}.{copy}"
      try:
        os.rename(source, target)
      except OSError as e:
        logging.warning("could not move the unreadable checkpoint %s aside: %s", source,
                        e.strerror or e)
        continue
      logging.warning("moved the unreadable checkpoint of step %d to %s; restored step %d",
                      step, target, restored)
    if steps:
      self._manager.reload()

  def _finish_pending(self) -> None:
    step, self._pending = self._pending, None
    if step is None:
      self._manager.wait_until_finished()
      return
    with self._storage_errors(step):
      self._manager.wait_until_finished()

  @contextlib.contextmanager
  def _storage_errors(self, step: int) -> Iterator[None]:
    """A storage error of `step`'s save becomes a one-line UserError, after its temporary
    folder is removed; any other error propagates unchanged."""
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except  (re-raised unless a storage error)
      code = storage_errno(e)
      if code is None:
        raise
      self._remove_temporary(step)
      newest = self._newest_on_disk()
      kept = (f"the newest good checkpoint is step {newest}" if newest is not None
              else "there is no good checkpoint yet")
      raise UserError(f"could not write the checkpoint of step {step} in {self.directory}: "
                      f"{STORAGE_ERRNOS[code]}; {kept}") from None

  def _remove_temporary(self, step: int) -> None:
    for path in glob.glob(os.path.join(glob.escape(self.directory),
                                       f"{step}{TEMPORARY_SUFFIX}*")):
      for _ in range(3):  # orbax's own cleanup may be removing parts of it at the same time
        try:
          shutil.rmtree(path)
          break
        except FileNotFoundError:
          if not os.path.exists(path):
            break
        except OSError as e:
          logging.warning("could not remove the partial checkpoint %s: %s", path,
                          e.strerror or e)
          break

  def _newest_on_disk(self) -> int | None:
    """The newest complete step as the volume has it now (the manager's list is a cache)."""
    with contextlib.suppress(OSError, ValueError):  # unlisted: the manager's cache will do
      self._manager.reload()
    return self._manager.latest_step()
