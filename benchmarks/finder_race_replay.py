"""Choosing `lr=auto`'s settings without training: replay its race on the finder benchmark v2's
development grids. A raced candidate trains exactly as a grid run at its LR does (same start,
seed, data order and full-length schedule), so its valid error after each raced epoch is the grid
run's per-epoch valid error (the Optuna intermediate values each grid trial reports). Each option
(`lr_auto.factors` x `lr_auto.race`) is replayed per (configuration, seed) from the `lrlab`
contender's suggestion, candidates snapped to the nearest grid or refinement LR, through lrlab's
own judge (`SuccessiveHalvingJudge`, reduction factor 3) on valid error, and scored like the
benchmark: the chosen LR's test error minus the grid best's, in points. The confirmation row is
never read.

    python benchmarks/finder_race_replay.py              # the table, and the option chosen
    python benchmarks/finder_race_replay.py --detail     # every case's candidates and winner
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finder_bench_configs import CONFIGS, BenchConfig
from finder_bench_jobs import make_job
from finder_bench_report import load_result

OPTIONS: dict[str, tuple[tuple[float, ...], float]] = {
    "find (no race)": ((1.0,), 0.0),
    "[1, 1/3, 3] x0.2 (v1 default)": ((1.0, 1 / 3, 3.0), 0.2),
    "[1, 1/3, 3] x0.4": ((1.0, 1 / 3, 3.0), 0.4),
    "[1, 1/3, 3, 10] x0.2": ((1.0, 1 / 3, 3.0, 10.0), 0.2),
    "[1, 1/3, 3, 10] x0.4": ((1.0, 1 / 3, 3.0, 10.0), 0.4),
    "[1, 3] x0.2": ((1.0, 3.0), 0.2),
    "[1, 3, 10] x0.2": ((1.0, 3.0, 10.0), 0.2),
    "[1, 3, 10] x0.4": ((1.0, 3.0, 10.0), 0.4),
    "[1, 3, 10, 30] x0.2": ((1.0, 3.0, 10.0, 30.0), 0.2),
    "[1, 1/3, 3, 10, 30] x0.2": ((1.0, 1 / 3, 3.0, 10.0, 30.0), 0.2),
    "[1, 1/3, 3, 10, 30] x0.4": ((1.0, 1 / 3, 3.0, 10.0, 30.0), 0.4),
}


@dataclass(frozen=True)
class GridRun:
    """One grid or refinement run: its per-epoch valid error (all stages), its test error (a
    diverged run's is the error of guessing, as the benchmark scores it), diverged or not."""

    curve: tuple[float, ...]
    test_error: float
    diverged: bool


@dataclass
class Replayable:
    """A development configuration's grid runs by (LR, seed), the range test's suggestion per
    seed, and the grid best (the benchmark report's, `ConfigResult.best_lr`)."""

    config: BenchConfig
    runs: dict[tuple[float, int], GridRun]
    suggestions: dict[int, float]
    best_lr: float

    @property
    def lrs(self) -> list[float]:
        return sorted({lr for lr, _ in self.runs})

    def snap(self, lr: float) -> float:
        return min(self.lrs, key=lambda x: abs(math.log10(x / lr)))


def load(opts: argparse.Namespace, config: BenchConfig) -> Replayable | None:
    """The configuration as the benchmark report reads it (None until its grid has settled and its
    `lrlab` contender has run), with each grid run's per-epoch valid errors added."""
    import optuna

    result = load_result(opts, config)
    if result is None or not result.contenders.get("lrlab"):
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    curves: dict[tuple[float, int], tuple[float, ...]] = {}
    for kind in ("grid", "refine"):
        job = make_job(opts, config, kind, [1.0])
        try:
            study = optuna.load_study(study_name=job.study, storage=job.storage)
        except KeyError:
            continue
        for trial in study.get_trials(deepcopy=False):
            values = trial.intermediate_values
            key = (_lr_key(trial.params[f"stages.{config.stage}.lr"]), int(trial.params["seed"]))
            curves[key] = tuple(values[k] for k in sorted(values))
    runs = {
        (run.lr, run.seed): GridRun(curves[(_lr_key(run.lr), run.seed)], run.test_error, run.diverged)
        for run in result.grid
    }
    suggestions = {run.seed: run.lr for run in result.contenders["lrlab"]}
    return Replayable(config, runs, suggestions, result.best_lr)


def _lr_key(lr: float) -> float:
    return round(math.log10(float(lr)), 6)


def replay(data: Replayable, seed: int, factors: Sequence[float], race: float) -> tuple[float, float]:
    """The LR `lr=auto` would keep for `seed` with these settings, and the epochs its race trained
    beyond the winner's (its extra compute). `race=0` is `lr=find`: the suggestion itself."""
    from lrlab.integrations.optuna import SuccessiveHalvingJudge
    from lrlab.train.stage import AutoLrConfig

    suggestion = data.suggestions[seed]
    if race == 0:
        return data.snap(suggestion), 0.0
    epochs = int(data.config.settings["epochs"])
    race_epochs = min(AutoLrConfig(race=race).race_epochs(epochs), epochs)
    before = len(next(iter(data.runs.values())).curve) - epochs  # epochs of earlier stages
    judge, best, trained = SuccessiveHalvingJudge(3), None, 0
    for factor in factors:
        lr = data.snap(suggestion * factor)
        run = data.runs[(lr, seed)]
        entry, value, outcome = judge.enter(lr), math.nan, "finished"
        for epoch in range(race_epochs):
            if run.diverged and before + epoch >= len(run.curve) - 1:
                outcome = "diverged"
                break
            value, trained = run.curve[before + epoch], trained + 1
            if judge.report(entry, epoch + 1, value) and epoch + 1 < race_epochs:
                outcome = "pruned"
                break
        judge.finish(entry, value if outcome == "finished" else None)
        if outcome == "finished" and (best is None or value < best[0]):
            best = (value, lr)
    if best is None:
        return math.nan, float(trained)
    return best[1], float(trained - race_epochs)


def score(data: Replayable, factors: Sequence[float], race: float) -> list[tuple[int, float, float, float]]:
    """Per seed: (seed, chosen LR, regret in points vs the grid best, compute vs the 9 grid runs)."""
    best, epochs = data.best_lr, data.config.train_epochs
    out = []
    for seed in sorted(data.suggestions):
        lr, extra = replay(data, seed, factors, race)
        if not math.isfinite(lr):
            out.append((seed, lr, math.nan, math.nan))
            continue
        chosen, grid = data.runs[(lr, seed)], data.runs[(best, seed)]
        out.append((seed, lr, 100 * (chosen.test_error - grid.test_error), (epochs + extra) / (9 * epochs)))
    return out


def table(datas: Sequence[Replayable], detail: bool) -> str:
    """Per option its mean regret per configuration and overall, and its training compute (the
    stage's epochs and the race's extra ones over the 9 grid runs; range test not counted); then
    the leave-one-configuration-out choice (ties to the cheaper option)."""
    names = list(OPTIONS)
    scores = {n: {d.config.name: score(d, *OPTIONS[n]) for d in datas} for n in names}

    def regret(name: str, data: Replayable) -> float:
        return float(np.mean([r[2] for r in scores[name][data.config.name]]))

    compute = {n: float(np.mean([r[3] for d in datas for r in scores[n][d.config.name]])) for n in names}
    lines = [
        "| option | " + " | ".join(d.config.name for d in datas) + " | mean regret (pt) | compute |",
        "|---|" + "---:|" * (len(datas) + 2),
    ]
    for name in names:
        per = [regret(name, d) for d in datas]
        cells = " | ".join(f"{p:+.2f}" for p in per)
        lines.append(f"| {name} | {cells} | {np.mean(per):+.2f} | {compute[name]:.3f} |")
    lines += ["", "Leave-one-configuration-out: the race option with the lowest regret on the others.", ""]
    loco = []
    for d in datas:
        others = [o for o in datas if o is not d]
        if others:
            pick = min(names[1:], key=lambda n: (np.mean([regret(n, o) for o in others]), compute[n]))
            loco.append(regret(pick, d))
            lines.append(f"- {d.config.name}: {pick} -> {loco[-1]:+.2f} pt")
    if loco:
        lines.append(f"- mean over configurations: {np.mean(loco):+.2f} pt")
    if detail:
        lines.append("")
        for name in names:
            for d in datas:
                cases = ", ".join(f"s{s} {lr:.3g} ({r:+.1f})" for s, lr, r, _ in scores[name][d.config.name])
                lines.append(f"{name} | {d.config.name} (best {d.best_lr:.3g}): {cases}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    top = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    top.add_argument("--bench-dir", type=Path, default=Path("outputs/finder_benchmark_v2"))
    top.add_argument("--detail", action="store_true")
    opts = top.parse_args(argv)
    opts.bench_dir = opts.bench_dir.resolve()
    opts.seeds, opts.set, opts.grid_lrs = [0, 1, 2], [], None
    datas = [d for c in CONFIGS if not c.confirmation for d in [load(opts, c)] if d is not None]
    if not datas:
        print("nothing to replay: run the grids and the lrlab contender first", file=sys.stderr)
        return 1
    print(table(datas, opts.detail))
    return 0


if __name__ == "__main__":
    sys.exit(main())
