"""A sweep's results: one row per setting, each chosen report cell as mean ± std and a 95%
interval over the setting's seeds, with wall time and throughput; written as
`results.md`, `results.csv` and `results.json`, and a PNG per swept key.

A report cell is named `protocol@labels`, optionally `@features` (default `ssl`), after the
trial's `eval/report.json` rows: labels are the labelled examples per class, `all`, or for
fine-tuning the percentage of the labels: `linear@all`, `knn@all`, `label_propagation@1`,
`finetune@10%`, `linear@all@random_init`. Where a trial's config states published targets
(`config.expected`, `ssl_jax.expected`), each row shows them and the difference of its mean. Without `--metrics` every `ssl` cell of
the first finished trial's report is used.

The interval is Student's t: mean ± t(0.975, n - 1) · std / sqrt(n), std with n - 1 degrees
of freedom; a setting with one seed has no std or interval.
"""
import csv
import io
import json
import math
import os
from typing import Any

import numpy as np
from scipy import stats

from ssl_jax import expected
from ssl_jax.errors import UserError
from ssl_jax.sweep.launch import read_status
from ssl_jax.sweep.trials import Trial, trial_name

RESULT_FILES = ("results.md", "results.csv", "results.json")


def parse_metrics(text: str | None) -> list[str] | None:
  """'linear@all,knn@10' -> the cell names; None for the default (every ssl cell of the
  reports)."""
  if not text:
    return None
  cells = []
  for item in (part.strip() for part in text.split(",")):
    parts = item.split("@")
    if len(parts) not in (2, 3) or not parts[0]:
      raise UserError(f"--metrics item {item!r}: write protocol@labels[@features], e.g. "
                      "linear@all or knn@10")
    labels = parts[1]
    if labels != "all" and not labels.removesuffix("%").isdigit():
      raise UserError(f"--metrics item {item!r}: labels must be 'all', a count per class or "
                      "a percentage (finetune@10%)")
    cells.append(item)
  return cells


