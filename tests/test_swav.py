"""SwAV (`ssl_jax/methods/swav.py`): the swapped prediction and its Sinkhorn codes against a
NumPy reading of the paper and the authors' `main_swav.py`, the queue (codes of [queue; batch],
its shift), the whole method's loss against NumPy from its own embeddings, the sharded step
(queue active) against one device, the frozen prototypes, one step of the ImageNet recipe on
mock TFDS data, and the config checks."""
import importlib
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from ssl_jax import config_lib, losses, methods, parallel, train
from ssl_jax.data import image_pipeline
from ssl_jax.errors import UserError
from ssl_jax.methods import swav
from ssl_jax.models import apply_in_train_mode, build_encoder
from ssl_jax.models.heads import MLPHead, ProjectedEncoder
from tiny_configs import assert_trees_close, host_copy, override

LENGTH = config_lib.TrainingLength(steps_per_epoch=10, total_steps=100, schedule_steps=100)


# ---------------------------------------------------------------- NumPy reference (the paper)

def sinkhorn_reference(scores, epsilon, iterations):
  """Alg. 1 of the paper / `distributed_sinkhorn`: Q = exp(scores / eps)^T [K, B], Q /= sum Q;
  repeat: rows (prototypes) to 1/K, columns (examples) to 1/B; return (B * Q)^T."""
  q = np.exp(np.asarray(scores, np.float64) / epsilon).T
  q /= q.sum()
  k, b = q.shape
  for _ in range(iterations):
    q /= q.sum(axis=1, keepdims=True) * k
    q /= q.sum(axis=0, keepdims=True) * b
  return (q * b).T


def log_softmax(x):
  x = x - x.max(axis=1, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def swav_reference(z_crops, prototypes, assigned, temperature, epsilon, iterations,
                   queue=None):
  """The loss of `main_swav.py` in float64: unit prototypes c_k (columns), scores z^T c; for
  each assigned crop a, codes q_a from Sinkhorn on [queue scores; batch scores] (the batch's
  rows kept); then sum over every other crop v of -mean_b sum_k q_a log softmax(z_v^T c /
  temperature), divided by (crops - 1); averaged over the assigned crops."""
  c = np.asarray(prototypes, np.float64)
  c = c / np.linalg.norm(c, axis=0, keepdims=True)
  scores = [np.asarray(z, np.float64) @ c for z in z_crops]
  total, all_codes = 0.0, []
  for i, a in enumerate(assigned):
    rows = scores[a]
    if queue is not None:
      rows = np.concatenate([np.asarray(queue[i], np.float64) @ c, rows])
    codes = sinkhorn_reference(rows, epsilon, iterations)[-len(scores[a]):]
    all_codes.append(codes)
    others = [v for v in range(len(z_crops)) if v != a]
    total += sum(-np.mean(np.sum(codes * log_softmax(scores[v] / temperature), axis=1))
                 for v in others) / len(others)
  return total / len(assigned), all_codes


def unit_rows(rng, *shape):
  x = rng.normal(size=shape)
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------------------------- the loss

@pytest.mark.parametrize("assigned", [(0, 1), (1,)])
def test_swapped_prediction_matches_the_papers_multicrop_loss(assigned):
  """2 global + 3 local crops of 16 examples, 12 prototypes (not unit: the forward normalises
  them): the loss, the codes, and the gradient (codes are constants: no gradient through
  Sinkhorn)."""
  rng = np.random.default_rng(0)
  z_crops = [unit_rows(rng, 16, 8) for _ in range(5)]
  prototypes = rng.normal(size=(8, 12)).astype(np.float32) * 3.0
  settings = dict(assigned=assigned, temperature=0.1, epsilon=0.05, iterations=3)

  def loss(z_crops, prototypes):
    value, codes, _ = swav.swapped_assignment_loss(
        [jnp.asarray(z) for z in z_crops], jnp.asarray(prototypes), None, False, **settings)
    return value, codes
  (value, codes), grads = jax.value_and_grad(loss, has_aux=True)(z_crops, prototypes)
  expected, expected_codes = swav_reference(z_crops, prototypes, **settings)
  assert float(value) == pytest.approx(expected, rel=1e-5)
  for q, expected_q in zip(codes, expected_codes):
    np.testing.assert_allclose(q, expected_q, rtol=2e-4, atol=1e-6)

  # The same loss with the codes as constants has the same gradient.
  def with_constant_codes(z_crops, prototypes):
    scores = [swav.prototype_scores(z, prototypes) for z in z_crops]
    return losses.swav_swapped_prediction(scores, [jnp.asarray(q) for q in expected_codes],
                                          assigned, 0.1)
  expected_grads = jax.grad(with_constant_codes, argnums=(0, 1))(z_crops, prototypes)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads)):
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)


