"""Reading the finder benchmark v2's studies back (`finder_vs_grid.py`) and scoring each
contender against the grid.

Definitions (printed with every report):
- grid point: one LR of the grid or its refinement, its seeds' valid and test errors;
- grid best: the grid LR with the lowest mean *valid* error (the lower LR on a tie); its seed-SE is
  the standard error over seeds of the test error there;
- a contender's regret in a (configuration, seed) case: its test error minus the same seed's test
  error at the grid best; the case is good when the regret is at most max(0.5 pt, 1 seed-SE);
- a diverged run (loss NaN) scores the error of guessing, 1 - 1/classes;
- compute: training-step equivalents (range-test steps, raced epochs and training epochs, in
  epochs) relative to the 9 half-decade grid runs (9 x the stages' epochs); wall-clock seconds
  relative to the same seed's 9 grid runs are reported beside it (they vary with the machine's load).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CLASSES = {"digits": 10, "mnist5k": 10, "elpv4": 4, "elpv2": 2}


@dataclass(frozen=True)
class BenchRun:
    """One finished trial: the graded stage's LR, the seed, final valid and test error rates, and
    its compute (wall-clock seconds of the trial: training, range tests, races, evaluation)."""

    lr: float
    seed: int
    valid_error: float
    test_error: float
    seconds: float
    diverged: bool = False
    suggestions: dict[str, float] | None = None  # the graded stage's range-test suggestions
    extra_epochs: float = 0.0  # range tests (steps / steps per epoch) and races' extra epochs


def _stage(trial: Any, index: int) -> dict[str, Any]:
    return next((s for s in trial.user_attrs.get("stages") or [] if s.get("index") == index), {})


def load_runs(storage: str, study: str, stage: int, classes: int = 10) -> list[BenchRun]:
    """The COMPLETE and PRUNED (diverged) trials of a study, sorted by LR then seed."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    found = optuna.load_study(study_name=study, storage=storage)
    runs = []
    for t in found.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        entry, key = _stage(t, stage), f"stages.{stage}.lr"
        lr = float(entry.get("lr") or t.params.get(key, math.nan))
        seconds = (t.datetime_complete - t.datetime_start).total_seconds()
        if t.state == TrialState.PRUNED:
            chance = 1 - 1 / classes
            runs.append(BenchRun(lr, int(t.params["seed"]), chance, chance, seconds, diverged=True))
            continue
        runs.append(
            BenchRun(
                lr=lr,
                seed=int(t.params["seed"]),
                valid_error=float(t.user_attrs["metrics"]["error_rate"]),
                test_error=float(t.user_attrs["test"]["error_rate"]),
                seconds=seconds,
                suggestions={k: float(v) for k, v in (entry.get("suggestions") or {}).items()},
                extra_epochs=sum(extra_epochs(s) for s in t.user_attrs.get("stages") or []),
            )
        )
    return sorted(runs, key=lambda r: (r.lr, r.seed))


def extra_epochs(stage: dict[str, Any]) -> float:
    """What a stage trained beyond its own epochs, in its epochs: the range test's steps and an
    lr=auto race's epochs other than the winner's."""
    steps = float(stage.get("steps_per_epoch") or 0)
    finder = float(stage.get("finder_steps") or 0) / steps if steps else 0.0
    race = stage.get("race") or {}
    return finder + float(race.get("epochs_trained", 0)) - float(race.get("race_epochs", 0))


def trial_seconds(storage: str, study: str) -> list[float]:
    """Wall-clock seconds of each COMPLETE trial of a study ([] when there is none yet)."""
    import optuna
    from optuna.trial import TrialState

    from finder_grid_runs import settled_trials

    if not settled_trials(storage, study):
        return []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    found = optuna.load_study(study_name=study, storage=storage)
    return [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in found.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    ]


def bootstrap_ci(
    groups: Sequence[Sequence[float]], n_boot: int = 4000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high): the mean of the group means and its percentile bootstrap interval,
    resampling groups (configurations) with replacement, then values (seeds) within each chosen
    group. With one group this is the plain bootstrap over its values. NaNs are dropped; all NaN:
    NaNs."""
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
