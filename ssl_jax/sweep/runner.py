"""A sweep from its grid to its results: plan the trials (checked, `sweep.json`), run those
not finished through an executor, tabulate (`python -m ssl_jax.sweep` parses the flags and
calls `run`; tests and presets such as `experiments/compare_methods.py` call it directly)."""
import os

from absl import logging

from ssl_jax import expected
from ssl_jax.errors import UserError
from ssl_jax.sweep import hparams, launch, results, trials as trials_lib


def parse_assignments(items: list[str], flag: str = "set") -> dict:
  """`--set=KEY=VALUE` (or `--slurm=...`) items -> {key: value} (Python literals, else text)."""
  parsed = {}
  for item in items:
    key, equals, value = item.partition("=")
    if not equals or not key:
      raise UserError(f"--{flag}={item}: write KEY=VALUE (e.g. --{flag}="
                      f"{'partition=gpu' if flag == 'slurm' else 'total_steps=100'})")
    parsed[key] = trials_lib.literal(value)
  return parsed


def _check_trial(config) -> None:
  """The checks a run does before its first step that need no data: the method and its
  settings, the precision policy, the evaluation settings."""
  from ssl_jax import config_lib, evaluate, methods  # pylint: disable=g-import-not-at-top
  length = config_lib.TrainingLength(steps_per_epoch=1, total_steps=1, schedule_steps=1)
  methods.build(config, length)
  if config.evaluate_at_end:
    evaluate.check(config)


def plan(spec: str | None, base, overrides: dict, sweep_dir: str, sweep_flags: list[str],
         seeds: int | None, configs: list[str] = (), reproduce: bool = False
         ) -> list[trials_lib.Trial]:
  """The sweep's trials, checked, and its `sweep.json` written or matched. With `configs`
  (patterns such as `configs/*.py:cifar10`) the config file is one more swept axis, and
  `overrides` (the command line's `--config.KEY=VALUE`) apply to each. `reproduce` keeps
  only the trials whose config states published targets (`config.expected`)."""
  flag_settings = [trials_lib.parse_flag(text) for text in sweep_flags]
  if configs:
    specs, skipped = trials_lib.expand_configs(list(configs))
    for skipped_spec, why in skipped.items():
      logging.info("skipped %s: %s", skipped_spec, why)
    flag_settings.insert(0, trials_lib.sweep(trials_lib.CONFIG, specs))
    spec = ",".join(specs)
  saved = trials_lib.read_record(sweep_dir)
  get_sweep = None if configs else trials_lib.load_get_sweep(spec)
  if not flag_settings and seeds is None and get_sweep is None and saved is not None:
    settings = trials_lib.settings_of(saved)  # a rerun without the grid: the recorded one
  else:
    settings = trials_lib.grid(flag_settings, get_sweep() if get_sweep and not flag_settings
                               else None, seeds, base.seed if base is not None else 0)
  made = trials_lib.trials(base, settings, overrides)
  if reproduce:
    kept = [bool(expected.targets(trial.config)) for trial in made]
    for trial, keep in zip(made, kept):
      if not keep:
        logging.info("skipped %s: %s", trial.name, trial.config.expected.note)
    made = [trial for trial, keep in zip(made, kept) if keep]
    settings = [setting for setting, keep in zip(settings, kept) if keep]
    if not made:
      raise UserError("--reproduce: none of these configs states a published number "
                      "(config.expected.targets)")
  for trial in made:
    try:
      _check_trial(trial.config)
    except UserError as e:
      raise UserError(f"trial {trial.name}: {e}") from None
  trials_lib.save_or_check(sweep_dir, trials_lib.record(spec, overrides, settings))
  return made


def run(spec: str | None, base, overrides: dict, sweep_dir: str, *, sweep_flags=(),
        seeds=None, configs=(), reproduce: bool = False, executor: str = "local",
        parallel: int = 1, slurm: tuple = (), timeout_min: float = 7 * 24 * 60,
        metrics: str | None = None) -> dict:
  """Plans, runs the trials that are not finished, writes the results; returns them."""
  if parallel < 1:
    raise UserError(f"--parallel must be >= 1, got {parallel}")
  cells = results.parse_metrics(metrics)
  folder = os.path.join(sweep_dir, "submitit")
  slurm_executor = None
  if executor == "slurm":
    slurm_executor = launch.slurm_executor(folder, parse_assignments(list(slurm), "slurm"),
                                           parallel)
  made = plan(spec, base, overrides, sweep_dir, list(sweep_flags), seeds, configs, reproduce)
  if reproduce and cells is None:  # the cells the configs' published targets name
    cells = sorted({t["cell"] for trial in made for t in expected.targets(trial.config)})
  todo = [(t, t.workdir(sweep_dir)) for t in made
          if launch.read_status(t.workdir(sweep_dir)).get("status") != "finished"]
  logging.info("sweep %s: %d trials, %d to run", sweep_dir, len(made), len(todo))
  if todo and executor == "debug":
    launch.run_debug(todo)
  elif todo and executor == "local":
    launch.run_local(todo, folder, parallel, timeout_min)
  elif todo:
    launch.run_slurm(todo, slurm_executor)
  found = results.collect(sweep_dir, made, cells)
  results.write(sweep_dir, found)
  finished = {t.name: results.read_report(t.workdir(sweep_dir)) for t in made
              if launch.read_status(t.workdir(sweep_dir)).get("status") == "finished"}
  hparams.write(sweep_dir, found, {t.name: t.setting for t in made},
                {name: hparams.trial_cells(report, found["metrics"])
                 for name, report in finished.items() if report is not None})
  return found
