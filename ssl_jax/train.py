"""The one trainer: mesh, state, jitted step, loop, checkpoints, metrics, online probe.

Every objective runs through this file unchanged; it talks to the objective only through the
method seam (`ssl_jax.methods`). The step is `jax.jit(train_step, donate_argnums=0)` over a
mesh of all devices, batch sharded on `data`, state replicated, so the same program runs on
one CPU, 8 fake CPU devices, a GPU, or a multi-host pod.

Sections: (1) state and step, importable without TensorFlow (the benchmark and accelerator
machines use them on synthetic data); (2) `run`, the loop over the TFDS input pipeline.
"""
import signal
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from ssl_jax import checkpoint as checkpoint_lib
from ssl_jax import config_lib, losses, methods, metrics as metrics_lib, optimizers, parallel
from ssl_jax import run_lock
from ssl_jax.data import augment
from ssl_jax.errors import TrainingDivergedError

State = dict[str, Any]


# ----------------------------------------------------------------------------------------------
# (1) State and step.
# ----------------------------------------------------------------------------------------------


TEXT_INPUTS = ("tokens", "attention_mask", "segment_ids")  # what a text `represent` reads
SEQUENCE_INPUTS = ("signal", "length")  # what a sequence `represent` reads
VIDEO_INPUTS = ("frames",)  # what a video `represent` reads (and evaluation's "mask")


def example_batch(config: ml_collections.ConfigDict, input_shape: tuple[int, ...],
                  batch_size: int = 2) -> dict[str, jax.Array]:
  """A batch of the shapes the method sees after device preprocessing (for init).

  Images (`config.data.modality` "image", the default): float views [b, V, H, W, C] and any
  multi-crop local views, `input_shape` = (H, W, C). Text ("text"): int32 `tokens`,
  `attention_mask`, `segment_ids` [b, L] and the next-sentence label [b], `input_shape` = (L,).
  Sequences ("sequence"): float `signal` [b, T, C] and int32 `length` [b], `input_shape` =
  (T, C). Videos ("video"): float `frames` [b, T, H, W, C] in [0, 1] (`device_preprocess`
  scales the pipeline's uint8), `input_shape` = (T, H, W, C). Image–caption pairs
  ("image_text"): the views of an image run and int32 caption `tokens`, `attention_mask`
  [b, config.data.max_length].
  """
  modality = config.data.get("modality", "image")
  if modality == "video":
    return {"frames": jnp.zeros((batch_size,) + tuple(input_shape), jnp.float32)}
  if modality == "sequence":
    return {"signal": jnp.zeros((batch_size,) + tuple(input_shape), jnp.float32),
            "length": jnp.full((batch_size,), input_shape[0], jnp.int32)}
  if modality == "text":
    tokens = jnp.zeros((batch_size,) + tuple(input_shape), jnp.int32)
    return {"tokens": tokens, "attention_mask": jnp.ones_like(tokens),
            "segment_ids": tokens, "next_sentence": jnp.zeros((batch_size,), jnp.int32)}
  views = jnp.zeros((batch_size, config.data.num_views) + tuple(input_shape), jnp.float32)
  batch = {"views": views}
  if modality == "image_text":  # and each image's caption row
    batch["tokens"] = jnp.zeros((batch_size, config.data.max_length), jnp.int32)
    batch["attention_mask"] = jnp.ones_like(batch["tokens"])
  num_local = config.data.get("local_views", 0)
  if num_local:
    side = config.data.local_image_size
    batch["local_views"] = jnp.zeros((batch_size, num_local, side, side, input_shape[-1]),
                                     jnp.float32)
  return batch


def represent_inputs(batch: dict[str, jax.Array]):
  """What `Method.represent` takes from a training batch: the first view's images, or the
  text (`TEXT_INPUTS`), sequence (`SEQUENCE_INPUTS`) or video (`VIDEO_INPUTS`, with an
  evaluation batch's "mask" so that held-out metrics can skip padding rows) inputs as a
  dict."""
  if "views" in batch:
    return batch["views"][:, 0]
  if "frames" in batch:
    return {key: batch[key] for key in VIDEO_INPUTS + ("mask",) if key in batch}
  return {key: batch[key] for key in (SEQUENCE_INPUTS if "signal" in batch else TEXT_INPUTS)}


