"""Checkpoints of the whole train state with orbax `CheckpointManager`.

`WORKDIR/checkpoints/<step>/` holds one step; orbax writes into a temporary folder and renames
it when complete, so an interrupted save never leaves a half-written step that a resume would
pick up. The state is restored straight into its target shardings (no host round-trip), and
since the input stream is a pure function of (seed, step), the step alone restores the data
position too.
"""
import os
from typing import Any

import orbax.checkpoint as ocp

from ssl_jax.errors import UserError


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


class Checkpointer:
  """Save periodically, at the end and on demand; keep the newest `keep`; restore the newest."""

  def __init__(self, workdir: str, keep: int = 3, read_only: bool = False):
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                           read_only=read_only, save_interval_steps=1)
    self._manager = ocp.CheckpointManager(checkpoint_dir(workdir), options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any) -> None:
    """Starts an asynchronous save; device->host copy happens before this returns."""
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def restore(self, abstract_state: Any, step: int | None = None) -> Any:
    """Restores `step` (default newest) into the shapes, dtypes and shardings of `abstract_state`."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise UserError("no checkpoint to restore")
    try:
      return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
    except (ValueError, KeyError, FileNotFoundError, OSError) as e:
      first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise UserError(f"checkpoint at step {step} could not be restored: {first_line}") from None

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()

