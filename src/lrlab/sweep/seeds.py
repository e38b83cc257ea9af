"""Across seeds: a sweep's complete trials grouped by every param but `seed` (a "recipe"), with the
number of trials, mean and sample standard deviation of the valid `error_rate` and of every test
metric per recipe. Pure functions on Optuna trials, plus the report's markdown section and
`seeds.csv` (one row per recipe).

Finder trials (`source=lr_finder:<rule>`) are left out: each rule runs once, with the config's seed,
and has its own table in the report.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from lrlab.sweep.analysis import is_number
from lrlab.sweep.baselines import finder_rule
from lrlab.sweep.markdown import param_cell, table_head, table_row
from lrlab.sweep.study import SEARCH_SOURCE, SOURCE

SEED = "seed"
SEEDS_FILE = "seeds.csv"
VALID_METRIC = "error_rate"
TEST_PREFIX = "test/"
HEADLINE = (VALID_METRIC, "test/accuracy", "test/balanced_accuracy", "test/error_rate", "test/loss")
"""The metrics first in every table and file, in this order; the rest follow sorted."""
RECALL_PREFIX = "test/recall/"


@dataclass(frozen=True)
class Stat:
    """One metric over a recipe's seeds: how many values, their mean and sample std (NaN below 2)."""

    n: int
    mean: float
    std: float

    def text(self, spec: str = ".4f") -> str:
        """`mean ± std`; the std is `-` when there is one value, the whole `n/a` with none."""
        if self.n == 0 or math.isnan(self.mean):
            return "n/a"
        std = "-" if math.isnan(self.std) else format(self.std, spec)
        return f"{self.mean:{spec}} ± {std}"


@dataclass(frozen=True)
class Recipe:
    """The trials that share every param but `seed`."""

    params: dict[str, Any]
    seeds: list[Any]
    trials: list[int]
    stats: dict[str, Stat]

    @property
    def n(self) -> int:
        return len(self.trials)

    def stat(self, metric: str) -> Stat:
        return self.stats.get(metric, Stat(0, math.nan, math.nan))


def summarize(values: Sequence[float]) -> Stat:
    """n, mean and sample standard deviation (n - 1 in the denominator; NaN below two values)."""
    n = len(values)
    if n == 0:
        return Stat(0, math.nan, math.nan)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return Stat(n, mean, std)


def trial_metrics(trial: FrozenTrial) -> dict[str, float]:
    """The trial's valid `error_rate` and its test metrics as `test/<name>` (the `test` user attr, with
    or without the prefix; missing or None without a test split). Non-numbers are left out."""
    out: dict[str, float] = {}
    error = (trial.user_attrs.get("metrics") or {}).get(VALID_METRIC)
    if is_number(error):
        out[VALID_METRIC] = float(error)
    for name, value in (trial.user_attrs.get("test") or {}).items():
        if is_number(value):
            out[name if name.startswith(TEST_PREFIX) else TEST_PREFIX + name] = float(value)
    return out


def _grouped(trial: FrozenTrial) -> bool:
    """Complete trials that are not finder baselines."""
    source = str(trial.user_attrs.get(SOURCE, SEARCH_SOURCE))
    return trial.state == TrialState.COMPLETE and finder_rule(source) is None


def seed_values(trials: Iterable[FrozenTrial]) -> list[Any]:
    """The distinct seeds the trials' params hold (any state), sorted."""
    return sorted({t.params[SEED] for t in trials if SEED in t.params}, key=lambda v: (str(type(v)), v))


def has_seed_grid(trials: Iterable[FrozenTrial]) -> bool:
    """Whether `seed` is a param with at least two values: the report's "Across seeds" condition."""
    return len(seed_values(trials)) >= 2


def aggregate(trials: Iterable[FrozenTrial]) -> list[Recipe]:
    """Group the complete, non-finder trials by every param but `seed`; per recipe the seeds (sorted)
    with their trial numbers, and each metric's Stat. Best mean valid `error_rate` first (ties: the
    recipe whose first trial came first)."""
    groups: dict[tuple[tuple[str, Any], ...], list[FrozenTrial]] = {}
    for trial in sorted((t for t in trials if _grouped(t)), key=lambda t: t.number):
        key = tuple(sorted((k, v) for k, v in trial.params.items() if k != SEED))
        groups.setdefault(key, []).append(trial)
    recipes = []
    for key, members in groups.items():
        members.sort(key=lambda t: (str(type(t.params.get(SEED))), t.params.get(SEED), t.number))
        values: dict[str, list[float]] = {}
        for trial in members:
            for name, value in trial_metrics(trial).items():
                values.setdefault(name, []).append(value)
        recipes.append(
            Recipe(
                params=dict(key),
                seeds=[t.params.get(SEED) for t in members],
                trials=[t.number for t in members],
                stats={name: summarize(vs) for name, vs in values.items()},
            )
        )

    def order(recipe: Recipe) -> tuple[bool, float, int]:
        mean = recipe.stat(VALID_METRIC).mean
        return (math.isnan(mean), 0.0 if math.isnan(mean) else mean, min(recipe.trials))

    return sorted(recipes, key=order)