def device_preprocess(rng: jax.Array, batch: dict[str, jax.Array],
                      config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """Augments and normalises the uint8 views on device, per example, with an explicit rng;
  scales video frames to [0, 1]."""
  batch = dict(batch)
  if "frames" in batch:
    batch["frames"] = augment.unit_frames(batch["frames"])
  if "views" in batch:
    batch["views"] = augment.augment_views(rng, batch["views"], config)
  if "local_views" in batch:
    section = "local_augment" if "local_augment" in config else "augment"
    batch["local_views"] = augment.augment_views(jax.random.fold_in(rng, 1),
                                                 batch["local_views"], config, section)
  return batch


class Trainer:
  """Builds the train state and step for one method, optimizer and mesh."""

  def __init__(self, config: ml_collections.ConfigDict, method: methods.Method,
               mesh: jax.sharding.Mesh, input_shape: tuple[int, ...],
               num_classes: int | None, length: config_lib.TrainingLength):
    self.config = config
    self.method = method
    self.mesh = mesh
    self.input_shape = tuple(input_shape)
    self.probe_classes = num_classes if config.online_probe.enabled else None
    warmup = config_lib.to_steps(config.optimizer, "warmup", length.steps_per_epoch, default=0)
    peak = optimizers.peak_learning_rate(config.optimizer, config.batch_size)
    self.schedule = optimizers.warmup_cosine(peak, warmup, length.schedule_steps,
                                             config.optimizer.end_lr_factor)
    self.tx = optimizers.build(config.optimizer, self.schedule)
    self.probe_tx = optax.adam(config.online_probe.lr)
    replicated = parallel.replicated(mesh)
    self.abstract_state = jax.eval_shape(self._init_state, jax.random.PRNGKey(0))
    self.state_shardings = parallel.tree_shardings(self.abstract_state, replicated)
    self.abstract_state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        self.abstract_state, self.state_shardings)
    self.init_state = jax.jit(self._init_state, out_shardings=self.state_shardings)
    self.train_step = jax.jit(self._train_step, donate_argnums=0,
                              out_shardings=(self.state_shardings, replicated))

  def _init_state(self, rng: jax.Array) -> State:
    init_rng, probe_rng, state_rng = jax.random.split(rng, 3)
    batch = example_batch(self.config, self.input_shape)
    model_params, extra = self.method.init(init_rng, batch)
    params = {"model": model_params}
    opt_state = {"model": self.tx.init(model_params)}
    if self.probe_classes:
      features = self.method.represent(model_params, extra, represent_inputs(batch))
      params["probe"] = {
          "kernel": jax.random.normal(probe_rng, (features.shape[-1], self.probe_classes)) * 0.01,
          "bias": jnp.zeros((self.probe_classes,))}
      opt_state["probe"] = self.probe_tx.init(params["probe"])
    return {"step": jnp.zeros((), jnp.int32), "params": params, "extra": extra,
            "opt_state": opt_state, "rng": state_rng}

  def _train_step(self, state: State, batch: dict[str, jax.Array]):
    step = state["step"]
    rng = jax.random.fold_in(state["rng"], step)
    augment_rng, loss_rng = jax.random.split(rng)
    batch = device_preprocess(augment_rng, batch, self.config)

    def objective(params):
      loss, output = self.method.loss(params["model"], state["extra"], batch, loss_rng, step)
      probe_metrics = {}
      total = loss
      if "probe" in params:
        features = jax.lax.stop_gradient(output.features)
        logits = features @ params["probe"]["kernel"] + params["probe"]["bias"]
        probe_loss = jnp.mean(losses.softmax_cross_entropy(logits, batch["label"]))
        total = loss + probe_loss
        probe_metrics = {"probe_loss": probe_loss,
                         "probe_accuracy": losses.top1_accuracy(logits, batch["label"])}
      return total, (loss, output, probe_metrics)

    grads, (loss, output, probe_metrics) = jax.grad(objective, has_aux=True)(state["params"])
    params, opt_state = {}, {}
    updates, opt_state["model"] = self.tx.update(
        grads["model"], state["opt_state"]["model"], state["params"]["model"])
    params["model"] = optax.apply_updates(state["params"]["model"], updates)
    if "probe" in grads:
      updates, opt_state["probe"] = self.probe_tx.update(
          grads["probe"], state["opt_state"]["probe"], state["params"]["probe"])
      params["probe"] = optax.apply_updates(state["params"]["probe"], updates)
    extra = self.method.update_extra(params["model"], output.extra, step)
    measurements = {"loss": loss, "lr": self.schedule(step),
                    "grad_norm": optax.tree.norm(grads["model"]),
                    "param_norm": optax.tree.norm(params["model"]),
                    **output.metrics, **probe_metrics}
    new_state = {"step": step + 1, "params": params, "extra": extra, "opt_state": opt_state,
                 "rng": state["rng"]}
    return new_state, measurements

  def create_state(self, seed: int) -> State:
    return self.init_state(jax.random.PRNGKey(seed))