def read_report(trial_dir: str) -> dict | None:
  path = os.path.join(trial_dir, "eval", "report.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def cell_values(report: dict) -> dict[str, float]:
  """{cell name: accuracy in %} of a report's rows."""
  return {expected.cell_name(r): 100.0 * float(r["accuracy"]) for r in report.get("results", [])}


def images_per_second(workdir: str) -> float | None:
  """The median training throughput a run logged (its first log row, which includes the
  compilation, left out)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    rates = [row["images_per_second"] for row in map(json.loads, filter(str.strip, f))
             if "images_per_second" in row]
  return float(np.median(rates[1:])) if len(rates) > 1 else None


def summary(values: list[float]) -> dict[str, Any]:
  """n, mean, std (n - 1) and the 95% Student-t interval of `values`."""
  n = len(values)
  if n == 0:
    return {"n": 0, "mean": None, "std": None, "ci95": None}
  mean = float(np.mean(values))
  if n == 1:
    return {"n": 1, "mean": mean, "std": None, "ci95": None}
  std = float(np.std(values, ddof=1))
  half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
  return {"n": n, "mean": mean, "std": std, "ci95": [mean - half, mean + half]}


def collect(sweep_dir: str, trials: list[Trial], cells: list[str] | None) -> dict:
  """The sweep's results (what results.json holds)."""
  reports, statuses = {}, {}
  for trial in trials:
    directory = trial.workdir(sweep_dir)
    statuses[trial.name] = read_status(directory)
    report = read_report(directory)
    if report is not None and statuses[trial.name].get("status") == "finished":
      reports[trial.name] = report
  if cells is None:
    first = next(iter(reports.values()), {"results": []})
    cells = [cell for cell in cell_values(first) if cell.count("@") == 1]  # the ssl cells
  swept = [key for key in (trials[0].setting if trials else {}) if key != "seed"]
  groups: dict[str, list[Trial]] = {}
  for trial in trials:
    setting = {key: trial.setting[key] for key in swept}
    groups.setdefault(trial_name(setting) if setting else "base", []).append(trial)
  rows = []
  for name, members in groups.items():
    done = [t for t in members if t.name in reports]
    row = {"setting": {key: members[0].setting[key] for key in swept}, "name": name,
           "trials": len(members), "finished": len(done), "metrics": {}}
    for cell in cells:
      values = [cell_values(reports[t.name]).get(cell) for t in done]
      row["metrics"][cell] = summary([v for v in values if v is not None])
    means = {cell: value["mean"] for cell, value in row["metrics"].items()}
    row["expected"] = expected.compare(members[0].config, means)
    walls = [statuses[t.name].get("wall_seconds") for t in done]
    row["wall_seconds"] = summary([w for w in walls if w is not None])
    rates = [images_per_second(t.workdir(sweep_dir)) for t in done]
    row["images_per_second"] = summary([r for r in rates if r is not None])
    rows.append(row)
  failed = {name: status.get("error", "") for name, status in statuses.items()
            if status.get("status") == "failed"}
  unfinished = [name for name, status in statuses.items()
                if status.get("status") not in ("finished", "failed")]
  return {"swept": swept, "metrics": list(cells), "rows": rows,
          "failed": failed, "unfinished": unfinished}


def _cell_text(cell: dict) -> str:
  if cell["mean"] is None:
    return ""
  if cell["std"] is None:
    return f"{cell['mean']:.1f}"
  low, high = cell["ci95"]
  return f"{cell['mean']:.1f} ± {cell['std']:.1f} [{low:.1f}, {high:.1f}]"


def _expected_text(targets: list[dict]) -> str:
  """'linear@all 92.10 (-1.3); ...': each published target and the mean's difference."""
  return "; ".join(
      f"{t['cell']} {t['accuracy']:.2f}" + ("" if t["difference"] is None else
                                            f" ({t['difference']:+.1f})") for t in targets)


def markdown(results: dict, plots: list[str]) -> str:
  swept, metrics = results["swept"], results["metrics"]
  lines = ["# Sweep results", "",
           "Test accuracy (%) of each report cell: mean ± std [95% interval] over the "
           "setting's seeds (Student's t); wall time and training images/s are means.", "",
           "| " + " | ".join(swept + metrics + ["seeds", "wall time (s)", "images/s",
                                                  "expected (achieved - expected)"]) + " |",
           "|" + "---|" * (len(swept) + len(metrics) + 4)]
  for row in results["rows"]:
    cells = [repr(row["setting"][key]) for key in swept]
    cells += [_cell_text(row["metrics"][name]) for name in metrics]
    wall, rate = row["wall_seconds"]["mean"], row["images_per_second"]["mean"]
    cells += [f"{row['finished']}/{row['trials']}", "" if wall is None else f"{wall:.0f}",
              "" if rate is None else f"{rate:.0f}", _expected_text(row["expected"])]
    lines.append("| " + " | ".join(cells) + " |")
  if results["failed"]:
    lines += ["", "## Failed trials (rerun the sweep to retry them)", ""]
    lines += [f"- `{name}`: {error}" for name, error in results["failed"].items()]
  if results["unfinished"]:
    lines += ["", "## Unfinished trials (rerun the sweep to resume them)", ""]
    lines += [f"- `{name}`" for name in results["unfinished"]]
  for plot in plots:
    lines += ["", f"![{plot}]({plot})"]
  return "\n".join(lines) + "\n"


def csv_text(results: dict) -> str:
  swept, metrics = results["swept"], results["metrics"]
  out = io.StringIO()
  writer = csv.writer(out)
  header = list(swept)
  for name in metrics:
    header += [f"{name}_mean", f"{name}_std", f"{name}_ci95_low", f"{name}_ci95_high",
               f"{name}_n"]
  writer.writerow(header + ["wall_seconds_mean", "images_per_second_mean"])
  for row in results["rows"]:
    values = [row["setting"][key] for key in swept]
    for name in metrics:
      cell = row["metrics"][name]
      low, high = cell["ci95"] or (None, None)
      values += [cell["mean"], cell["std"], low, high, cell["n"]]
    values += [row["wall_seconds"]["mean"], row["images_per_second"]["mean"]]
    writer.writerow(["" if v is None else v for v in values])
  return out.getvalue()


def plot_swept_keys(results: dict, sweep_dir: str) -> list[str]:
  """A PNG per swept key with numeric values: each metric's mean (error bars: std) against
  the key, one line per setting of the other keys. Returns the file names."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  written = []
  for key in results["swept"]:
    values = [row["setting"][key] for row in results["rows"]]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
      continue
    others = [k for k in results["swept"] if k != key]
    metrics = results["metrics"]
    columns = min(len(metrics), 4) or 1
    rows = max(math.ceil(len(metrics) / columns), 1)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows),
                                squeeze=False)
    for axis in axes.flat[len(metrics):]:
      axis.set_visible(False)
    for axis, metric in zip(axes.flat, metrics):
      lines: dict[str, list] = {}
      for row in results["rows"]:
        label = ", ".join(f"{k.rsplit('.', 1)[-1]}={row['setting'][k]}" for k in others)
        lines.setdefault(label, []).append(row)
      for label, rows in lines.items():
        rows = sorted(rows, key=lambda r: r["setting"][key])
        cells = [r["metrics"][metric] for r in rows]
        xs = [r["setting"][key] for r, c in zip(rows, cells) if c["mean"] is not None]
        ys = [c["mean"] for c in cells if c["mean"] is not None]
        errors = [c["std"] or 0.0 for c in cells if c["mean"] is not None]
        if xs:
          axis.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=label or None)
      axis.set_xlabel(key)
      axis.set_title(metric, fontsize=9)
      axis.set_ylabel("accuracy (%)")
      if len(lines) > 1:
        axis.legend(fontsize=7)
    figure.tight_layout()
    name = f"sweep_{key.replace('.', '_')}.png"
    figure.savefig(os.path.join(sweep_dir, name), dpi=110)
    plt.close(figure)
    written.append(name)
  return written


def write(sweep_dir: str, results: dict) -> None:
  """results.md (with the plots), results.csv and results.json, each atomically."""
  plots = plot_swept_keys(results, sweep_dir) if results["rows"] else []
  texts = {"results.md": markdown(results, plots), "results.csv": csv_text(results),
           "results.json": json.dumps(results, indent=2, default=repr)}
  for name, text in texts.items():
    path = os.path.join(sweep_dir, name)
    with open(path + ".tmp", "w") as f:
      f.write(text)
    os.replace(path + ".tmp", path)
