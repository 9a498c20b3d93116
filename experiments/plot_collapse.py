r"""The collapse monitor's two measures over a run, from its metrics.jsonl, as one PNG.

    python experiments/plot_collapse.py --workdir=runs/simclr_digits \
        --out=docs/collapse_simclr_digits.png

Left: the effective rank of the features (RankMe) and the threshold `config.collapse.
rank_fraction` x its highest value so far; right: the std of the L2-normalised embedding
and its threshold; collapsed log steps (`collapse` = 1) marked in red. The thresholds are
read from the run's config.json.
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--out", required=True)
  args = parser.parse_args()
  with open(os.path.join(args.workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if "effective_rank" in line]
  with open(os.path.join(args.workdir, "config.json")) as f:
    config = json.load(f)
  settings = config.get("collapse", {"rank_fraction": 0.1, "std_fraction": 0.1})
  steps = np.array([r["step"] for r in rows])
  flagged = np.array([r.get("collapse", 0.0) > 0 for r in rows])
  figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  for axis, key, fraction, label in (
      (axes[0], "effective_rank", settings["rank_fraction"], "effective rank (RankMe)"),
      (axes[1], "embedding_std", settings["std_fraction"], "std of the L2-normalised embedding")):
    values = np.array([r[key] for r in rows])
    axis.plot(steps, values, marker=".", label=label)
    axis.plot(steps, fraction * np.maximum.accumulate(values), "--",
              label=f"threshold: {fraction} x highest so far")
    if flagged.any():
      axis.scatter(steps[flagged], values[flagged], color="red", zorder=3, label="collapse")
    axis.set_xlabel("step")
    axis.set_ylim(bottom=0)
    axis.legend(fontsize=8)
  figure.suptitle(f"{config.get('method')} on {config.get('dataset')}: the collapse monitor")
  figure.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  figure.savefig(args.out, dpi=110)
  print(args.out)


if __name__ == "__main__":
  main()
