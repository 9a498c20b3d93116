"""The one trainer: mesh, state, jitted step, loop, checkpoints, metrics, online probe.

Every objective runs through this file unchanged; it talks to the objective only through the
method seam (`ssl_jax.methods`). The step is `jax.jit(train_step, donate_argnums=0)` over a
mesh of all devices (`config.mesh`), batch split over every axis, each state leaf replicated
or FSDP-sharded by `config.sharding_rules` (`ssl_jax.parallel`), so the same program runs on
one CPU, 8 fake CPU devices, a GPU, or a multi-host pod.

Sections: (1) state and step, importable without TensorFlow (the benchmark and accelerator
machines use them on synthetic data); (2) `run`, the loop over the TFDS input pipeline.
"""
import signal
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from ssl_jax import accumulation, checkpoint as checkpoint_lib, collapse
from ssl_jax import config_lib, losses, methods, metrics as metrics_lib, modalities, optimizers
from ssl_jax import parallel, run_lock
from ssl_jax.errors import TrainingDivergedError

State = dict[str, Any]


# ----------------------------------------------------------------------------------------------
# (1) State and step.
# ----------------------------------------------------------------------------------------------


class Trainer:
  """Builds the train state and step for one method, optimizer and mesh."""

  def __init__(self, config: ml_collections.ConfigDict, method: methods.Method,
               mesh: jax.sharding.Mesh, input_shape: tuple[int, ...],
               num_classes: int | None, length: config_lib.TrainingLength):
    self.config = config
    self.method = method
    self.modality = modalities.find(config)
    self.mesh = mesh
    self.input_shape = tuple(input_shape)
    self.total_steps = length.total_steps
    collapse.check(collapse.settings_of(config))
    self.probe_classes = num_classes if config.online_probe.enabled else None
    warmup = config_lib.to_steps(config.optimizer, "warmup", length.steps_per_epoch, default=0)
    optimizers.check(config.optimizer)
    peak = optimizers.peak_learning_rate(config.optimizer, config.batch_size)
    self.schedule = optimizers.warmup_cosine(peak, warmup, length.schedule_steps,
                                             config.optimizer.end_lr_factor)
    self.tx = optimizers.build(config.optimizer, self.schedule)
    self.probe_tx = optax.adam(config.online_probe.lr)
    replicated = parallel.replicated(mesh)
    parallel.check_rules(config.sharding_rules, config.fsdp_min_size)
    self.abstract_state = jax.eval_shape(self._init_state, jax.random.PRNGKey(0))
    self.accumulation_steps = config.get("grad_accum_steps", 1)
    accumulation.check_batch(config.batch_size, self.accumulation_steps, mesh.size)
    self.accumulation = accumulation.choose_mode(
        self.accumulation_steps, config.method, method, self.abstract_state["extra"],
        self._embedding_batch_stats)
    self.state_shardings = parallel.state_shardings(
        self.abstract_state, mesh, config.sharding_rules, config.fsdp_min_size)
    self.abstract_state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        self.abstract_state, self.state_shardings)
    self.init_state = jax.jit(self._init_state, out_shardings=self.state_shardings)
    self.train_step = jax.jit(self._train_step, donate_argnums=0,
                              out_shardings=(self.state_shardings, replicated))

  def _init_state(self, rng: jax.Array) -> State:
    init_rng, probe_rng, state_rng = jax.random.split(rng, 3)
    batch = self.modality.example_batch(self.config, self.input_shape)
    model_params, extra = self.method.init(init_rng, batch)
    params = {"model": model_params}
    opt_state = {"model": self.tx.init(model_params)}
    if self.probe_classes:
      features = self.method.represent(model_params, extra,
                                      self.modality.represent_inputs(batch))
      params["probe"] = {
          "kernel": jax.random.normal(probe_rng, (features.shape[-1], self.probe_classes)) * 0.01,
          "bias": jnp.zeros((self.probe_classes,))}
      opt_state["probe"] = self.probe_tx.init(params["probe"])
    return {"step": jnp.zeros((), jnp.int32), "params": params, "extra": extra,
            "opt_state": opt_state, "rng": state_rng}

  def _embedding_batch_stats(self):
    """The shapes of the BatchNorm statistics the method's `embedding_loss.embed` updates."""
    batch = self.modality.example_batch(self.config, self.input_shape)
    state = self.abstract_state
    return jax.eval_shape(self.method.embedding_loss.embed, state["params"]["model"],
                          state["extra"], batch, jax.random.PRNGKey(0))[1]

  def _model_gradients(self, params, extra, batch, rng, step):
    """(gradient, loss, StepOutput) of the method's loss on the whole batch, taken in
    `config.grad_accum_steps` microbatches when that is above 1 (`ssl_jax.accumulation`)."""
    if self.accumulation == accumulation.FULL_BATCH:
      (loss, output), grads = jax.value_and_grad(self.method.loss, has_aux=True)(
          params, extra, batch, rng, step)
      return grads, loss, output
    if self.accumulation == accumulation.PER_EXAMPLE:
      return accumulation.per_example_gradients(
          lambda p, e, b, r: self.method.loss(p, e, b, r, step), params, extra, batch, rng,
          self.accumulation_steps, self.mesh)
    return accumulation.embedding_cache_gradients(
        self.method.embedding_loss, params, extra, batch, rng, step, self.accumulation_steps,
        self.mesh)

  def _train_step(self, state: State, batch: dict[str, jax.Array]):
    step = state["step"]
    rng = jax.random.fold_in(state["rng"], step)
    augment_rng, loss_rng, example_rng = jax.random.split(rng, 3)
    batch = self.modality.device_preprocess(augment_rng, batch, self.config)
    # One key per example for the method's per-example draws (`methods.example_keys`), drawn
    # for the global batch so that microbatching does not change them.
    size = jax.tree.leaves(batch)[0].shape[0]
    batch = {**batch, "example_key": jax.random.split(example_rng, size)}

    model_grads, loss, output = self._model_gradients(state["params"]["model"], state["extra"],
                                                      batch, loss_rng, step)
    grads, probe_metrics = {"model": model_grads}, {}
    if "probe" in state["params"]:
      def probe_objective(probe):
        logits = jax.lax.stop_gradient(output.features) @ probe["kernel"] + probe["bias"]
        probe_loss = jnp.mean(losses.softmax_cross_entropy(logits, batch["label"]))
        return probe_loss, {"probe_loss": probe_loss,
                            "probe_accuracy": losses.top1_accuracy(logits, batch["label"])}
      grads["probe"], probe_metrics = jax.grad(probe_objective, has_aux=True)(
          state["params"]["probe"])
    params, opt_state = {}, {}
    updates, opt_state["model"] = self.tx.update(
        grads["model"], state["opt_state"]["model"], state["params"]["model"])
    params["model"] = optax.apply_updates(state["params"]["model"], updates)
    if "probe" in grads:
      updates, opt_state["probe"] = self.probe_tx.update(
          grads["probe"], state["opt_state"]["probe"], state["params"]["probe"])
      params["probe"] = optax.apply_updates(state["params"]["probe"], updates)
    extra = self.method.update_extra(params["model"], output.extra, step)
    is_log_step = ((step + 1) % self.config.log_every_steps == 0) | (step + 1 == self.total_steps)
    measurements = {"loss": loss, "lr": self.schedule(step),
                    "grad_norm": optax.tree.norm(grads["model"]),
                    "param_norm": optax.tree.norm(params["model"]),
                    **output.metrics, **probe_metrics,
                    **collapse.measure_at(is_log_step, output.features, output.metrics)}
    new_state = {"step": step + 1, "params": params, "extra": extra, "opt_state": opt_state,
                 "rng": state["rng"]}
    return new_state, measurements

  def create_state(self, seed: int) -> State:
    return self.init_state(jax.random.PRNGKey(seed))

  def initial_state(self, seed: int) -> State:
    """The state a run starts from: `create_state(seed)`, with the method's published
    parameters (`Method.published_params`, from `config.init_from`) in place of the fresh
    model parameters, laid out with the same shardings. The optimizer's state does not
    depend on the parameters' values at step 0 (zero moments), so it is kept."""
    state = self.create_state(seed)
    if self.method.published_params is None:
      return state
    fresh = state["params"]["model"]
    published = self.method.published_params(jax.device_get(fresh))
    model = jax.tree.map(
        lambda new, old: jax.make_array_from_callback(
            old.shape, old.sharding, lambda index: np.asarray(new, old.dtype)[index]),
        published, fresh)
    return {**state, "params": {**state["params"], "model": model}}


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