def test_two_crops_are_equation_1_halved():
  """L(z1, z2) = l(z1, q2) + l(z2, q1) (Eq. 1); the authors' code averages the two."""
  rng = np.random.default_rng(1)
  scores = [rng.normal(size=(10, 6)).astype(np.float32) for _ in range(2)]
  codes = [rng.dirichlet(np.ones(6), size=10).astype(np.float32) for _ in range(2)]

  def term(z_scores, q):  # l(z, q) = -sum_k q log p, p = softmax(z^T c / tau)
    return -np.mean(np.sum(q * log_softmax(np.float64(z_scores) / 0.1), axis=1))
  value = losses.swav_swapped_prediction([jnp.asarray(s) for s in scores],
                                         [jnp.asarray(q) for q in codes], (0, 1), 0.1)
  expected = 0.5 * (term(scores[0], codes[1]) + term(scores[1], codes[0]))
  assert float(value) == pytest.approx(expected, rel=1e-5)


def test_codes_with_the_queue_are_the_batch_rows_of_sinkhorn_on_queue_and_batch():
  rng = np.random.default_rng(2)
  z_crops = [unit_rows(rng, 8, 6) for _ in range(3)]
  queue = unit_rows(rng, 2, 24, 6)  # 24 earlier embeddings of each assigned crop
  prototypes = rng.normal(size=(6, 10)).astype(np.float32)
  settings = dict(assigned=(0, 1), temperature=0.1, epsilon=0.05, iterations=3)
  run = jax.jit(lambda use: swav.swapped_assignment_loss(
      [jnp.asarray(z) for z in z_crops], jnp.asarray(prototypes), jnp.asarray(queue), use,
      **settings)[:2])
  for use_queue in (True, False):
    value, codes = run(use_queue)
    expected, expected_codes = swav_reference(z_crops, prototypes, **settings,
                                              queue=queue if use_queue else None)
    assert float(value) == pytest.approx(expected, rel=1e-5)
    for q, expected_q in zip(codes, expected_codes):
      np.testing.assert_allclose(q, expected_q, rtol=2e-4, atol=1e-6)
  # The queue makes a difference here (24 more rows share the prototypes out).
  assert not np.allclose(run(True)[1][0], run(False)[1][0], atol=1e-3)
  # The shift: the batch in front, the oldest rows out.
  shifted = swav.shift_queue(jnp.asarray(queue[0]), jnp.asarray(z_crops[0]))
  np.testing.assert_array_equal(shifted, np.concatenate([z_crops[0], queue[0]])[:24])


# --------------------------------------------------------------- the method, tiny configs

def tiny_swav(data_dir=None, **dotted):
  """The digits config with an 8/16 CNN, projector 32 -> 16, 20 prototypes, batch 32, 2
  local crops, a queue of one batch used from step 1, prototypes frozen for 2 steps."""
  config = importlib.import_module("configs.swav").get_config("digits")
  config.unlock()
  override(config, **{
      "encoder.widths": (8, 16), "projector.hidden_dim": 32, "projector.output_dim": 16,
      "swav.num_prototypes": 20, "swav.queue_length": 32, "swav.queue_start_steps": 1,
      "swav.freeze_prototypes_epochs": None, "swav.freeze_prototypes_steps": 2,
      "batch_size": 32, "total_steps": 6, "log_every_steps": 2, "checkpoint_every_steps": 3,
      "data.data_dir": data_dir, "evaluate_at_end": False,
      # SGD without weight decay: a frozen leaf's update is exactly 0 (see test_joint_embedding
      # on Adam and rounding noise); the 20-step warm-up keeps the compared steps small.
      "optimizer.name": "sgd", "optimizer.lr": 0.5, "optimizer.weight_decay": 0.0,
      "optimizer.warmup_steps": 20})
  return override(config, **dotted)


