"""The finder-vs-search analysis of a finished study, shared by the report's tables
(`lrlab.sweep.report`) and its plot (`lrlab.sweep.report_plot`): each range-test rule's trial
measured against the searched trials (rank, regret, trials to beat it, compute), the searched stage
LRs and the stages' names. Both report modules import this one, so imports go one way."""

from __future__ import annotations

import math
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from lrlab.sweep.baselines import finder_rule
from lrlab.sweep.study import METRIC_ATTR, SEARCH_SOURCE, SOURCE


@dataclass
class FinderRow:
    """One range-test rule's trial, measured against the searched trials."""

    rule: str
    trial: FrozenTrial
    value: float
    rank: int
    regret: float
    beaten_after: int | None
    seconds: float  # as a lone run would take it: wall clock, plus any range test it reused
    range_test_seconds: float  # its range tests in full, reused ones included


def source_of(trial: FrozenTrial) -> str:
    """Where a trial came from: `search`, `enqueued` or `lr_finder:<rule>`."""
    return str(trial.user_attrs.get(SOURCE, SEARCH_SOURCE))


def trial_seconds(trial: FrozenTrial) -> float:
    """Wall seconds a trial took (setup, range tests and training)."""
    if trial.datetime_start and trial.datetime_complete:
        return (trial.datetime_complete - trial.datetime_start).total_seconds()
    return 0.0


def range_test_seconds(trial: FrozenTrial) -> tuple[float, float]:
    """(seconds the trial's range tests cost in full, seconds it spent on them): a trial that reused
    an earlier trial's curve spent nothing on it, but a lone `lr=find` run would pay it. Stages of
    older studies carry only the spent seconds (`finder_seconds`), which then count as the cost."""
    stages = trial.user_attrs.get("stages") or []
    spent = sum(float(s.get("finder_seconds") or 0.0) for s in stages)
    full = sum(float(s.get("finder_curve_seconds", s.get("finder_seconds")) or 0.0) for s in stages)
    return full, spent


def lr_keys(study: optuna.Study) -> list[str]:
    """The searched `stages.<i>.lr` params, in stage order."""
    keys = {k for t in study.trials for k in t.params if k.startswith("stages.") and k.endswith(".lr")}
    return sorted(keys, key=lambda k: int(k.split(".")[1]))


ALL_STAGES_LR = "lr"
"""The `lr` shorthand: one learning rate for every stage (`lrlab -m lr=1e-4,1e-3,1e-2`)."""


def is_number(value: object) -> bool:
    """Whether a param or metric value is a number (a categorical param may hold `find` or `auto`)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def plotted_lr_keys(study: optuna.Study) -> list[str]:
    """The LR params the report plots against: the searched stage LRs, or else the `lr` shorthand
    when trials searched numbers for it (not `find` or `auto`)."""
    keys = lr_keys(study)
    if keys:
        return keys
    numeric = any(is_number(t.params.get(ALL_STAGES_LR)) for t in study.trials)
    return [ALL_STAGES_LR] if numeric else []


def stage_names(study: optuna.Study) -> dict[str, str]:
    """`stages.<i>.lr` -> the stage's name, from what trials recorded (`lr`: every stage)."""
    names: dict[str, str] = {ALL_STAGES_LR: "every stage's"}
    for trial in study.trials:
        for stage in trial.user_attrs.get("stages") or []:
            names.setdefault(f"stages.{stage['index']}.lr", stage["name"])
    return names


def analyse(study: optuna.Study) -> tuple[list[FinderRow], list[FrozenTrial], str]:
    """Finder rows and the searched trials (complete, in trial order), for the first objective."""
    minimize = study.directions[0] == optuna.study.StudyDirection.MINIMIZE
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    searched = [t for t in complete if source_of(t) == SEARCH_SOURCE]
    metric = (study.user_attrs.get(METRIC_ATTR) or ["value"])[0]
    sign = 1.0 if minimize else -1.0
    best = min((sign * t.values[0] for t in searched), default=math.nan) * sign
    rows = []
    for trial in complete:
        rule = finder_rule(source_of(trial))
        if rule is None:
            continue
        value = trial.values[0]
        better = [t for t in searched if sign * t.values[0] < sign * value]
        beaten = next((i + 1 for i, t in enumerate(searched) if sign * t.values[0] < sign * value), None)
        full, spent = range_test_seconds(trial)
        rows.append(
            FinderRow(
                rule,
                trial,
                value,
                len(better) + 1,
                sign * (value - best) if searched else math.nan,
                beaten,
                trial_seconds(trial) + full - spent,
                full,
            )
        )
    return rows, searched, metric