class Outcome(NamedTuple):
  """How a training run ended: its final state, and whether it reached its last step (False
  when SIGTERM stopped it early, after saving a checkpoint)."""
  state: State
  completed: bool


def run(config: ml_collections.ConfigDict, workdir: str) -> State:
  """Trains `config` in `workdir`, resuming from its newest checkpoint; returns the final
  state. `ssl_jax.main.run` trains and then evaluates."""
  return train(config, workdir).state


def train(config: ml_collections.ConfigDict, workdir: str) -> Outcome:
  """Trains `config` in `workdir`, resuming from its newest checkpoint. It holds the
  workdir's lock meanwhile: a second run on the same workdir fails (`ssl_jax.run_lock`)."""
  from ssl_jax.data import inputs as inputs_lib  # pylint: disable=g-import-not-at-top  (TF)

  # Checks first: every bad input fails here, before anything is written or compiled.
  methods.find(config)
  config = modalities.find(config).resolve_config(config)  # e.g. the dataset's statistics
  mesh = parallel.make_mesh(config.mesh)
  config_lib.check_batch_size(config.batch_size, mesh.size, jax.process_count())
  inputs = inputs_lib.Inputs(config, workdir, create_tokenizer=True)
  info = inputs.info()
  length = config_lib.training_length(config, info.num_train_examples)
  method = methods.build(config, length)
  trainer = Trainer(config, method, mesh, info.input_shape, info.num_classes, length)
  optimizers.warn_if_warmup_outlasts(
      config_lib.to_steps(config.optimizer, "warmup", length.steps_per_epoch, default=0),
      length.total_steps)
  config_lib.check_workdir_writable(workdir)
  with run_lock.hold(workdir, active=jax.process_index() == 0):  # one run per workdir
    return _train_holding_lock(config, workdir, inputs, length, trainer)