def metric_names(recipes: Iterable[Recipe]) -> list[str]:
    """Every metric any recipe has: the headline ones in `HEADLINE` order, then the rest sorted."""
    present = {name for r in recipes for name in r.stats}
    return [m for m in HEADLINE if m in present] + sorted(present - set(HEADLINE))


def param_names(recipes: Iterable[Recipe]) -> list[str]:
    """Every param any recipe sets, sorted: the seed table's recipe columns."""
    return sorted({k for r in recipes for k in r.params})


def _table(recipes: Sequence[Recipe], params: list[str], metrics: list[str]) -> list[str]:
    """One row per recipe: its params (or `all` when seed is the only param), n, seeds, and each
    metric's `mean ± std` (with its own n where some seeds lack it)."""
    columns = [*(params or ["recipe"]), "n", "seeds", *metrics]
    lines = table_head(columns)
    for r in recipes:
        cells = [param_cell(r.params.get(k)) for k in params] or ["all"]
        cells += [str(r.n), ", ".join(str(s) for s in r.seeds)]
        for m in metrics:
            stat = r.stat(m)
            cells.append(stat.text() + (f" (n={stat.n})" if 0 < stat.n < r.n else ""))
        lines.append(table_row(cells, len(columns)))
    return lines


def section(recipes: Sequence[Recipe], seeds: Sequence[Any], fixed: Sequence[str] = ()) -> list[str]:
    """The report's "Across seeds" section: headline metrics, then per-class test recall if any."""
    params, metrics = param_names(recipes), metric_names(recipes)
    recall = [m for m in metrics if m.startswith(RECALL_PREFIX)]
    headline = [m for m in metrics if m not in recall]
    fixed_text = f" Fixed overrides: `{' '.join(fixed)}`." if fixed else ""
    lines = [
        "## Across seeds",
        "",
        f"Complete trials grouped by every param but `seed` (seeds {', '.join(map(str, seeds))}), best "
        "mean valid `error_rate` first: mean ± sample std over the seeds (`-` for a single seed). "
        "`error_rate` is the final error on valid; `test/*` are on the test split, evaluated once per "
        f"trial and never optimised. Finder trials are not grouped. Also in `{SEEDS_FILE}`." + fixed_text,
        "",
    ]
    if not recipes:
        return [*lines, "(no complete trials yet)", ""]
    lines += [*_table(recipes, params, headline), ""]
    if recall:
        lines += ["Test recall per class:", "", *_table(recipes, params, recall), ""]
    return lines


def trials_table(searched: Sequence[FrozenTrial], metric: str, direction: str, limit: int = 20) -> list[str]:
    """The report's trials of a seed grid, best first (up to `limit`): every param, the objective,
    valid_loss and test/accuracy."""
    params = sorted({k for t in searched for k in t.params})
    columns = ["trial", *params, metric, "valid_loss", "test/accuracy"]
    lines = ["## Trials, best first", "", *table_head(columns)]
    for t in sorted(searched, key=lambda t: t.values[0], reverse=direction == "maximize")[:limit]:
        loss = (t.user_attrs.get("metrics") or {}).get("valid_loss")
        numbers = [t.values[0], loss, trial_metrics(t).get("test/accuracy")]
        cells = [str(t.number), *(param_cell(t.params.get(k)) for k in params)]
        cells += [format(v, ".4f") if is_number(v) else "n/a" for v in numbers]
        lines.append(table_row(cells, len(columns)))
    if len(searched) > limit:
        lines.append(table_row([f"({len(searched) - limit} more)"], len(columns)))
    return [*lines, ""]


def csv_rows(recipes: Sequence[Recipe]) -> tuple[list[str], list[dict[str, Any]]]:
    """`seeds.csv`'s columns and rows: the params, n, seeds and trial numbers (space-separated),
    then `<metric>_mean` and `<metric>_std` for each metric (empty where a recipe lacks it)."""
    params, metrics = param_names(recipes), metric_names(recipes)
    columns = [*params, "n", "seeds", "trials"]
    columns += [f"{m}_{s}" for m in metrics for s in ("mean", "std")]
    rows = []
    for r in recipes:
        row: dict[str, Any] = {k: r.params.get(k, "") for k in params}
        row.update(n=r.n, seeds=" ".join(map(str, r.seeds)), trials=" ".join(map(str, r.trials)))
        for m in metrics:
            stat = r.stat(m)
            row[f"{m}_mean"] = stat.mean if stat.n else ""
            row[f"{m}_std"] = stat.std if stat.n else ""
        rows.append(row)
    return columns, rows


def write_csv(recipes: Sequence[Recipe], path: Path) -> Path:
    """Write `seeds.csv` (see `csv_rows`); returns its path."""
    columns, rows = csv_rows(recipes)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def recipes_of(trials: Sequence[FrozenTrial]) -> list[Recipe] | None:
    """The recipes of a study's trials when `seed` is a param with two values or more, else None."""
    return aggregate(trials) if has_seed_grid(trials) else None
