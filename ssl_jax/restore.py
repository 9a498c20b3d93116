"""Restoring a trained run from its workdir: the config it was trained with, its method, the
trainer that shapes its state, and its newest checkpoint.

Evaluation (`ssl_jax.evaluate`) and the inference command lines (`fill_mask`, `generate`) all
read runs through here; none of them imports the others.
"""
from typing import Any, NamedTuple

from ssl_jax import checkpoint as checkpoint_lib
from ssl_jax import config_lib, methods, parallel, train
from ssl_jax.data import inputs as inputs_lib
from ssl_jax.errors import UserError


class Restored(NamedTuple):
  """A run's newest checkpoint, with the method and trainer that read it."""
  method: methods.Method
  trainer: train.Trainer
  state: dict
  step: int
  inputs: inputs_lib.Inputs  # the training dataset's


def latest(config: Any, workdir: str) -> Restored:
  """The newest checkpoint in `workdir`, restored into the state `config` describes."""
  inputs = inputs_lib.Inputs(config, workdir)
  info = inputs.info()
  mesh = parallel.make_mesh(config.mesh)
  length = config_lib.training_length(config, info.num_train_examples)
  method = methods.build(config, length)
  trainer = train.Trainer(config, method, mesh, info.input_shape, info.num_classes, length)
  checkpoints = checkpoint_lib.Checkpointer(workdir, read_only=True)
  state, step = checkpoints.restore_newest(trainer.abstract_state) or (None, None)
  if step is None:
    raise UserError(f"no checkpoint in '{checkpoint_lib.checkpoint_dir(workdir)}'")
  checkpoints.close()
  return Restored(method, trainer, state, int(step), inputs)
