"""The analysis half of the finder-vs-grid benchmark (`finder_vs_grid.py`): read the grid and
finder studies back from Optuna, recompute every (rule, curve) pair's suggestion on each finder
run's raw range-test losses, and score each suggestion against the grid's best LR.

Definitions (also printed with every report):
- grid point: mean valid error over seeds at one `stages.1.lr`, with its standard error;
- best LR: the grid LR with the lowest mean *valid* error; good band: the LRs from the lowest to
  the highest grid LR whose mean valid error is within one standard error of the best's; a
  suggestion is in the band when its nearest grid LR (at most half a grid step away) is;
- a suggestion's test error: linear interpolation in log10 LR between the two nearest grid points
  of the same seed (clamped at the grid's ends, and flagged); regret: that minus the same seed's
  test error at the best LR (negative: the suggestion tested better than valid's choice);
- 95% CIs: percentile bootstrap over seeds, and over problems, then seeds, in summaries.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lrlab.finder.config import FinderConfig
from lrlab.finder.range_test import _DivergenceWatch, smoothed_curves
from lrlab.finder.rules import CURVES, RULES, edge_flag, suggest_on_curves

PAIRS: list[tuple[str, str]] = [(rule, curve) for rule in RULES for curve in CURVES]
"""Every (rule, curve) pair scored: each registered rule on fastai's causal EMA and on zero-lag."""


@dataclass(frozen=True)
class GridRun:
    """One grid trial: the unfrozen stage's LR, the seed, the final valid and test errors, and its
    compute (training plus the head stage's range test, seconds)."""

    lr: float
    seed: int
    valid_error: float
    test_error: float
    seconds: float
    head_lr: float = math.nan  # the head stage's LR (its own range test's suggestion)


@dataclass(frozen=True)
class FinderRun:
    """One finder trial (`stages.1.lr=find`): its unfrozen-stage range-test curve, the suggestions
    the run itself recorded (each rule on its calibrated curve), the LR it trained with and how it did."""

    seed: int
    curve: Path
    recorded: dict[str, float]
    lr: float
    valid_error: float
    test_error: float
    range_test_seconds: float
    train_seconds: float
    config: FinderConfig
    head_lr: float = math.nan


@dataclass(frozen=True)
class GridPoint:
    lr: float
    n: int
    valid_mean: float
    valid_se: float
    test_mean: float


def load_trials(storage: str, study_name: str) -> list[Any]:
    """The COMPLETE trials of an Optuna study."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=storage)
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def load_grid(storage: str, study_name: str) -> list[GridRun]:
    """The complete trials of a grid study (params `stages.1.lr`, `seed`)."""
    return [
        GridRun(
            lr=float(t.params["stages.1.lr"]),
            seed=int(t.params["seed"]),
            valid_error=float(t.user_attrs["metrics"]["error_rate"]),
            test_error=float(t.user_attrs["test"]["error_rate"]),
            seconds=float(t.user_attrs.get("train_seconds") or 0)
            + float(t.user_attrs.get("finder_seconds") or 0),
            head_lr=_stage_lr(t, 0),
        )
        for t in load_trials(storage, study_name)
    ]


def _stage_lr(trial: Any, index: int) -> float:
    return next(
        (float(s["lr"]) for s in trial.user_attrs.get("stages") or [] if s["index"] == index), math.nan
    )


def _run_finder_config(output_dir: Path) -> FinderConfig:
    """The run's own `lr_finder` settings (its `.hydra/config.yaml`), else the defaults."""
    path = output_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        return FinderConfig()
    from omegaconf import OmegaConf

    return FinderConfig(**OmegaConf.to_container(OmegaConf.load(path).lr_finder, resolve=True))


def load_finder(storage: str, study_name: str, stage: int = 1) -> list[FinderRun]:
    """The complete trials of a finder study, each with stage `stage`'s range test."""
    runs = []
    for t in load_trials(storage, study_name):
        entry = next(s for s in t.user_attrs["stages"] if s["index"] == stage)
        runs.append(
            FinderRun(
                seed=int(t.params["seed"]),
                curve=Path(entry["curve"]),
                recorded={k: float(v) for k, v in entry["suggestions"].items()},
                lr=float(entry["lr"]),
                valid_error=float(t.user_attrs["metrics"]["error_rate"]),
                test_error=float(t.user_attrs["test"]["error_rate"]),
                range_test_seconds=float(t.user_attrs.get("finder_seconds") or 0),
                train_seconds=float(t.user_attrs.get("train_seconds") or 0),
                config=_run_finder_config(Path(t.user_attrs["output_dir"])),
                head_lr=_stage_lr(t, 0),
            )
        )
    return sorted(runs, key=lambda r: r.seed)


