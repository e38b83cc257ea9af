"""ELPV ablation (issue 24): the CPU recipe as it was (BASELINE) and one change per row, each over seeds 0-2,
resumable, then one table of valid and test accuracy, balanced accuracy, per-class recall and wall
time per row (choose on valid; test is reported). Run by hand, not by CI (~20 minutes a row on 2
idle CPU cores):

    python benchmarks/elpv_ablation.py plan            # every row's lrlab command and what is done
    python benchmarks/elpv_ablation.py run [ROW ...]   # run (again: only the seeds not finished)
    python benchmarks/elpv_ablation.py table           # markdown table from the runs' lrlab.log files
    python benchmarks/elpv_ablation.py by-lr           # every finished run, by its unfrozen stage's LR

Every run is a plain `lrlab` run, one per seed, from the repository root with
`tracking=none`, its log in `<out>/<row>/seed_<seed>/lrlab.log`; `benchmarks/collect_runs.py` parses the logs.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from collect_runs import parse_log, summarise
from finder_grid_runs import run_lrlab

ROOT = Path(__file__).resolve().parent.parent
SEEDS = (0, 1, 2)
ROWS: dict[str, tuple[str, ...]] = {
    "default": (),
    "head-regress": ("model.head=regress", "train.label_smoothing=0"),  # a level has no smoothing
    "head-ordinal": ("model.head=ordinal",),
    "balance-sampler": ("data.balance=sampler",),
    "balance-weights": ("data.balance=weights",),
    "ema-0.998": ("train.ema_decay=0.998",),
    "mixup-0.2": ("train.mixup_alpha=0.2",),
    "cutmix-1.0": ("train.cutmix_alpha=1.0",),
    "layer-decay-0.75": ("train.layer_decay=0.75",),
    "lr-auto": ("stages.1.lr=auto",),
    # the race a decade either side of the suggestion: ELPV's bad seeds drew suggestions too high
    "lr-auto-0.1-1-10": ("stages.1.lr=auto", "lr_auto.factors=[1,0.1,10]"),
    "unfrozen-valley": ("stages.1.lr_rule=valley",),  # fastai's rule for the unfrozen stage
    "unfrozen-lr-5e-3": ("stages.1.lr=5e-3",),  # a constant where the suggestions did best so far
    "head-ordinal-unfrozen-lr-5e-3": ("model.head=ordinal", "stages.1.lr=5e-3"),
    "lite1-128px": ("model=efficientnet_lite1",),
    "lite2-96px": ("model=efficientnet_lite2", "data.image_size=96"),
    "lite2-128px": ("model=efficientnet_lite2",),
    "lite2-128px-ordinal": ("model=efficientnet_lite2", "model.head=ordinal"),
    "deitsch-split": ("experiment=elpv_deitsch_split",),
    # the current recipe (ordinal head, unfrozen 5e-3) at 160 px, 1+10 epochs to stay near 10 minutes
    "recipe-160px-1+10": ("model.head=ordinal", "stages.1.lr=5e-3", "data.image_size=160", "epochs=10"),
}
QUIET = ("tracking=none", "train.progress=false")
BASELINE = ("model.head=classify", "stages.1.lr=find")
"""The recipe every row changes one thing of (ELPV's before issue 24 made the ordinal head and a
fixed unfrozen LR its default), pinned so the rows mean the same whatever the recipe becomes."""


def row_overrides(row: str) -> list[str]:
    """The row's overrides after the baseline's, less the baseline keys the row sets itself."""
    own = {item.split("=", 1)[0] for item in ROWS[row]}
    return [item for item in BASELINE if item.split("=", 1)[0] not in own] + list(ROWS[row])


def finished(log: Path) -> bool:
    """Whether a run's log holds its test block (the run got to the end)."""
    return log.is_file() and "test_acc" in parse_log(log)


def missing_seeds(out: Path, row: str, seeds: Sequence[int]) -> list[int]:
    return [s for s in seeds if not finished(out / row / f"seed_{s}" / "lrlab.log")]


def clear_unfinished(out: Path, row: str, seeds: Sequence[int]) -> None:
    """Remove what an interrupted run of these seeds left, so the rerun's log (lrlab appends to
    an existing one) holds one run only."""
    for seed in seeds:
        folder = out / row / f"seed_{seed}"
        if folder.is_dir():
            print(f"# {row}: removing the unfinished run in {folder}", flush=True)
            shutil.rmtree(folder)


def command(out: Path, row: str, seed: int) -> list[str]:
    """The lrlab run of one row at one seed, its log in `out/row/seed_<seed>`: plain runs, not one
    multirun per row, so a rerun of some seeds never meets an Optuna study drawn over others."""
    run_dir = out / row / f"seed_{seed}"
    return [*row_overrides(row), *QUIET, f"seed={seed}", f"hydra.run.dir={run_dir.as_posix()}"]


def runs_by_last_lr(out: Path) -> str:
    """A markdown table of every finished run, ordered by the peak LR of the head group in its last
    (unfrozen) stage, however it was chosen (suggestion, race or fixed): where the range test's
    suggestion lands and what it gives."""
    runs = []
    for log in out.glob("*/seed_*/lrlab.log"):
        row = parse_log(log)
        if "test_acc" in row and "last_head_lr" in row:
            seed = log.parent.name.removeprefix("seed_")
            runs.append((float(row["last_head_lr"]), log.parent.parent.name, seed, row))
    lines = ["| unfrozen LR | row | seed | valid_acc | test_acc |", "|---|---|---|---|---|"]
    for lr, name, seed, row in sorted(runs, key=lambda run: run[0]):
        lines.append(f"| {lr:.3g} | {name} | {seed} | {row['valid_acc']:.4f} | {row['test_acc']:.4f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    top = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    top.add_argument("action", choices=("plan", "run", "table", "by-lr"))
    top.add_argument("rows", nargs="*", help=f"default: every row ({', '.join(ROWS)})")
    top.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    top.add_argument("--out", type=Path, default=ROOT / "outputs" / "elpv_ablation")
    opts = top.parse_args(argv)
    unknown = [r for r in opts.rows if r not in ROWS]
    if unknown:
        top.error(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    out = opts.out.resolve()
    if opts.action in ("table", "by-lr"):
        if not out.is_dir():
            print(f"{out}: no runs yet", file=sys.stderr)
            return 1
        print(summarise(out) if opts.action == "table" else runs_by_last_lr(out))
        return 0
    failed = 0
    for row in opts.rows or list(ROWS):
        seeds = missing_seeds(out, row, opts.seeds)
        done = len(opts.seeds) - len(seeds)
        print(f"# {row}: {done}/{len(opts.seeds)} seeds done", flush=True)
        for seed in seeds:
            args = command(out, row, seed)
            print(f"lrlab {shlex.join(args)}", flush=True)
            if opts.action == "run":
                clear_unfinished(out, row, [seed])
                failed += run_lrlab(args, ROOT, out / "logs" / f"{row}.log") != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