# ----------------------------------------------------------------------------------------------
# (2) The loop.
# ----------------------------------------------------------------------------------------------


class _PreemptionFlag:
  """Set by SIGTERM; the loop saves a checkpoint at the next step and stops."""

  def __init__(self):
    self.raised = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. called from a notebook worker)
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.raised = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _check_finite(step: int, scalars: dict[str, float], last_saved: int | None) -> None:
  loss = scalars["loss"]
  if not np.isfinite(loss):
    kept = f"the last good checkpoint (step {last_saved}) is kept" if last_saved is not None \
        else "no checkpoint was written"
    raise TrainingDivergedError(f"loss is {loss} at step {step}; training stopped and {kept}")


def run(config: ml_collections.ConfigDict, workdir: str) -> State:
  """Trains `config` in `workdir`, resuming from its newest checkpoint; returns the final state.

  When training completes (not on SIGTERM) and `config.evaluate_at_end` is set, it runs the
  downstream evaluation on the final checkpoint (`ssl_jax.evaluate.run`). It holds the
  workdir's lock throughout: a second run on the same workdir fails (`ssl_jax.run_lock`).
  """
  from ssl_jax.data import inputs as inputs_lib  # pylint: disable=g-import-not-at-top  (TF)

  # Checks first: every bad input fails here, before anything is written or compiled.
  methods.find(config)
  mesh = parallel.make_mesh(config.mesh_data_axis)
  config_lib.check_batch_size(config.batch_size, mesh.size, jax.process_count())
  inputs = inputs_lib.Inputs(config, workdir, create_tokenizer=True)
  info = inputs.info()
  length = config_lib.training_length(config, info.num_train_examples)
  method = methods.build(config, length)
  config_lib.check_workdir_writable(workdir)
  with run_lock.hold(workdir, active=jax.process_index() == 0):  # one run per workdir
    return _run_holding_lock(config, workdir, mesh, inputs, info, length, method)


def _run_holding_lock(config: ml_collections.ConfigDict, workdir: str, mesh: jax.sharding.Mesh,
                      inputs: Any, info: Any, length: config_lib.TrainingLength,
                      method: methods.Method) -> State:
  """`run` after its checks, while this run holds the workdir (`ssl_jax.run_lock`)."""
  total_steps, steps_per_epoch = length.total_steps, length.steps_per_epoch
  config_lib.save_or_check(config, workdir)

  trainer = Trainer(config, method, mesh, info.input_shape, info.num_classes, length)
  checkpoints = checkpoint_lib.Checkpointer(workdir, keep=config.keep_checkpoints)
  restored = checkpoints.restore_newest(trainer.abstract_state)
  if restored is None:
    state = trainer.create_state(config.seed)
    start = 0
  else:
    state, start = restored
    logging.info("resumed from %s at step %d", checkpoint_lib.checkpoint_dir(workdir), start)

  writer = metrics_lib.MetricsWriter(workdir)
  throughput = metrics_lib.Throughput(start, total_steps, config.batch_size)
  batches = inputs.train_batches(start_step=start, process_index=jax.process_index(),
                                 process_count=jax.process_count())
  last_saved = start if start else None
  stopped_early = False
  logging.info("training %s on %s: steps %d -> %d (%d per epoch), %d devices",
               config.method, config.dataset, start, total_steps, steps_per_epoch, mesh.size)
  try:
    with _PreemptionFlag() as preemption:
      for step in range(start + 1, total_steps + 1):
        batch = parallel.global_batch(next(batches), mesh)
        state, measurements = trainer.train_step(state, batch)
        preempted = preemption.raised  # read once: a signal may land at any point below
        is_log = step % config.log_every_steps == 0 or step == total_steps
        is_save = step % config.checkpoint_every_steps == 0 or step == total_steps or preempted
        if is_log or is_save:
          scalars = {k: float(v) for k, v in jax.device_get(measurements).items()}
          _check_finite(step, scalars, last_saved)
        if is_log:
          scalars.update(throughput.update(step))
          writer.write(step, scalars)
          logging.info(metrics_lib.log_line(step, total_steps, scalars))
        if is_save:
          checkpoints.save(step, state)
          last_saved = step
        if preempted:
          logging.warning("SIGTERM: saved a checkpoint at step %d and stopped", step)
          stopped_early = True
          break
  finally:  # an error must not lose the save in flight: it is the last good checkpoint
    checkpoints.wait()
    checkpoints.close()
    writer.close()
  if config.evaluate_at_end and not stopped_early:
    from ssl_jax import evaluate  # pylint: disable=g-import-not-at-top
    evaluate.run(workdir)
  return state
