"""Checkpoints of the whole train state with orbax `CheckpointManager`.

`WORKDIR/checkpoints/<step>/` holds one step; orbax writes into a temporary folder and renames
it when complete, so an interrupted save never leaves a half-written step that a resume would
pick up. The state is restored straight into its target shardings (no host round-trip), and
since the input stream is a pure function of (seed, step), the step alone restores the data
position too.

A step that cannot be read (truncated or damaged files) is skipped for the next newest.
Orbax 0.12.8 checksums only its OCDBT index nodes (crc32c), not the array data, so damage
inside a compressed chunk can also restore without an error: this catches what fails to
decode. Once an older step has restored, the newer ones that failed are renamed
`<step>.corrupt` (kept for inspection; orbax lists only numeric names). When no step
restores nothing is renamed, because then the cause is more likely the reader (another
state layout, memory, permissions) than every step's data, and it is one UserError.
"""
import os
from typing import Any

import orbax.checkpoint as ocp
from absl import logging

from ssl_jax.errors import UserError

CORRUPT_SUFFIX = ".corrupt"


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


class Checkpointer:
  """Save periodically, at the end and on demand; keep the newest `keep`; restore the newest
  step that can be read."""

  def __init__(self, workdir: str, keep: int = 3, read_only: bool = False):
    self.directory = checkpoint_dir(workdir)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                           read_only=read_only, save_interval_steps=1)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """The complete steps, oldest first (not `<step>.corrupt` or temporary folders)."""
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any) -> None:
    """Starts an asynchronous save; device->host copy happens before this returns."""
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

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
    self._manager.wait_until_finished()

  def close(self) -> None:
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
