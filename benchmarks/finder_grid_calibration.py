"""Calibration of lrlab's one-parameter rules (`descent`'s fraction and `bottom`'s factor on the
zero-lag curve, the default `lrlab` rule's scale on fastai's EMA curve) for the finder-vs-grid
benchmark, leave-one-problem-out: the parameter scored on a problem is the one with the lowest
mean *valid* regret on the other problems, never chosen on the problem itself.

A "problem" here is a dataset: ELPV 4-class and 2-class share their images, so both are left out
together. The parameter over all problems (the library's default) is reported beside the folds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from finder_grid_analysis import (
    FinderRun,
    GridRun,
    best_and_band,
    grid_points,
    read_curve,
    run_curves,
    score_suggestion,
)
from lrlab.finder.rules import suggest_bottom, suggest_descent, suggest_lrlab, trim


@dataclass(frozen=True)
class Family:
    """A rule with one free parameter: `make(value)` is the rule at that value, on `curve`."""

    rule: str
    parameter: str
    make: Callable[[float], Callable[[np.ndarray, np.ndarray], float]]
    candidates: tuple[float, ...]
    curve: str = "zero_lag"


FAMILIES = (
    Family(
        "descent",
        "fraction",
        lambda v: partial(suggest_descent, fraction=v),
        (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98),
    ),
    Family("bottom", "factor", lambda v: partial(suggest_bottom, factor=v), (1, 2, 3, 5, 10, 20, 30, 100)),
    Family(
        "lrlab", "scale", lambda v: partial(suggest_lrlab, scale=v), (1, 1.5, 2, 2.5, 3, 4, 5, 7, 10), "ema"
    ),
)


def dataset(problem: str) -> str:
    """The dataset a problem draws its images from (`elpv4`, `elpv2` -> `elpv`)."""
    return "elpv" if problem.startswith("elpv") else problem


def _curve(run: FinderRun, curve: str) -> tuple[np.ndarray, np.ndarray]:
    lrs, losses = read_curve(run.curve)
    return trim(lrs, run_curves(losses, run.config)[curve])


def candidate_rows(
    family: Family, problem: str, budget: str, grid: Sequence[GridRun], finder: Sequence[FinderRun]
) -> list[dict[str, Any]]:
    """One scored row per (finder seed, candidate value) of `family` on one problem and budget."""
    best, band = best_and_band(grid_points(grid))
    rows = []
    for run in finder:
        lrs, losses = _curve(run, family.curve)
        for value in family.candidates:
            try:
                lr = family.make(value)(lrs, losses)
            except ValueError:
                lr = math.nan
            row = {"problem": problem, "budget": budget, "seed": run.seed, "value": value}
            rows.append({**row, **score_suggestion(grid, run.seed, lr, best, band)})
    return rows


def _mean_regret(rows: Sequence[dict[str, Any]], value: float, key: str = "valid_regret") -> float:
    """Mean over (problem, budget) of the mean `key` regret at `value`; a failed (NaN) suggestion
    counts as a regret of 1 (the worst) for valid, is left out for test."""
    per: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        if r["value"] == value and (math.isfinite(r[key]) or key == "valid_regret"):
            per.setdefault((r["problem"], r["budget"]), []).append(r[key] if math.isfinite(r[key]) else 1.0)
    return float(np.mean([np.mean(v) for v in per.values()])) if per else math.nan


def choose(rows: Sequence[dict[str, Any]], candidates: Sequence[float], default: float) -> float:
    """The candidate with the lowest mean valid regret over `rows` (ties: the one nearest `default`
    in log scale)."""
    scored = [(_mean_regret(rows, v), abs(math.log(v / default)), v) for v in candidates]
    return min(s for s in scored if math.isfinite(s[0]))[2]


def leave_one_out(family: Family, rows: Sequence[dict[str, Any]], default: float) -> dict[str, Any]:
    """Per left-out dataset the value chosen on the others, the scored rows of the left-out
    problems at that value (rule name `<rule>_lopo`), and the value chosen on every problem."""
    held_rows, folds = [], {}
    for left_out in sorted({dataset(r["problem"]) for r in rows}):
        others = [r for r in rows if dataset(r["problem"]) != left_out]
        if not others:
            continue
        value = choose(others, family.candidates, default)
        folds[left_out] = value
        for r in rows:
            if dataset(r["problem"]) == left_out and r["value"] == value:
                held_rows.append({**r, "rule": f"{family.rule}_lopo", "curve": family.curve, "flag": ""})
    return {"folds": folds, "rows": held_rows, "all": choose(rows, family.candidates, default)}


def calibration_table(family: Family, rows: Sequence[dict[str, Any]], result: dict[str, Any]) -> str:
    """Markdown: each candidate's mean valid and test regret per dataset, and the folds' choices."""
    datasets = sorted({dataset(r["problem"]) for r in rows})
    head = f"| {family.parameter} | " + " | ".join(f"{d} valid / test regret" for d in datasets) + " |"
    lines = [head, "|---|" + "---|" * len(datasets)]
    for value in family.candidates:
        cells = []
        for d in datasets:
            mine = [r for r in rows if dataset(r["problem"]) == d]
            test = _mean_regret(mine, value, "regret")
            cells.append(f"{_mean_regret(mine, value):+.4f} / {test:+.4f}")
        lines.append(f"| {value:g} | " + " | ".join(cells) + " |")
    folds = ", ".join(f"{d} left out: {v:g}" for d, v in result["folds"].items())
    lines += ["", f"Chosen leaving each dataset out (on valid regret): {folds}; on all: {result['all']:g}."]
    return "\n".join(lines)


def calibrate(results: Sequence[Any]) -> tuple[str, dict[str, float]]:
    """Calibrate every family on the benchmark's `ProblemResult`s: add each problem's held-out rows
    (`<rule>_lopo`) to its `rows`, and return a markdown section and the all-datasets values."""
    from lrlab.finder import rules

    defaults = {
        "descent": rules.DESCENT_FRACTION,
        "bottom": rules.BOTTOM_FACTOR,
        "lrlab": rules.SUGGESTION_SCALE,
    }
    sections, chosen = (
        ["## Calibration of lrlab's one-parameter rules, leave one dataset out", "", __doc__],
        {},
    )
    for family in FAMILIES:
        rows = [row for r in results for row in candidate_rows(family, r.problem, r.budget, r.grid, r.finder)]
        found = leave_one_out(family, rows, defaults[family.rule])
        for r in results:
            r.rows += [h for h in found["rows"] if (h["problem"], h["budget"]) == (r.problem, r.budget)]
        chosen[family.rule] = found["all"]
        sections += [
            "",
            f"### `{family.rule}`: {family.parameter} (library default now {defaults[family.rule]:g})",
            "",
            calibration_table(family, rows, found),
        ]
    return "\n".join(sections) + "\n", chosen
