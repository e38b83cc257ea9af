"""How long must the range test be? On the finder benchmark v2's single-stage development
configurations, run `task=lr_find` at several `lr_finder.num_iter` per seed and score each rule's
suggestion, recomputed from the raw losses, in decades from the configuration's grid-best LR
(from `finder_vs_grid.py run --kinds grid refine`). A range test of N steps costs N / (steps per
epoch) epochs of training, so on small problems a shorter test is what keeps `lr=find` cheap.

    python benchmarks/finder_range_length.py run       # resumable: a finished test is skipped
    python benchmarks/finder_range_length.py save      # copy the finished tests' CSVs into the repo
    python benchmarks/finder_range_length.py analyse   # the table (also in range_length.md)

The bench dir is not tracked; `save` copies each finished test's `lr_find.csv` (all the analysis
reads) to `experiments/finder_benchmark/v2/rangetests/`, and `run` starts from those copies, so
the study resumes across clones.
"""

from __future__ import annotations

import argparse
import csv
import math
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from finder_bench_configs import CONFIGS, SEEDS, BenchConfig
from finder_grid_runs import run_lrlab

LENGTHS = (100, 50, 25)
ROOT = Path(__file__).resolve().parent.parent
SAVED = ROOT / "experiments" / "finder_benchmark" / "v2" / "rangetests"


def configs() -> list[BenchConfig]:
    """The development configurations whose graded stage is the first (a range test from the
    built model is that stage's)."""
    return [c for c in CONFIGS if not c.confirmation and c.stage == 0]


def run_dir(bench: Path, config: BenchConfig, length: int, seed: int) -> Path:
    return bench / "rangetests" / config.name / f"n{length}-s{seed}"


def save(opts: argparse.Namespace) -> int:
    """Copy every finished test's CSV from the bench dir to `opts.saved` (same relative paths)."""
    found = sorted((opts.bench_dir / "rangetests").glob("*/*/lr_find.csv"))
    for source in found:
        target = opts.saved / source.relative_to(opts.bench_dir / "rangetests")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    print(f"saved {len(found)} range tests to {opts.saved}")
    return 0


def run(opts: argparse.Namespace) -> int:
    failed = 0
    for config in configs():
        for length in opts.lengths:
            for seed in opts.seeds:
                out = run_dir(opts.bench_dir, config, length, seed)
                saved = opts.saved / config.name / out.name / "lr_find.csv"
                if saved.is_file() and not (out / "lr_find.csv").is_file():
                    out.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(saved, out / "lr_find.csv")
                if (out / "lr_find.csv").is_file():
                    continue
                args = [
                    "task=lr_find",
                    f"experiment=bench_{config.problem}",
                    *config.overrides,
                    f"lr_finder.num_iter={length}",
                    f"seed={seed}",
                    "tracking=none",
                    f"hydra.run.dir={out.as_posix()}",
                ]
                print(f"$ lrlab {' '.join(args)}", flush=True)
                failed += run_lrlab(args, opts.bench_dir, opts.bench_dir / "logs" / "range_length.log") != 0
    return 1 if failed else 0


def suggestions(path: Path, length: int) -> dict[str, float]:
    """Every rule's suggestion on a range-test CSV's raw losses, smoothed as lrlab smooths them."""
    from lrlab.finder.config import FinderConfig
    from lrlab.finder.range_test import smoothed_curves
    from lrlab.finder.rules import suggest_on_curves

    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    lrs = np.array([float(r["lr"]) for r in rows])
    losses = np.array([float(r["loss"]) for r in rows])
    stopped = len(rows) < length
    curves = smoothed_curves(losses, stopped, FinderConfig(num_iter=length))
    return suggest_on_curves(lrs, curves)


def grid_best(rows_csv: Path) -> dict[str, float]:
    """Each configuration's grid-best LR, as the benchmark's analysis recorded it (`v2/rows.csv`), so
    the study can be analysed in a clone without the bench dir's grid studies."""
    with rows_csv.open(newline="") as handle:
        return {row["config"]: float(row["best_lr"]) for row in csv.DictReader(handle)}


def analyse(opts: argparse.Namespace) -> int:
    best = grid_best(opts.rows)
    rows = []
    for config in configs():
        if config.name not in best:
            continue
        for length in opts.lengths:
            for seed in opts.seeds:
                path = run_dir(opts.bench_dir, config, length, seed) / "lr_find.csv"
                if path.is_file():
                    for rule, lr in suggestions(path, length).items():
                        finite = math.isfinite(lr) and lr > 0
                        decades = math.log10(lr / best[config.name]) if finite else math.nan
                        rows.append(
                            {
                                "config": config.name,
                                "length": length,
                                "seed": seed,
                                "rule": rule,
                                "decades": decades,
                            }
                        )
    if not rows:
        print("nothing to analyse: run the grids and the range tests first", file=sys.stderr)
        return 1
    lines = [
        "# Range-test length against the grid-best LR",
        "",
        f"Configurations: {', '.join(sorted({r['config'] for r in rows}))}; seeds {list(opts.seeds)}.",
        "Decades: log10(suggestion / grid-best LR), the suggestion recomputed from the test's raw losses;",
        "grid-best LRs from `rows.csv`. Each test ramps what the configuration's first stage trains (the",
        "linear probes: the head, body frozen), as that stage's `lr=find` does.",
        "",
        "| rule | num_iter | cases | median decades | mean abs decades | within 0.25 | within 0.5 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for rule in sorted({r["rule"] for r in rows}):
        for length in opts.lengths:
            d = np.array([r["decades"] for r in rows if r["rule"] == rule and r["length"] == length])
            d = d[np.isfinite(d)]
            if len(d):
                near = [100 * np.mean(np.abs(d) <= limit + 1e-9) for limit in (0.25, 0.5)]
                lines.append(
                    f"| {rule} | {length} | {len(d)} | {np.median(d):+.2f} | {np.abs(d).mean():.2f} | "
                    f"{near[0]:.0f}% | {near[1]:.0f}% |"
                )
    text = "\n".join(lines) + "\n"
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / "range_length.md").write_text(text)
    print(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    top = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    top.add_argument("command", choices=("run", "save", "analyse"))
    top.add_argument("--lengths", nargs="+", type=int, default=list(LENGTHS))
    top.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    top.add_argument("--bench-dir", type=Path, default=Path("outputs/finder_benchmark_v2"))
    top.add_argument("--out", type=Path, default=ROOT / "experiments" / "finder_benchmark" / "v2")
    top.add_argument(
        "--rows", type=Path, default=ROOT / "experiments" / "finder_benchmark" / "v2" / "rows.csv"
    )
    top.add_argument(
        "--saved", type=Path, default=SAVED, help="where save copies the CSVs (default: %(default)s)"
    )
    opts = top.parse_args(argv)
    opts.bench_dir = opts.bench_dir.resolve()
    return {"run": run, "save": save, "analyse": analyse}[opts.command](opts)


if __name__ == "__main__":
    sys.exit(main())