def read_curve(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(lrs, raw losses) of a range-test CSV (columns step, lr, loss, smoothed_loss)."""
    with Path(path).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return np.array([float(r["lr"]) for r in rows]), np.array([float(r["loss"]) for r in rows])


def run_curves(losses: np.ndarray, config: FinderConfig) -> dict[str, np.ndarray]:
    """Raw range-test losses smoothed exactly as the range test smooths them (`ema`, `zero_lag`;
    the zero-lag curve leaves out a last point that tripped the divergence test)."""
    stopped = _DivergenceWatch(config).extend(list(losses), []) != "completed"
    return smoothed_curves(np.asarray(losses, dtype=np.float64), stopped, config)


def curve_suggestions(
    lrs: np.ndarray, losses: np.ndarray, config: FinderConfig | None = None
) -> dict[tuple[str, str], tuple[float, str | None]]:
    """Every (rule, curve) pair's suggestion on raw range-test losses (smoothed by `run_curves`),
    with its edge flag (ramp start / diverged tail) or None."""
    curves = run_curves(losses, config or FinderConfig())
    out = {}
    for curve in CURVES:
        for rule, lr in suggest_on_curves(lrs, curves, rule_curve=curve).items():
            out[(rule, curve)] = (lr, edge_flag(lrs, curves[curve], lr) if math.isfinite(lr) else None)
    return out


def grid_points(runs: Iterable[GridRun]) -> list[GridPoint]:
    """Per grid LR: seeds, mean valid error and its standard error (0 with one seed), mean test error."""
    by_lr: dict[float, list[GridRun]] = {}
    for run in runs:
        by_lr.setdefault(run.lr, []).append(run)
    points = []
    for lr in sorted(by_lr):
        valid = np.array([r.valid_error for r in by_lr[lr]])
        se = float(valid.std(ddof=1) / math.sqrt(len(valid))) if len(valid) > 1 else 0.0
        test = float(np.mean([r.test_error for r in by_lr[lr]]))
        points.append(GridPoint(lr, len(valid), float(valid.mean()), se, test))
    return points


def best_and_band(points: Sequence[GridPoint]) -> tuple[GridPoint, tuple[float, float]]:
    """The grid point with the lowest mean valid error (the lower LR on a tie) and the good band:
    from the lowest to the highest LR whose mean valid error is within one SE of the best's."""
    best = min(points, key=lambda p: (p.valid_mean, p.lr))
    inside = [p.lr for p in points if p.valid_mean <= best.valid_mean + best.valid_se]
    return best, (min(inside), max(inside))


def seed_curve(
    runs: Iterable[GridRun], seed: int, metric: str = "test_error"
) -> tuple[np.ndarray, np.ndarray]:
    """(log10 LRs ascending, errors) of one seed's grid runs."""
    mine = sorted((r for r in runs if r.seed == seed), key=lambda r: r.lr)
    return np.log10([r.lr for r in mine]), np.array([getattr(r, metric) for r in mine])


def interpolate(log_lrs: np.ndarray, errors: np.ndarray, lr: float) -> tuple[float, bool]:
    """The error at `lr`, linear in log10 LR between the two nearest grid points; clamped to the
    end points outside the grid (second value True then). NaN for a NaN LR or an empty grid."""
    if not len(log_lrs) or not (math.isfinite(lr) and lr > 0):
        return math.nan, False
    x = math.log10(lr)
    clamped = x < log_lrs[0] - 1e-12 or x > log_lrs[-1] + 1e-12
    return float(np.interp(x, log_lrs, errors)), bool(clamped)


def half_step(grid_lrs: Sequence[float]) -> float:
    """Half the smallest spacing of the grid in decades (a quarter decade for a one-point grid)."""
    logs = np.unique(np.log10(np.asarray(grid_lrs, dtype=np.float64)))
    return float(np.diff(logs).min() / 2) if len(logs) > 1 else 0.25


def in_band(lr: float, grid_lrs: Sequence[float], band: tuple[float, float]) -> bool:
    """Whether `lr` rounds to a band LR: its nearest grid LR (in log10, at most half a grid step
    away, so not far beyond the grid's ends) lies in the band."""
    if not (math.isfinite(lr) and lr > 0):
        return False
    logs = np.log10(np.unique(np.asarray(grid_lrs, dtype=np.float64)))
    distance = np.abs(logs - math.log10(lr))
    nearest = float(10 ** logs[int(np.argmin(distance))])
    close = distance.min() <= half_step(grid_lrs) + 1e-9
    return bool(close and band[0] * (1 - 1e-9) <= nearest <= band[1] * (1 + 1e-9))


def score_suggestion(
    grid: Sequence[GridRun], seed: int, lr: float, best: GridPoint, band: tuple[float, float]
) -> dict[str, Any]:
    """One suggestion against the grid: decades from the best LR, in the band or not, and its
    interpolated test and valid errors and regrets against the same seed at the best LR."""
    test_lrs, test = seed_curve(grid, seed, "test_error")
    valid_lrs, valid = seed_curve(grid, seed, "valid_error")
    test_at, clamped = interpolate(test_lrs, test, lr)
    valid_at, _ = interpolate(valid_lrs, valid, lr)
    test_best, _ = interpolate(test_lrs, test, best.lr)
    valid_best, _ = interpolate(valid_lrs, valid, best.lr)
    finite = math.isfinite(lr) and lr > 0
    return {
        "lr": lr,
        "decades": math.log10(lr) - math.log10(best.lr) if finite else math.nan,
        "in_band": in_band(lr, [r.lr for r in grid], band),
        "test_error": test_at,
        "test_error_best": test_best,
        "regret": test_at - test_best,
        "valid_error": valid_at,
        "valid_regret": valid_at - valid_best,
        "clamped": clamped,
    }


def pair_rows(
    problem: str, budget: str, grid: Sequence[GridRun], finder: Sequence[FinderRun]
) -> tuple[list[dict[str, Any]], int]:
    """One row per (finder seed, rule, curve), and how many recomputed calibrated suggestions
    differ from what the runs recorded (0 unless the analysis and lrlab disagree)."""
    best, band = best_and_band(grid_points(grid))
    rows, mismatches = [], 0
    for run in finder:
        lrs, losses = read_curve(run.curve)
        suggestions = curve_suggestions(lrs, losses, run.config)
        for rule, recorded in run.recorded.items():
            if rule in RULES:
                mine = suggestions[(rule, RULES[rule].curve)][0]
                mismatches += not (
                    math.isclose(mine, recorded, rel_tol=1e-9) or (math.isnan(mine) and math.isnan(recorded))
                )
        for rule, curve in PAIRS:
            lr, flag = suggestions[(rule, curve)]
            row = {"problem": problem, "budget": budget, "seed": run.seed, "rule": rule, "curve": curve}
            row.update(score_suggestion(grid, run.seed, lr, best, band))
            row.update({"flag": flag or "", "best_lr": best.lr, "band_lo": band[0], "band_hi": band[1]})
            rows.append(row)
    return rows, mismatches


def bootstrap_ci(
    groups: Sequence[Sequence[float]], n_boot: int = 4000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high): the mean of the group means and its percentile bootstrap interval,
    resampling groups (problems) with replacement, then values (seeds) within each chosen group.
    With one group this is the plain bootstrap over its values. NaNs are dropped; all NaN: NaNs."""
    clean = [np.asarray([v for v in g if math.isfinite(v)], dtype=np.float64) for g in groups]
    clean = [g for g in clean if len(g)]
    if not clean:
        return math.nan, math.nan, math.nan
    n_max = max(len(g) for g in clean)
    values = np.full((len(clean), n_max), np.nan)
    sizes = np.array([len(g) for g in clean])
    for i, g in enumerate(clean):
        values[i, : len(g)] = g
    rng = np.random.default_rng(seed)
    chosen = rng.integers(0, len(clean), size=(n_boot, len(clean)))
    n = sizes[chosen]
    picks = np.floor(rng.random((n_boot, len(clean), n_max)) * n[..., None]).astype(np.int64)
    sample = values[chosen[..., None], picks]
    mask = np.arange(n_max)[None, None, :] < n[..., None]
    group_means = np.where(mask, sample, 0.0).sum(axis=2) / n
    stats = group_means.mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(np.mean([g.mean() for g in clean])), float(low), float(high)


def summarise(rows: Sequence[dict[str, Any]], by: Sequence[str] = ("budget",)) -> list[dict[str, Any]]:
    """Per `by` value(s) and (rule, curve) pair, over problems and seeds: the mean test regret
    (mean of the problems' means) with its bootstrap CI over problems then seeds, the fraction of
    suggestions in the good band, the mean |decades| from the best LR, and how many suggestions
    failed (NaN) or fell outside the grid (clamped). Sorted by key, then mean regret."""
    groups: dict[tuple, dict[str, list[dict[str, Any]]]] = {}
    for row in rows:
        key = (*(row[k] for k in by), row["rule"], row["curve"])
        groups.setdefault(key, {}).setdefault(f"{row['problem']} {row['budget']}", []).append(row)
    out = []
    for key, per_problem in groups.items():
        flat = [r for rs in per_problem.values() for r in rs]
        ok = [r for r in flat if math.isfinite(r["regret"])]
        mean, low, high = bootstrap_ci([[r["regret"] for r in rs] for rs in per_problem.values()])
        out.append(
            {
                **dict(zip((*by, "rule", "curve"), key)),
                "problems": len(per_problem),
                "n": len(ok),
                "failed": len(flat) - len(ok),
                "clamped": sum(bool(r["clamped"]) for r in ok),
                "mean_regret": mean,
                "ci_low": low,
                "ci_high": high,
                "in_band": float(np.mean([r["in_band"] for r in ok])) if ok else math.nan,
                "abs_decades": float(np.mean([abs(r["decades"]) for r in ok])) if ok else math.nan,
            }
        )
    return sorted(out, key=lambda s: (*(str(s[k]) for k in by), _nan_last(s["mean_regret"])))


def _nan_last(value: float) -> float:
    return math.inf if math.isnan(value) else value
