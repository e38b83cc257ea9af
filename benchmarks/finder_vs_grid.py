"""Benchmark v2: does choosing the LR with lrlab's range test (or `lr=auto`) beat a constant,
fastai's valley, the steepest-gradient rule and the learning-rate-free optimizers, on
configurations whose best LR really moves? Run by hand (17.5 hours of trials on 2 CPU cores, over
several sessions: `plan` estimates what is left), not by CI:

    python benchmarks/finder_vs_grid.py plan      # every lrlab command, trials and estimated time
    python benchmarks/finder_vs_grid.py run       # run them (again: resumes where it stopped)
    python benchmarks/finder_vs_grid.py analyse   # tables, plots, CSV in experiments/finder_benchmark/
    python benchmarks/finder_vs_grid.py save      # snapshot the studies into the repository

The configurations and contenders are in `finder_bench_configs.py`. Per configuration, each an
lrlab multirun over the seeds and an Optuna study in `<bench dir>/studies/<config>.db` that a
rerun of the same command completes:
- `grid`: the graded stage's LR on a half-decade grid (1e-5..1e-1 for AdamW, 1e-4..1 for SGD and
  linear probes);
- `refine`: once the grid is complete, the quarter-decade LRs either side of its best (on mean
  valid error), and one more half-decade beyond an end of the grid when the best sits there;
- one study per contender, trained at the contender's own choice (`lrlab`, `valley`, `steepest`:
  `lr=find` with that rule; `auto`: `lr=auto`; `prodigy` (lr=1, constant schedule), `schedulefree`
  (lr 0.0025, constant schedule): those optimizers).
The confirmation row (`finder_bench_configs.CONFIRMATION`) runs only with `--confirmation`, once
every development decision is made. A diverged run is a pruned trial and counts as finished.
Every run is `lrlab` in a subprocess, launched from the bench dir (MLflow store `mlflow.db` there),
exactly as printed. `--set KEY=VALUE ...` appends overrides to every command (e.g. tiny settings).
The bench dir is not tracked (run dirs hold checkpoints), so `save` copies the study databases,
which hold every result the analysis reads, to `experiments/finder_benchmark/v2/studies/`; `run`
in a fresh checkout starts from those copies, so the benchmark resumes across clones.
"""

from __future__ import annotations

import argparse
import math
import shlex
import shutil
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from finder_bench_configs import BY_NAME, CONFIGS, CONTENDERS, SEEDS, BenchConfig
from finder_bench_jobs import Job, make_job
from finder_grid_runs import run_lrlab, settled_trials

KINDS = ("grid", "refine", *CONTENDERS)
ROOT = Path(__file__).resolve().parent.parent
SAVED_STUDIES = ROOT / "experiments" / "finder_benchmark" / "v2" / "studies"


def refine_lrs(config: BenchConfig, valid_by_lr: dict[float, list[float]]) -> list[float]:
    """The quarter-decade LRs either side of the best grid LR (lowest mean valid error, the lower
    LR on a tie), plus the next half-decade point beyond the grid when the best is at an end."""
    best = min(valid_by_lr, key=lambda lr: (float(np.mean(valid_by_lr[lr])), lr))
    x, (low, high) = math.log10(best), config.grid
    offsets = [-0.25, 0.25]
    if math.isclose(x, low, abs_tol=1e-6):
        offsets = [-0.75, -0.5, *offsets]
    if math.isclose(x, high, abs_tol=1e-6):
        offsets = [*offsets, 0.5, 0.75]
    return sorted(float(f"{10 ** (x + d):.3g}") for d in offsets)


def grid_valid(opts: argparse.Namespace, config: BenchConfig) -> dict[float, list[float]] | None:
    """Per grid LR the seeds' valid error rates (a diverged run at chance), once the grid is settled."""
    from finder_bench_scoring import load_runs

    job = make_job(opts, config, "grid")
    if settled_trials(job.storage, job.study) < job.trials:
        return None
    out: dict[float, list[float]] = {}
    for run in load_runs(job.storage, job.study, config.stage):
        out.setdefault(run.lr, []).append(run.valid_error)
    return out


def config_jobs(opts: argparse.Namespace, config: BenchConfig) -> list[Job | str]:
    """The configuration's studies in running order; the refine study is a note until the grid is done."""
    out: list[Job | str] = []
    for kind in opts.kinds:
        if kind == "refine":
            valid = grid_valid(opts, config)
            out.append(
                make_job(opts, config, kind, refine_lrs(config, valid))
                if valid
                else f"# {config.name} refine: waits for the complete grid"
            )
        else:
            out.append(make_job(opts, config, kind))
    return out


def selected(opts: argparse.Namespace) -> list[BenchConfig]:
    chosen = [BY_NAME[n] for n in opts.configs] if opts.configs else list(CONFIGS)
    return [c for c in chosen if opts.confirmation or not c.confirmation]


def command_line(job: Job, bench: Path) -> str:
    return f"cd {shlex.quote(bench.as_posix())} && lrlab {shlex.join(job.args)}"


def seconds_per_trial(opts: argparse.Namespace, config: BenchConfig) -> float:
    """Median wall-clock seconds of the configuration's finished grid trials (robust to a few that
    shared the CPU), else its prior estimate."""
    from finder_bench_scoring import trial_seconds

    job = make_job(opts, config, "grid")
    found = trial_seconds(job.storage, job.study)
    return float(np.median(found)) if found else config.prior_seconds()


