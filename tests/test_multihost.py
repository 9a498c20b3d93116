"""Two processes on this machine, joined by jax.distributed, run the same command as one host.

Each process has 2 fake CPU devices and reads its own half of the data (tfds.even_splits); the
mesh is data:2 x fsdp:2, so every parameter and optimizer leaf is split across the processes
and the step's collectives span both (Gloo). Both processes must report the same global loss,
equal to that of one process stepping the same mesh on the two processes' batches put
together, and the checkpoint (written by both, each its shards), metrics and evaluation report
are written once.
"""
import json
import os
import re
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


TRAINING = [sys.executable, "-m", "ssl_jax.main", "--config=configs/simclr.py:digits",
            "--config.encoder.widths=(8,16)", "--config.projector.hidden_dim=32",
            "--config.batch_size=32", "--config.total_steps=4", "--config.log_every_steps=2",
            "--config.checkpoint_every_steps=2", "--config.mesh=data:2,fsdp:2",
            "--config.fsdp_min_size=0"]


def one_process_loss(data_dir, processes=(0, 1)) -> float:
  """The 4th step's loss of TRAINING's config in this process, on the batches of `processes`
  (both halves by default): what the two-process run must report."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from configs import simclr  # pylint: disable=g-import-not-at-top
  from ssl_jax import config_lib, methods, parallel, train  # pylint: disable=g-import-not-at-top
  from ssl_jax.data import inputs as inputs_lib  # pylint: disable=g-import-not-at-top
  from tiny_configs import override  # pylint: disable=g-import-not-at-top
  config = simclr.get_config("digits")
  config.unlock()
  override(config, batch_size=32, total_steps=4, mesh="data:2,fsdp:2", fsdp_min_size=0, **{
      "encoder.widths": (8, 16), "projector.hidden_dim": 32, "data.data_dir": str(data_dir)})
  inputs = inputs_lib.Inputs(config)
  info = inputs.info()
  streams = [inputs.train_batches(start_step=0, process_index=p, process_count=2)
             for p in processes]
  length = config_lib.training_length(config, info.num_train_examples)
  trainer = train.Trainer(config, methods.build(config, length),
                          parallel.make_mesh(config.mesh), info.input_shape, info.num_classes,
                          length)
  state = trainer.create_state(config.seed)
  for _ in range(4):
    halves = [next(stream) for stream in streams]
    batch = jax.tree.map(lambda *rows: np.concatenate(rows), *halves)
    state, measurements = trainer.train_step(state, parallel.global_batch(batch, trainer.mesh))
  return float(measurements["loss"])


def test_two_process_run_trains_checkpoints_and_evaluates(tmp_path):
  workdir, data_dir = tmp_path / "run", tmp_path / "tensorflow_datasets"
  port = free_port()
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2 "
             "--xla_backend_optimization_level=0")
  processes = [subprocess.Popen(
      [*TRAINING, f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
       "--config.evals.probes.labels_per_class=(0,)", "--config.evals.probes.seeds=1",
       "--config.evals.plots.enabled=False", "--config.evals.finetune.fractions=(0.1,)", "--config.evals.finetune.epochs=(30,)",
       "--config.evals.finetune.sources=('ssl',)", "--config.evals.finetune.min_steps=2",
       "--config.evals.finetune.batch_size=16", f"--coordinator_address=127.0.0.1:{port}",
       "--num_processes=2", f"--process_id={i}"],
      cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True) for i in range(2)]
  logs = [p.communicate(timeout=400)[1] for p in processes]
  for process, log in zip(processes, logs):
    assert process.returncode == 0, log[-3000:]
  losses = [re.findall(r"step 4/4 \| loss (\S+)", log) for log in logs]
  assert losses[0] and losses[0] == losses[1]
  # The same 4 steps in this one process, on the same global batches (each process's stream
  # of its half, concatenated in process order, as `parallel.global_batch` lays the two
  # processes' rows along `data`) and the same mesh: the collectives between two processes
  # compute what they compute within one.
  assert abs(one_process_loss(data_dir) - float(losses[0][0])) <= 2e-4
  # Other examples (process 0's half twice) give another loss: the comparison can fail.
  assert abs(one_process_loss(data_dir, (0, 0)) - float(losses[0][0])) > 1e-3
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  assert [r["step"] for r in rows] == [2, 4]  # process 0 alone writes metrics
  assert rows[1]["loss"] == float(losses[0][0]) or abs(rows[1]["loss"] - float(losses[0][0])) < 1e-3
  report = json.load(open(workdir / "eval" / "report.json"))
  # 3 sources x 4 protocols with all labels, and fine-tuning the checkpoint on 10%.
  assert report["checkpoint_step"] == 4 and len(report["results"]) == 3 * 4 + 1
  raw_linear = [r for r in report["results"] if r["features"] == "raw" and
                r["protocol"] == "linear" and r["labels_per_class"] is None]
  assert raw_linear[0]["accuracy"] > 0.94  # both processes' test shards were gathered
  finetuned = report["results"][-1]
  # 10% of each class of the 1,257 training digits, gathered from both processes' shards.
  assert finetuned["protocol"] == "finetune" and 12 <= finetuned["labels_per_class"] <= 13
  assert finetuned["accuracy"] > 0.1 and finetuned["label_fraction"] == 0.1
  assert "| finetune | 10% (" in open(workdir / "eval" / "report.md").read()
