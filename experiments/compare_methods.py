r"""Trains and evaluates several methods on one dataset and tabulates them side by side: a
preset over the sweep runner (`ssl_jax.sweep`), where the config file is the swept axis.

    python experiments/compare_methods.py --out=runs/compare_digits

runs every spec in --methods (a list `name=file.py:arg,...`, or a preset: `joint_embedding`,
the default, `masked_pretext` for the masked, generative and pretext-task methods, or
`state_of_the_art` for SwAV, iBOT, the DINOv2 recipe and I-JEPA) as one
trial of a sweep in OUT (`OUT/<file>-<arg>/`: an ordinary run, trained then evaluated), one
after the other through submitit's local executor (`--parallel` at a time). A rerun skips the
finished trials and resumes or retries the others. Writes OUT/table.md (the README's
side-by-side table: test accuracy, mean over the evaluation seeds, for each protocol at
1/5/10/all labels per class, then training wall time, median training images/s and
evaluation wall time, with a raw-pixel baseline row for each dataset in the table) and
OUT/table.json, besides the sweep's own results.md/.csv/.json, and prints the table.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys

JOINT_EMBEDDING = ("simclr=simclr.py:digits,byol=byol.py:digits,moco_v2=moco.py:digits,"
                   "moco_v3=moco.py:digits,version=3,simsiam=simsiam.py:digits,"
                   "dino=dino.py:digits,barlow_twins=barlow_twins.py:digits,"
                   "vicreg=vicreg.py:digits")
MASKED_PRETEXT = ("mae=mae.py:digits,autoencoder=autoencoder.py:digits,vae=vae.py:digits,"
                  "inpainting=inpainting.py:digits,rotation=rotation.py:digits,"
                  "jigsaw=jigsaw.py:digits,colorization=colorization.py:photos")
STATE_OF_THE_ART = ("swav=swav.py:digits,ibot=ibot.py:digits,dinov2=dinov2.py:digits,"
                    "ijepa=ijepa.py:digits")
PRESETS = {"joint_embedding": JOINT_EMBEDDING, "masked_pretext": MASKED_PRETEXT,
           "state_of_the_art": STATE_OF_THE_ART}
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


def current_commit() -> str:
  """The checked-out commit, marked `+dirty` when tracked files differ from it."""
  commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True).stdout.strip()
  dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "ssl_jax", "configs"],
                         cwd=ROOT).returncode
  return commit + ("+dirty" if dirty else "")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default="runs/compare_digits")
  parser.add_argument("--methods", default="joint_embedding",
                      help="name=config_file:arg,... (config files under configs/), or a "
                      f"preset: {', '.join(PRESETS)}")
  parser.add_argument("--parallel", type=int, default=1, help="trials at once")
  args = parser.parse_args()
  sys.path.insert(0, ROOT)
  os.chdir(ROOT)  # the trials' processes import ssl_jax from here
  # pylint: disable-next=g-import-not-at-top
  from ssl_jax.errors import UserError
  from ssl_jax.sweep import launch, results, runner, trials  # pylint: disable=g-import-not-at-top

  def cell(report: dict, source: str, protocol: str, per_class) -> str:
    name = f"{protocol}@{per_class or 'all'}" + ("" if source == "ssl" else f"@{source}")
    value = results.cell_values(report).get(name)
    return "" if value is None else f"{value:.1f}"

  def rate(workdir: str) -> str:
    value = results.images_per_second(workdir)
    return "" if value is None else f"{value:,.0f}"

  out = os.path.abspath(args.out)
  names = {f"configs/{spec}": name for name, spec in parse_specs(PRESETS.get(args.methods,
                                                                             args.methods))}
  try:
    runner.run(None, None, {}, out, configs=list(names), executor="local",
               parallel=args.parallel)
  except UserError as e:
    raise SystemExit(f"error: {e}") from None
  reports, statuses = {}, {}
  for spec, name in names.items():
    workdir = os.path.join(out, trials.trial_name({trials.CONFIG: spec}))
    statuses[name] = launch.read_status(workdir)
    if statuses[name].get("status") == "finished":
      reports[name] = json.load(open(os.path.join(workdir, "eval", "report.json")))
      statuses[name]["workdir"] = workdir

  columns = [(p, n) for p in PROTOCOLS for n in (1, 5, 10, None)]
  short = {"linear": "lin", "knn": "kNN", "label_propagation": "LP"}
  header = ("| method | " + " | ".join(f"{short[p]} {n or 'all'}" for p, n in columns)
            + " | train | img/s | eval |")
  lines = [header, "|---|" + "---:|" * (len(columns) + 3)]
  datasets = {}  # dataset -> the first report on it, for its raw-pixel row
  for name, report in reports.items():
    datasets.setdefault(report["dataset"], report)
    values = [cell(report, "ssl", p, n) for p, n in columns]
    t = statuses[name]
    label = name if len({r["dataset"] for r in reports.values()}) == 1 else \
        f"{name} ({report['dataset']})"
    lines.append(f"| {label} | " + " | ".join(values)
                 + f" | {t['train_seconds'] / 60:.1f} min | {rate(t['workdir'])}"
                 + f" | {t['eval_seconds'] / 60:.1f} min |")
  for dataset, report in datasets.items():
    label = "raw pixels" if len(datasets) == 1 else f"raw pixels ({dataset})"
    lines.append(f"| {label} | " + " | ".join(cell(report, "raw", p, n) for p, n in columns)
                 + " | | | |")
  failed = {name: s.get("error", s.get("status")) for name, s in statuses.items()
            if name not in reports}
  lines += [f"\n{name}: not finished ({why})" for name, why in failed.items()]
  commit = current_commit()
  footer = (f"\nTest accuracy (%), mean over evaluation seeds; commit {commit}, "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"{datetime.date.today()}.\n")
  table = "\n".join(lines) + "\n" + footer
  with open(os.path.join(out, "table.md"), "w") as f:
    f.write(table)
  with open(os.path.join(out, "table.json"), "w") as f:
    json.dump({"commit": commit, "trials": statuses, "reports": reports}, f, indent=2)
  print(table)


if __name__ == "__main__":
  main()