def test_the_methods_loss_and_queue_shift_match_numpy_from_its_own_embeddings():
  """One loss evaluation of the built method (queue in use, non-zero queue): its value is the
  NumPy loss of the projector's unit outputs z of all 4 crops (the projection head sees them
  as one batch), its new queue is [z of the assigned crops; old queue] cut to its length, and
  the representation is the encoder's output (pooled and dense)."""
  config = tiny_swav()
  method = methods.build(config, LENGTH)
  rng = np.random.default_rng(3)
  batch = {"views": jnp.asarray(rng.normal(size=(32, 2, 8, 8, 1)), jnp.float32),
           "local_views": jnp.asarray(rng.normal(size=(32, 2, 6, 6, 1)), jnp.float32)}
  params, extra = method.init(jax.random.PRNGKey(0), batch)
  extra["queue"] = jnp.asarray(unit_rows(rng, 2, 32, 16))
  value, output = method.loss(params, extra, batch, jax.random.PRNGKey(1), 5)

  embeddings, encoder_stats = method.embedding_loss.embed(params, extra, batch,
                                                          jax.random.PRNGKey(1))
  network = ProjectedEncoder(build_encoder(config.encoder), MLPHead(**config.projector))
  h = jnp.concatenate([methods.merge_views(embeddings["global"]),
                       methods.merge_views(embeddings["local"])])
  z, _ = apply_in_train_mode(network, params["network"],
                             {**extra["batch_stats"], "encoder": encoder_stats}, h,
                             method=lambda module, x, train: module.projector(x, train=train))
  z = np.asarray(z, np.float64)
  z_crops = np.split(z / np.linalg.norm(z, axis=1, keepdims=True), 4)
  expected, _ = swav_reference(z_crops, params["prototypes"], (0, 1), 0.1, 0.05, 3,
                               queue=np.asarray(extra["queue"]))
  assert float(value) == pytest.approx(expected, rel=1e-4)
  assert float(output.metrics["queue_in_use"]) == 1.0
  new_queue = np.asarray(output.extra["queue"])
  for i in range(2):
    np.testing.assert_allclose(new_queue[i], z_crops[i], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(jnp.linalg.norm(output.extra["queue"], axis=-1), 1.0, rtol=1e-5)

  # Before queue_start the queue is filled but not read: the codes of the batch alone.
  value, output = method.loss(params, extra, batch, jax.random.PRNGKey(1), 0)
  assert float(output.metrics["queue_in_use"]) == 0.0
  expected, _ = swav_reference(z_crops, params["prototypes"], (0, 1), 0.1, 0.05, 3)
  assert float(value) == pytest.approx(expected, rel=1e-4)

  features = method.represent(params, extra, batch["views"][:, 0])
  dense = method.represent_dense(params, extra, batch["views"][:, 0])
  assert features.shape == (32, 16) and dense.shape[0] == 32 and dense.shape[-1] == 16


@pytest.fixture(scope="module")
def one_device_run(tmp_path_factory):
  """3 steps of the tiny config on 1 device from one initial state, every state kept."""
  config = tiny_swav(str(tmp_path_factory.mktemp("tensorflow_datasets")))
  batches = image_pipeline.train_batches(config, start_step=0, process_index=0,
                                         process_count=1)
  batches = [next(batches) for _ in range(3)]
  trainer = train.Trainer(config, methods.build(config, LENGTH), parallel.make_mesh(1),
                          (8, 8, 1), 10, LENGTH)
  # Run op by op: faster than compiling the jitted init (test_joint_embedding).
  init = trainer._init_state  # pylint: disable=protected-access
  initial = host_copy(init(jax.random.PRNGKey(config.seed)))
  state = jax.device_put(host_copy(initial), trainer.state_shardings)
  states, seen = [], []
  for batch in batches:
    state, measurements = trainer.train_step(state, parallel.global_batch(batch, trainer.mesh))
    seen.append(jax.device_get(measurements))
    states.append(host_copy(state))
  return config, batches, initial, states, seen


def test_prototypes_are_frozen_for_their_steps_and_the_queue_fills_then_serves(one_device_run):
  """freeze_prototypes_steps=2: the prototypes are bit-identical after steps 0 and 1 while the
  encoder moves (step 0's learning rate is 0 in the warm-up, step 1's is not), and change at
  step 2. The queue (one batch long) is filled at step 0 and read from step 1."""
  _, _, initial, states, seen = one_device_run
  prototypes = lambda state: np.asarray(state["params"]["model"]["prototypes"])
  kernel = lambda state: np.asarray(
      state["params"]["model"]["network"]["encoder"]["Conv_0"]["kernel"])
  np.testing.assert_array_equal(prototypes(states[0]), prototypes(initial))
  np.testing.assert_array_equal(prototypes(states[1]), prototypes(initial))
  assert not np.allclose(kernel(states[1]), kernel(initial))
  assert np.abs(prototypes(states[2]) - prototypes(initial)).max() > 1e-6
  assert [float(m["queue_in_use"]) for m in seen] == [0.0, 1.0, 1.0]
  assert not np.any(np.asarray(initial["extra"]["queue"]))
  queue = np.asarray(states[0]["extra"]["queue"])
  np.testing.assert_allclose(np.linalg.norm(queue, axis=-1), 1.0, rtol=1e-5)
  for m in seen:
    assert 0 < float(m["code_entropy"]) < np.log(20) and 1 <= float(m["prototypes_used"]) <= 20
    assert float(m["embedding_std"]) > 0


@pytest.mark.parametrize("mesh", ["data:2,fsdp:4"])
def test_sharded_equals_single_device_with_the_queue_in_use(one_device_run, mesh):
  """The same 3 steps on 8 devices (the batch split over both axes): Sinkhorn's sums over the batch, the queue's rows and the
  projection head's BatchNorm span the global batch (losses to 1e-4, params and `extra`,
  the queue included, to 1% of each leaf's norm as test_joint_embedding)."""
  assert jax.device_count() == 8, "conftest.py must give 8 fake CPU devices"
  config, batches, initial, states, seen = one_device_run
  config = override(config, mesh=mesh)
  trainer = train.Trainer(config, methods.build(config, LENGTH), parallel.make_mesh(mesh),
                          (8, 8, 1), 10, LENGTH)
  state = jax.device_put(host_copy(initial), trainer.state_shardings)
  losses8 = []
  for batch in batches:
    state, measurements = trainer.train_step(state, parallel.global_batch(batch, trainer.mesh))
    losses8.append(float(measurements["loss"]))
  losses1 = [float(m["loss"]) for m in seen]
  np.testing.assert_allclose(losses8, losses1, rtol=1e-4)
  assert losses1[2] != losses1[0]
  sharded, single = jax.device_get(state), states[-1]
  assert_trees_close(sharded["params"], single["params"], "params", norm_rtol=1e-2)
  assert_trees_close(sharded["extra"], single["extra"], "extra", norm_rtol=1e-2)
  np.testing.assert_allclose(sharded["extra"]["queue"], single["extra"]["queue"], atol=1e-4)


@pytest.mark.slow  # train.run end to end, checkpoint included (17 s of CPU)
def test_one_step_of_the_imagenet_recipe_on_mock_tfds(tmp_path):
  """The ImageNet recipe (LARS, multi-crop at two resolutions, crop scales, frozen
  prototypes, bfloat16 off under runlocal) with a tiny CNN for ResNet-50, 32 / 16 px crops,
  2 local crops and small heads."""
  config = importlib.import_module("configs.swav").get_config("imagenet2012,runlocal=True")
  config.unlock()
  override(config, total_steps=1, evaluate_at_end=False, batch_size=8, mesh="data:1",
           encoder={"name": "convnet", "widths": (8, 16)}, **{
               "data.image_size": 32, "data.eval_resize": 36, "data.local_image_size": 16,
               "data.local_views": 2, "projector.hidden_dim": 32, "projector.output_dim": 16,
               "swav.num_prototypes": 24})
  with tfds.testing.mock_data(num_examples=16):
    state = train.run(config, str(tmp_path / "swav"))
  assert int(state["step"]) == 1
  row = json.loads(open(tmp_path / "swav" / "metrics.jsonl").readline())
  # Each crop's cross-entropy against codes is at most about log K at initialisation.
  assert np.isfinite(row["loss"]) and 0 < row["loss"] < 2 * np.log(24)
  assert row["queue_in_use"] == 0.0 and row["prototypes_used"] >= 1


# -------------------------------------------------------------------------- config checks

BAD_SETTINGS = [
    ("swav.temperature", 0.0, "> 0"),
    ("swav.epsilon", -0.05, "> 0"),
    ("swav.sinkhorn_iterations", 0, ">= 1"),
    ("swav.num_prototypes", 1, ">= 2"),
    ("swav.queue_length", -1, ">= 0"),
    ("swav.crops_for_assign", (0, 2), "<= 1"),
    ("swav.crops_for_assign", (), "non-empty tuple"),
    ("swav.crops_for_assign", (1, 1), "distinct"),
    ("swav.queue_start_epochs", -1.0, ">= 0"),
    ("swav.freeze_prototypes_steps", 3, "only one of"),  # the digits config sets _epochs
    ("projector.output_dim", 0, ">= 1"),
    ("projector.hidden_norm", None, "must be one of True, False"),
]


@pytest.mark.parametrize("key, value, allowed", BAD_SETTINGS,
                         ids=[f"{key}={value!r}" for key, value, _ in BAD_SETTINGS])
def test_a_bad_value_is_a_one_line_error_naming_the_key(key, value, allowed):
  config = importlib.import_module("configs.swav").get_config("digits")
  config.unlock()
  override(config, **{key: value})
  with pytest.raises(UserError, match=re.escape(f"config.{key}")) as error:
    methods.build(config, LENGTH)
  message = str(error.value)
  assert allowed in message and "\n" not in message, message
