"""Published targets as data: `config.expected`, and achieved vs expected in every report.

A config states what its recipe should reach, when a paper or a model zoo published it:

    c.expected.targets = (dict(cell="linear@all", accuracy=92.10,
                               source="solo-learn model zoo (ResNet-18, 1000 epochs)",
                               compute="1 GPU, batch 256, 1000 epochs"),)

`cell` names a report cell as the sweep tables do (`protocol@labels[@features]`, see
`ssl_jax.sweep.results`), `accuracy` is in percent. A config without a published number says
why in `config.expected.note` and leaves `targets` empty. The evaluation adds, for each
target, the achieved accuracy and the difference (`report["expected"]`, a section of
report.md); the sweep tables add the same per setting.
"""
from typing import Any

from ssl_jax.errors import UserError

FIELDS = ("cell", "accuracy", "source", "compute")


def targets(config) -> tuple[dict, ...]:
  expected = config.get("expected")
  return tuple(expected.targets) if expected is not None else ()


def check(config) -> None:
  """One-line UserErrors for malformed targets."""
  for index, target in enumerate(targets(config)):
    name = f"config.expected.targets[{index}]"
    if not isinstance(target, dict) or set(target) != set(FIELDS):
      raise UserError(f"{name} must be a dict with the keys {', '.join(FIELDS)}; got "
                      f"{target!r}")
    if not isinstance(target["cell"], str) or target["cell"].count("@") not in (1, 2):
      raise UserError(f"{name}.cell must name a report cell as protocol@labels[@features], "
                      f"got {target['cell']!r}")
    accuracy = target["accuracy"]
    if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) or \
        not 0 <= accuracy <= 100:
      raise UserError(f"{name}.accuracy must be a percentage in [0, 100], got {accuracy!r}")


def cell_name(row: dict) -> str:
  """A report row's cell name: `linear@all`, `knn@10`, `finetune@10%`, `linear@all@raw`."""
  if row.get("label_fraction"):
    labels = f"{round(100 * row['label_fraction'])}%"
  else:
    labels = "all" if row["labels_per_class"] is None else str(row["labels_per_class"])
  suffix = "" if row["features"] == "ssl" else f"@{row['features']}"
  return f"{row['protocol']}@{labels}{suffix}"


def compare(config, achieved: dict[str, float | None]) -> list[dict[str, Any]]:
  """For each target: its fields, the achieved accuracy (%) of its cell (None when the
  evaluation has no such cell) and achieved - expected."""
  rows = []
  for target in targets(config):
    value = achieved.get(target["cell"])
    rows.append({**target, "achieved": value,
                 "difference": None if value is None else value - target["accuracy"]})
  return rows


def for_report(config, report: dict) -> dict:
  """What `report["expected"]` holds: the note and the comparison of every target."""
  achieved = {cell_name(row): 100.0 * float(row["accuracy"]) for row in report["results"]}
  return {"note": config.expected.note if config.get("expected") is not None else "",
          "targets": compare(config, achieved)}


def markdown(expected: dict) -> list[str]:
  """report.md's section."""
  if not expected["targets"]:
    return ["", "## Expected", "", expected["note"] or "No published number is stated."]
  lines = ["", "## Expected (published) vs achieved", "",
           "| cell | expected (%) | achieved (%) | difference | source | compute |",
           "|---|---|---|---|---|---|"]
  for row in expected["targets"]:
    achieved = "not evaluated" if row["achieved"] is None else f"{row['achieved']:.1f}"
    difference = "" if row["difference"] is None else f"{row['difference']:+.1f}"
    lines.append(f"| {row['cell']} | {row['accuracy']:.2f} | {achieved} | {difference} | "
                 f"{row['source']} | {row['compute']} |")
  return lines