def _train_holding_lock(config: ml_collections.ConfigDict, workdir: str, inputs: Any,
                        length: config_lib.TrainingLength, trainer: "Trainer") -> Outcome:
  """`train` after its checks, while this run holds the workdir (`ssl_jax.run_lock`)."""
  total_steps, steps_per_epoch = length.total_steps, length.steps_per_epoch
  mesh = trainer.mesh
  config_lib.save_or_check(config, workdir)

  checkpoints = checkpoint_lib.Checkpointer(workdir, keep=config.keep_checkpoints)
  restored = checkpoints.restore_newest(trainer.abstract_state)
  if restored is None:
    state = trainer.initial_state(config.seed)
    start = 0
    if total_steps == 0:  # nothing to train: the initial state is what evaluation reads
      checkpoints.save(0, state)
  else:
    state, start = restored
    logging.info("resumed from %s at step %d", checkpoint_lib.checkpoint_dir(workdir), start)

  writer = metrics_lib.MetricsWriter(workdir)
  monitor = collapse.Monitor(collapse.settings_of(config))
  monitor.resume(workdir, start)
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
          warning = monitor.observe(step, scalars)
          scalars.update(throughput.update(step))
          writer.write(step, scalars)
          logging.info(metrics_lib.log_line(step, total_steps, scalars))
          if warning:
            logging.warning(warning)
            monitor.stop_if_asked(warning, last_saved)  # CollapseError with config.collapse.stop
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
  return Outcome(state, completed=not stopped_early)
