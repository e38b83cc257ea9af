"""Summarise lrlab runs made with `tracking=none` (e.g. on a GPU machine without MLflow) from their
`lrlab.log` files: one row per recipe with mean, standard deviation and n over its seeds.

    python benchmarks/collect_runs.py ROOT        # ROOT/<recipe>/<seed dir>/lrlab.log

Reads what every run prints: the final valid metrics and throughput (`done in ...`), the test block
(accuracy, balanced accuracy, per-class recall, ELPV's 2-class accuracy), each stage's LR choice
and the last stage's peak LR of the head group.
The log is the only record such runs have, so this parses it instead of querying MLflow.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

PATTERNS = {
    "valid_acc": re.compile(r"done in \S+ .*?accuracy ([\d.]+)\s*$"),
    "images_per_s": re.compile(r"done in \S+ \([\d.]+ s/epoch, (\d+) train images/s\)"),
    "wall_s": re.compile(r"done in (\d+):(\d+)"),
    "test_acc": re.compile(r"^\s*accuracy ([\d.]+)\s+balanced accuracy"),
    "test_balanced": re.compile(r"balanced accuracy ([\d.]+)"),
    "test_2class": re.compile(r"2-class accuracy \(functional vs defective\): ([\d.]+)"),
    # the head group's peak LR; each stage prints one, so the last stage's is what stays
    "last_head_lr": re.compile(r"peak lr per layer group: .*\bhead=([\d.e+-]+)"),
}
LR_LINE = re.compile(r"^\s*lr (\S+) (?:= (\w+) suggestion|= lr=(auto) race winner|\(fixed\))")
RECALL_LINE = re.compile(r"^\s*recall: (.+)$")
RECALL_ITEM = re.compile(r"(\S+) ([\d.]+)$")


def parse_log(path: Path) -> dict[str, float | str]:
    """The numbers one run's log holds (missing keys: the run did not get that far)."""
    row: dict[str, float | str] = {}
    lrs: list[str] = []
    for raw in path.read_text(errors="replace").splitlines():
        line = raw.split(" - ", 1)[1] if "][lrlab][" in raw else raw
        for key, pattern in PATTERNS.items():
            match = pattern.search(line)
            if match and key == "wall_s":
                row[key] = int(match.group(1)) * 60 + int(match.group(2))
            elif match:
                row[key] = float(match.group(1))
        recall = RECALL_LINE.match(line)
        if recall:
            for item in recall.group(1).split(", "):
                found = RECALL_ITEM.match(item.strip())
                if found:
                    row[f"recall {found.group(1)}"] = float(found.group(2))
        lr = LR_LINE.match(line)
        if lr:
            rule = lr.group(2) or lr.group(3)
            lrs.append(f"{float(lr.group(1)):.3g}" + (f" ({rule})" if rule else ""))
    row["lrs"] = " / ".join(lrs)
    return row


def summarise(root: Path) -> str:
    """A markdown table: one row per recipe folder under `root`, aggregated over its runs."""
    keys = ["valid_acc", "test_acc", "test_balanced", "test_2class", "wall_s", "images_per_s"]
    recipes = sorted(p for p in root.iterdir() if p.is_dir() and any(p.glob("*/lrlab.log")))
    logs = {recipe: [parse_log(log) for log in sorted(recipe.glob("*/lrlab.log"))] for recipe in recipes}
    keys += sorted({k for rows in logs.values() for r in rows for k in r if k.startswith("recall ")})
    lines = [
        "| recipe | n | " + " | ".join(keys) + " | LRs (seed by seed) |",
        "|---|---|" + "---|" * len(keys) + "---|",
    ]
    for recipe, rows in logs.items():
        done = [r for r in rows if "test_acc" in r]
        cells = []
        for key in keys:
            values = [float(r[key]) for r in done if key in r]
            if not values:
                cells.append("-")
            elif len(values) == 1:
                cells.append(f"{values[0]:.4g}")
            else:
                cells.append(f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}")
        lrs = "; ".join(str(r.get("lrs", "")) for r in done)
        lines.append(f"| {recipe.name} | {len(done)}/{len(rows)} | " + " | ".join(cells) + f" | {lrs} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", type=Path)
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        print(f"{args.root}: not a folder", file=sys.stderr)
        return 2
    print(summarise(args.root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
