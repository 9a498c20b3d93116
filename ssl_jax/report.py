"""The evaluation report: `eval/report.json`, `eval/report.md` (a table of every result row,
the held-out and retrieval sections, the plots and pictures below) and the PNGs beside them.
"""
import json
import os

import numpy as np

from ssl_jax import expected


def markdown_table(report: dict) -> str:
  """One row per (protocol, labels per class), one column per feature source."""
  sources = list(dict.fromkeys(r["features"] for r in report["results"]))
  cells = {(r["protocol"], r["labels_per_class"], r["features"]): r for r in report["results"]}
  rows = list(dict.fromkeys((r["protocol"], r["labels_per_class"]) for r in report["results"]))
  lines = [f"# Evaluation: {report['dataset']}, checkpoint step {report['checkpoint_step']}", ""]
  if not report["results"]:
    lines += ["No probes: the dataset has no labels."]
  else:
    lines += ["Test accuracy (%), mean ± std over seeds of the labelled subset.", "",
              "| protocol | labels/class | " + " | ".join(sources) + " |",
              "|---|---|" + "---|" * len(sources)]
  for protocol, per_class in rows:
    values, fraction = [], None
    for source in sources:
      r = cells.get((protocol, per_class, source))
      values.append("" if r is None else f"{100 * r['accuracy']:.1f} ± {100 * r['std']:.1f}")
      fraction = fraction or (r or {}).get("label_fraction")
    labels = "all" if per_class is None else per_class  # 0: zero-shot, no labels
    if fraction:  # fine-tuning: the fraction of the labels, and the classes' mean count
      labels = f"{fraction:.0%} ({per_class})"
    lines.append(f"| {protocol} | {labels} | " + " | ".join(values) + " |")
  scores = {"anomaly": "deep kNN distance to the normal class's training rows",
            "anomaly_reconstruction": "reconstruction error's distance from the normal class's "
                                      "training errors (robust z-score)"}
  scored = list(dict.fromkeys(r["protocol"] for r in report["results"]
                              if r.get("metric") == "auroc"))
  if scored:
    lines += ["", "The anomaly rows are the one-class AUROC (%), mean ± std over the classes "
              "taken in turn as normal, test rows scored by " + "; ".join(
                  f"{scores[p]} (`{p}`)" if p in scores else f"`{p}`" for p in scored)
              + "; `anomaly_auroc.png` shows each class."]
  held_out = report.get("held_out")
  if held_out:
    lines += ["", f"## Held-out: {held_out['dataset']} {held_out['split']}", "",
              "| measure | value |", "|---|---|"]
    lines += [f"| {name} | {value:.4f} |" for name, value in held_out.items()
              if name not in ("dataset", "split")]
  retrieval = report.get("retrieval")
  if retrieval:
    first, second = retrieval["kinds"]
    keys = [f"{a}_to_{b}_r{k}" for a, b in ((first, second), (second, first)) for k in (1, 5)]
    lines += ["", f"## Retrieval: {retrieval['dataset']} {retrieval['split']} "
              f"({retrieval['queries']} {first} inputs, {retrieval['items']} {second} inputs)",
              "", f"Recall@K (%): a hit is the true {second} ({first}) input among the K "
              "nearest.", "",
              "| features | " + " | ".join(key.replace("_to_", "→").replace("_r", " R@")
                                           for key in keys) + " |", "|---|---|---|---|---|"]
    for row in retrieval["results"]:
      lines.append(f"| {row['features']} | " + " | ".join(
          f"{100 * row[key]:.1f}" for key in keys) + " |")
  segmentation = report.get("segmentation")
  if segmentation:
    lines += segmentation_lines(segmentation)
  if "expected" in report:
    lines += expected.markdown(report["expected"])
  for name in report.get("plots", []) + report.get("pictures", []):
    lines += ["", f"## {os.path.splitext(name)[0]}", "", f"![{name}]({name})"]
  return "\n".join(lines) + "\n"


def segmentation_lines(section: dict, max_classes: int = 20) -> list[str]:
  """The dense probe's setting and, for up to `max_classes` classes, each class's IoU."""
  lines = ["", f"## Segmentation: {section['dataset']} {section['split']}", "",
           f"A linear probe on frozen dense features ({section['train_images']} training and "
           f"{section['test_images']} test images, {section['classes']} classes, masks "
           f"{section['masks']}): the rows segmentation_miou and segmentation_pixel_accuracy "
           "above; `segmentation.png` shows test images, their truth and each source's "
           "prediction."]
  if section["classes"] <= max_classes:
    lines += ["", "IoU (%) per class:", "",
              "| features | " + " | ".join(str(c) for c in range(section["classes"])) + " |",
              "|---|" + "---|" * section["classes"]]
    for source, values in section["iou"].items():
      lines.append(f"| {source} | " + " | ".join(
          "" if v is None else f"{100 * v:.1f}" for v in values) + " |")
  return lines


def write(report: dict, images: dict[str, dict[str, np.ndarray]], out_dir: str) -> dict:
  """Writes each image as `out_dir/<stem>.png` (listing the file names in `report` under its
  key), then report.json and report.md, each atomically; returns the report."""
  from ssl_jax.eval import pictures  # pylint: disable=g-import-not-at-top
  for key, drawn in images.items():
    if drawn:
      report[key] = pictures.write(drawn, out_dir)
  os.makedirs(out_dir, exist_ok=True)
  for name, text in (("report.json", json.dumps(report, indent=2)),
                     ("report.md", markdown_table(report))):
    tmp = os.path.join(out_dir, name + ".tmp")
    with open(tmp, "w") as f:
      f.write(text)
    os.replace(tmp, os.path.join(out_dir, name))
  return report
