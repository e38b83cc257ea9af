"""The report half of the finder-vs-grid benchmark (`finder_vs_grid.py analyse`): per problem and
budget a markdown table and a PNG (mean valid / test error against the unfrozen stage's LR with
the good band, and every (rule, curve) pair's suggestions), a summary over problems, and one CSV
row per (problem, budget, seed, rule, curve)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finder_grid_analysis import (
    PAIRS,
    FinderRun,
    GridPoint,
    GridRun,
    best_and_band,
    bootstrap_ci,
    grid_points,
    half_step,
    interpolate,
    pair_rows,
    seed_curve,
    summarise,
)

DEFINITIONS = """\
Best LR: the grid LR (`stages.1.lr`, the unfrozen stage's head LR; the head stage at its own
range-test suggestion) with the lowest mean *valid* error over seeds. Good band: the grid LRs from
the lowest to the highest whose mean valid error is within one standard error of the best's; a
suggestion is in the band when its nearest grid LR (at most half a grid step away) is.
Suggestions are recomputed offline from each finder run's raw unfrozen-stage range-test losses,
smoothed by fastai's causal EMA (`ema`) and by lrlab's zero-lag EMA (`zero_lag`). Test error at a
suggestion is **interpolated** linearly in log10 LR between the two nearest grid points of the same
seed (clamped at the grid's ends: counted as `clamped`); regret = that minus the same seed's test
error at the best LR (negative: better than valid's choice). 95% CIs: percentile bootstrap over
seeds (per problem) or over problems, then seeds (summaries); with 3 seeds they are rough."""


@dataclass
class ProblemResult:
    """Everything measured for one problem and budget."""

    problem: str
    budget: str
    grid: list[GridRun]
    finder: list[FinderRun]
    points: list[GridPoint]
    best: GridPoint
    band: tuple[float, float]
    rows: list[dict[str, Any]]
    mismatches: int

    @property
    def slug(self) -> str:
        return f"{self.problem}-{self.budget.replace('+', 'p')}"


def analyse_problem(problem: str, budget: str, grid: list[GridRun], finder: list[FinderRun]) -> ProblemResult:
    points = grid_points(grid)
    best, band = best_and_band(points)
    rows, mismatches = pair_rows(problem, budget, grid, finder)
    return ProblemResult(problem, budget, grid, finder, points, best, band, rows, mismatches)


def _num(value: float, spec: str = ".4f") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _ci(mean: float, low: float, high: float) -> str:
    return "n/a" if math.isnan(mean) else f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]"


def compute_per_seed(result: ProblemResult) -> tuple[float, float, float]:
    """Per seed, in-run seconds: (range tests, finder-run training, the grid's trainings). Medians
    over trials, so a trial slowed by other work on the machine does not skew the ratio."""
    grid = len(result.points) * float(np.median([r.seconds for r in result.grid]))
    if not result.finder:
        return math.nan, math.nan, grid
    tests = float(np.median([r.range_test_seconds for r in result.finder]))
    return tests, float(np.median([r.train_seconds for r in result.finder])), grid


def _compute_line(result: ProblemResult) -> str:
    tests, train, grid = compute_per_seed(result)
    if math.isnan(tests):
        return f"Compute per seed: grid {grid:.0f} s; no finder runs."
    return (
        f"Compute per seed (in-run seconds, medians over trials): one finder run {tests + train:.0f} s "
        f"(range tests {tests:.0f} s + training {train:.0f} s); the grid's {len(result.points)} trainings "
        f"{grid:.0f} s: the finder run costs {(tests + train) / grid:.2f} of the grid."
    )


def _checks(result: ProblemResult) -> str:
    """Same head-stage LR in the finder and grid runs of each seed; and the finder runs, trained at
    their own rule's LR: actual test error against the interpolated one."""
    if not result.finder:
        return ""
    estimates = []
    for run in result.finder:
        log_lrs, errors = seed_curve(result.grid, run.seed, "test_error")
        estimates.append(interpolate(log_lrs, errors, run.lr)[0])
    actual = float(np.mean([r.test_error for r in result.finder]))
    same = sum(
        all(math.isclose(g.head_lr, run.head_lr, rel_tol=1e-9) for g in result.grid if g.seed == run.seed)
        for run in result.finder
    )
    return (
        f"Head stage: the finder run and the grid runs of a seed trained the head at the same LR "
        f"(so the range test saw the grid runs' model) for {same}/{len(result.finder)} seeds.\n\n"
        f"Check of the interpolation: the finder runs trained at their own suggestion "
        f"(LRs {', '.join(f'{r.lr:.2e}' for r in result.finder)}) reached a mean test error of "
        f"{actual:.4f}; interpolating the grid at those LRs gives {_num(float(np.nanmean(estimates)))}."
    )


def problem_markdown(result: ProblemResult) -> str:
    """The per-problem report: the grid, every pair's suggestions and scores, compute, checks."""
    seeds, best = sorted({r.seed for r in result.grid}), result.best
    lines = [
        f"## {result.problem}, {result.budget} epochs (freeze_epochs + epochs)",
        "",
        f"Grid: {len(result.points)} LRs x {len(seeds)} seeds ({len(result.grid)} trials). Best LR on valid: "
        f"**{best.lr:.3g}** (mean valid error {best.valid_mean:.4f} ± {best.valid_se:.4f} SE, "
        f"mean test error {best.test_mean:.4f}). Good band: {result.band[0]:.3g} .. {result.band[1]:.3g}.",
        "",
        "| stages.1.lr | seeds | valid error (mean ± SE) | test error (mean) | |",
        "|---|---|---|---|---|",
    ]
    for p in result.points:
        mark = (
            "best" if p.lr == result.best.lr else ("band" if result.band[0] <= p.lr <= result.band[1] else "")
        )
        lines.append(
            f"| {p.lr:.3g} | {p.n} | {p.valid_mean:.4f} ± {p.valid_se:.4f} | {p.test_mean:.4f} | {mark} |"
        )
    lines += [
        "",
        "| rule | curve | suggested LR per seed | decades from best (mean) | in band "
        "| test regret, mean [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for s in summarise(result.rows, by=()):
        mine = [r for r in result.rows if (r["rule"], r["curve"]) == (s["rule"], s["curve"])]
        lrs = ", ".join(f"{r['lr']:.2e}" + ("*" if r["clamped"] else "") for r in mine)
        decades = np.nanmean([r["decades"] for r in mine]) if s["n"] else math.nan
        lines.append(
            f"| {s['rule']} | {s['curve']} | {lrs} | {_num(float(decades), '+.2f')} | "
            f"{sum(r['in_band'] for r in mine)}/{len(mine)} | "
            f"{_ci(s['mean_regret'], s['ci_low'], s['ci_high'])} |"
        )
    lines += ["", "`*`: outside the grid, test error clamped to its end point.", "", _compute_line(result)]
    lines += ["", _checks(result)]
    if result.mismatches:
        lines += ["", f"WARNING: {result.mismatches} recomputed suggestion(s) differ from the runs' own."]
    return "\n".join(lines) + "\n"


def plot_problem(result: ProblemResult, path: Path) -> Path:
    """Mean valid (± SE) and test error against LR with the band and the best LR; below, each
    pair's suggestions per seed (filled: in the band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(
        2, 1, sharex=True, figsize=(8, 8), gridspec_kw={"height_ratios": [2, 1.7]}, constrained_layout=True
    )
    lrs = [p.lr for p in result.points]
    top.errorbar(
        lrs,
        [p.valid_mean for p in result.points],
        yerr=[p.valid_se for p in result.points],
        marker="o",
        capsize=3,
        label="valid error (mean ± SE)",
    )
    top.plot(lrs, [p.test_mean for p in result.points], marker="s", linestyle="--", label="test error (mean)")
    widen = 10 ** half_step(lrs)
    for ax in (top, bottom):
        ax.axvspan(result.band[0] / widen, result.band[1] * widen, color="tab:green", alpha=0.15)
        ax.axvline(result.best.lr, color="tab:green", linewidth=1)
        ax.set_xscale("log")
    top.set_ylabel("error rate")
    top.legend(loc="best", fontsize=8)
    top.set_title(f"{result.problem}, {result.budget} epochs: error vs unfrozen-stage LR (band shaded)")
    for i, (rule, curve) in enumerate(PAIRS):
        mine = [r for r in result.rows if (r["rule"], r["curve"]) == (rule, curve) and math.isfinite(r["lr"])]
        for r in mine:
            bottom.scatter(
                r["lr"], i, s=30, color=f"C{i % 10}", facecolors=f"C{i % 10}" if r["in_band"] else "none"
            )
    bottom.set_yticks(range(len(PAIRS)), [f"{rule} / {curve}" for rule, curve in PAIRS], fontsize=8)
    bottom.set_ylim(-0.5, len(PAIRS) - 0.5)
    bottom.set_xlabel("stages.1.lr (head LR of the unfrozen stage)")
    bottom.set_title("suggestions per seed (filled: in the band)", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary_markdown(
    results: Sequence[ProblemResult], rows: Sequence[dict[str, Any]], extra: str = ""
) -> str:
    """The summary over problems, per budget and over all budgets, and links to each problem."""
    lines = [
        "# Finder vs grid: which range-test rule and curve lands closest to the best LR",
        "",
        DEFINITIONS,
    ]
    head = [
        "| rule | curve | mean test regret [95% CI] | in band | mean abs decades | n (failed, clamped) |",
        "|---|---|---|---|---|---|",
    ]
    for budget in dict.fromkeys(r.budget for r in results):
        mine = [r for r in rows if r["budget"] == budget]
        problems = sorted({r["problem"] for r in mine})
        lines += [
            "",
            f"## Budget {budget} epochs, over {len(problems)} problems ({', '.join(problems)})",
            "",
            *head,
        ]
        lines += [_summary_line(s) for s in summarise(mine)]
    if len({r.budget for r in results}) > 1:
        lines += ["", "## All budgets (problem x budget as the unit)", "", *head]
        lines += [_summary_line(s) for s in summarise(rows, by=())]
    lines += ["", "## Compute per seed (range tests + one training, against the grid)", ""]
    lines += [
        "| problem | budget | finder run (s) | grid (s) | fraction of the grid |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        tests, train, grid = compute_per_seed(r)
        lines.append(
            f"| {r.problem} | {r.budget} | {_num(tests + train, '.0f')} | {grid:.0f} | "
            f"{_num((tests + train) / grid, '.3f')} |"
        )
    lines += ["", extra] if extra else []
    lines += ["", "## Per problem", ""]
    lines += [f"- [{r.problem}, {r.budget}]({r.slug}.md) ([plot]({r.slug}.png))" for r in results]
    return "\n".join(lines) + "\n"


def _summary_line(s: dict[str, Any]) -> str:
    return (
        f"| {s['rule']} | {s['curve']} | {_ci(s['mean_regret'], s['ci_low'], s['ci_high'])} | "
        f"{_num(s['in_band'], '.0%')} | {_num(s['abs_decades'], '.2f')} | "
        f"{s['n']} ({s['failed']}, {s['clamped']}) |"
    )


ROW_FIELDS = [
    "problem",
    "budget",
    "seed",
    "rule",
    "curve",
    "lr",
    "decades",
    "in_band",
    "test_error",
    "test_error_best",
    "regret",
    "valid_error",
    "valid_regret",
    "clamped",
    "flag",
    "best_lr",
    "band_lo",
    "band_hi",
]


def write_rows_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    with Path(path).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=ROW_FIELDS)
        writer.writeheader()
        writer.writerows({k: row.get(k) for k in ROW_FIELDS} for row in rows)
    return Path(path)


def write_report(results: Sequence[ProblemResult], out_dir: Path, extra: str = "") -> list[Path]:
    """Write `<problem>-<budget>.md/.png`, `summary.md` (with `extra` markdown), `summary.csv` (the
    all-budgets summary) and `rows.csv` into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for result in results:
        md = out_dir / f"{result.slug}.md"
        md.write_text(f"{DEFINITIONS}\n\n{problem_markdown(result)}")
        paths += [md, plot_problem(result, out_dir / f"{result.slug}.png")]
    rows = [row for result in results for row in result.rows]
    summary = out_dir / "summary.md"
    summary.write_text(summary_markdown(results, rows, extra))
    table = out_dir / "summary.csv"
    with table.open("w", newline="") as handle:
        overall = summarise(rows, by=())
        writer = csv.DictWriter(handle, fieldnames=list(overall[0]))
        writer.writeheader()
        writer.writerows(overall)
    return [summary, table, write_rows_csv(out_dir / "rows.csv", rows), *paths]


__all__ = ["ProblemResult", "analyse_problem", "bootstrap_ci", "write_report"]
