r"""Trains and evaluates several methods on one dataset and tabulates them side by side.

    python experiments/compare_methods.py --out=runs/compare_digits

runs, one after the other, `python -m ssl_jax.main --config=configs/<spec> --workdir=OUT/<name>
--config.evaluate_at_end=False` and then `python -m ssl_jax.evaluate --workdir=OUT/<name>`
for every spec in --methods (a list, or a preset: `joint_embedding`, the default, or
`masked_pretext` for issue 5's masked, generative and pretext-task methods), timing training
and evaluation separately. A method whose workdir already holds an
evaluation report is not rerun (delete its folder, or pass --rerun). Writes OUT/table.md
(the README's side-by-side table: test accuracy, mean over the evaluation seeds, for each
protocol at 1/5/10/all labels per class, then training wall time, median training images/s
and evaluation wall time, with a raw-pixel baseline row for each dataset in the table) and
OUT/table.json, and prints the table.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

JOINT_EMBEDDING = ("simclr=simclr.py:digits,byol=byol.py:digits,moco_v2=moco.py:digits,"
                   "moco_v3=moco.py:digits,version=3,simsiam=simsiam.py:digits,"
                   "dino=dino.py:digits,barlow_twins=barlow_twins.py:digits,"
                   "vicreg=vicreg.py:digits")
MASKED_PRETEXT = ("mae=mae.py:digits,autoencoder=autoencoder.py:digits,vae=vae.py:digits,"
                  "inpainting=inpainting.py:digits,rotation=rotation.py:digits,"
                  "jigsaw=jigsaw.py:digits,colorization=colorization.py:photos")
PRESETS = {"joint_embedding": JOINT_EMBEDDING, "masked_pretext": MASKED_PRETEXT}
PROTOCOLS = ("linear", "knn", "label_propagation")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_specs(text: str) -> list[tuple[str, str]]:
  """'name=file.py:arg,more,name2=...' -> [(name, 'file.py:arg,more'), ...]."""
  specs, name = [], None
  for part in text.split(","):
    if "=" in part and part.split("=", 1)[0].isidentifier() and ".py" in part:
      name, spec = part.split("=", 1)
      specs.append([name, spec])
    elif specs:
      specs[-1][1] += "," + part
    else:
      raise SystemExit(f"error: cannot parse --methods near '{part}'")
  return [tuple(s) for s in specs]


def run_logged(command: list[str], log_path: str) -> float:
  """Runs `command` in the repository root, appending its output to log_path; returns seconds."""
  started = time.perf_counter()
  with open(log_path, "a") as log:
    result = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
  if result.returncode:
    raise SystemExit(f"error: `{' '.join(command)}` failed (exit {result.returncode}); "
                     f"see {log_path}")
  return time.perf_counter() - started


def current_commit() -> str:
  """The checked-out commit, marked `+dirty` when tracked files differ from it."""
  commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True).stdout.strip()
  dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "ssl_jax", "configs"],
                         cwd=ROOT).returncode
  return commit + ("+dirty" if dirty else "")


def images_per_second(workdir: str) -> str:
  """Median training throughput over the run's logged steps (first log row, with compilation,
  left out)."""
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  rates = sorted(r["images_per_second"] for r in rows[1:] if "images_per_second" in r)
  return f"{rates[len(rates) // 2]:,.0f}" if rates else ""


def cell(report: dict, source: str, protocol: str, per_class) -> str:
  for row in report["results"]:
    if (row["features"], row["protocol"], row["labels_per_class"]) == (source, protocol,
                                                                        per_class):
      return f"{100 * row['accuracy']:.1f}"
  return ""


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default="runs/compare_digits")
  parser.add_argument("--methods", default="joint_embedding",
                      help="name=config_file:arg,... (config files under configs/), or a "
                      f"preset: {', '.join(PRESETS)}")
  parser.add_argument("--rerun", action="store_true")
  args = parser.parse_args()
  out = os.path.abspath(args.out)
  os.makedirs(out, exist_ok=True)
  timings_path = os.path.join(out, "timings.json")
  timings = json.load(open(timings_path)) if os.path.exists(timings_path) else {}
  reports = {}
  for name, spec in parse_specs(PRESETS.get(args.methods, args.methods)):
    workdir = os.path.join(out, name)
    report_path = os.path.join(workdir, "eval", "report.json")
    if args.rerun or not os.path.exists(report_path) or name not in timings:
      if os.path.exists(workdir):
        raise SystemExit(f"error: {workdir} holds an unfinished run; delete it first")
      log = os.path.join(out, f"{name}.log")
      print(f"{name}: training {spec}", flush=True)
      train_s = run_logged([sys.executable, "-m", "ssl_jax.main", f"--config=configs/{spec}",
                            f"--workdir={workdir}", "--config.evaluate_at_end=False"], log)
      eval_s = run_logged([sys.executable, "-m", "ssl_jax.evaluate", f"--workdir={workdir}"], log)
      timings[name] = {"spec": spec, "train_s": round(train_s, 1), "eval_s": round(eval_s, 1),
                       "commit": current_commit()}
      json.dump(timings, open(timings_path, "w"), indent=2)
    reports[name] = json.load(open(report_path))

  columns = [(p, n) for p in PROTOCOLS for n in (1, 5, 10, None)]
  short = {"linear": "lin", "knn": "kNN", "label_propagation": "LP"}
  header = ("| method | " + " | ".join(f"{short[p]} {n or 'all'}" for p, n in columns)
            + " | train | img/s | eval |")
  lines = [header, "|---|" + "---:|" * (len(columns) + 3)]
  datasets = {}  # dataset -> the first report on it, for its raw-pixel row
  for name, report in reports.items():
    datasets.setdefault(report["dataset"], report)
    values = [cell(report, "ssl", p, n) for p, n in columns]
    t = timings[name]
    label = name if len({r["dataset"] for r in reports.values()}) == 1 else \
        f"{name} ({report['dataset']})"
    lines.append(f"| {label} | " + " | ".join(values)
                 + f" | {t['train_s'] / 60:.1f} min | {images_per_second(os.path.join(out, name))}"
                 + f" | {t['eval_s'] / 60:.1f} min |")
  for dataset, report in datasets.items():
    label = "raw pixels" if len(datasets) == 1 else f"raw pixels ({dataset})"
    lines.append(f"| {label} | " + " | ".join(cell(report, "raw", p, n) for p, n in columns)
                 + " | | | |")
  commits = sorted({t.get("commit", "?") for name, t in timings.items() if name in reports})
  commit = ", ".join(commits)
  footer = (f"\nTest accuracy (%), mean over evaluation seeds; commit {commit}, "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"{datetime.date.today()}.\n")
  table = "\n".join(lines) + "\n" + footer
  open(os.path.join(out, "table.md"), "w").write(table)
  json.dump({"commit": commit, "timings": timings,
             "reports": reports}, open(os.path.join(out, "table.json"), "w"), indent=2)
  print(table)


if __name__ == "__main__":
  main()