def plan(opts: argparse.Namespace) -> int:
    total = 0.0
    for config in selected(opts):
        per_trial = seconds_per_trial(opts, config)
        print(f"## {config.name}{' (confirmation row)' if config.confirmation else ''}: {config.description}")
        for job in config_jobs(opts, config):
            if isinstance(job, str):
                print(job)
                continue
            done = settled_trials(job.storage, job.study)
            left = max(0, job.trials - done) * per_trial
            total += left
            print(f"# {job.kind}: {done}/{job.trials} trials done, ~{left / 60:.0f} min left")
            print(command_line(job, opts.bench_dir))
    print(f"# estimated time left: {total / 3600:.1f} h (from each configuration's finished grid trials)")
    return 0


def save(opts: argparse.Namespace) -> int:
    """Snapshot every study database into `opts.saved` with SQLite's backup API (consistent while
    a run is writing to it)."""
    sources = sorted((opts.bench_dir / "studies").glob("*.db"))
    if not sources:
        print(f"no studies under {opts.bench_dir / 'studies'}", file=sys.stderr)
        return 1
    opts.saved.mkdir(parents=True, exist_ok=True)
    for source in sources:
        target = opts.saved / source.name
        with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
            src.backup(dst)
        print(f"saved {target} ({target.stat().st_size // 1024} KiB)")
    return 0


def restore_saved(opts: argparse.Namespace) -> None:
    """Start each study the bench dir lacks from its saved copy (a fresh checkout resumes)."""
    studies = opts.bench_dir / "studies"
    studies.mkdir(parents=True, exist_ok=True)
    for saved in sorted(opts.saved.glob("*.db")) if opts.saved.is_dir() else ():
        if not (studies / saved.name).exists():
            shutil.copy2(saved, studies / saved.name)
            print(f"# resumed from the saved study {saved}", flush=True)


def run(opts: argparse.Namespace) -> int:
    """Run every study not yet complete, configuration by configuration; a failed one is reported
    and the others go on."""
    restore_saved(opts)
    failed = []
    for config in selected(opts):
        for kind in opts.kinds:
            job = next((j for j in config_jobs(opts, config) if isinstance(j, Job) and j.kind == kind), None)
            if job is None:
                print(f"# {config.name} {kind}: not runnable yet (its grid is incomplete)", flush=True)
                continue
            done, line = settled_trials(job.storage, job.study), command_line(job, opts.bench_dir)
            if done >= job.trials:
                print(f"# complete ({done}/{job.trials} trials), skipped: {line}", flush=True)
                continue
            print(f"# {config.name} {kind}: {done}/{job.trials} trials done\n$ {line}", flush=True)
            start = time.perf_counter()
            status = run_lrlab(job.args, opts.bench_dir, opts.bench_dir / "logs" / f"{job.study}.log")
            print(f"# exit status {status} after {time.perf_counter() - start:.0f} s", flush=True)
            if status != 0:
                failed.append(line)
    for line in failed:
        print(f"FAILED (rerun to resume): {line}", file=sys.stderr)
    return 1 if failed else 0


def analyse(opts: argparse.Namespace) -> int:
    """Read every study that exists back and write the report to --out."""
    from finder_bench_report import write_report

    paths = write_report(opts, selected(opts))
    if not paths:
        print("nothing to analyse: run the benchmark first", file=sys.stderr)
        return 1
    print(paths[0].read_text())
    print("\n".join(f"wrote {p}" for p in paths))
    return 0


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--configs", nargs="+", choices=list(BY_NAME), help="default: every development one")
    common.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    common.add_argument(
        "--confirmation", action="store_true", help="include the confirmation row (run it once, at the end)"
    )
    common.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    common.add_argument(
        "--grid-lrs", nargs="+", type=float, help="the grid's LRs instead (tests, quick looks)"
    )
    common.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="extra lrlab overrides")
    common.add_argument(
        "--bench-dir",
        type=Path,
        default=Path("outputs/finder_benchmark_v2"),
        help="studies, run dirs, logs and the MLflow store (default: %(default)s)",
    )
    common.add_argument(
        "--saved",
        type=Path,
        default=SAVED_STUDIES,
        help="where `save` snapshots the studies and `run` resumes them from (default: %(default)s)",
    )
    top = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    sub = top.add_subparsers(dest="command", required=True)
    for name, fn, text in (
        ("plan", plan, "print every command and the estimated time left"),
        ("run", run, "run (or resume) every study"),
        ("analyse", analyse, "write the tables, plots and CSV"),
        ("save", save, "snapshot the study databases into the repository"),
    ):
        command = sub.add_parser(name, parents=[common], help=text)
        command.set_defaults(fn=fn)
    sub.choices["analyse"].add_argument("--out", type=Path, default=ROOT / "experiments" / "finder_benchmark")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    opts = parser().parse_args(argv)
    if len(set(opts.seeds)) < 2:
        parser().error("--seeds: give at least 2 (every study is a multirun over the seeds)")
    opts.bench_dir = opts.bench_dir.resolve()
    return opts.fn(opts)


if __name__ == "__main__":
    sys.exit(main())
