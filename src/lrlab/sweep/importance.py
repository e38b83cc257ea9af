"""Which searched parameters mattered, for the sweep report: Optuna's fANOVA importances (Hutter et
al., 2014: the share of the objective's variance each parameter explains on its own, from a random
forest fitted to the trials) over the sweep's complete searched trials. Baseline and pruned trials
are left out: their objective is not the searched one's, or is missing."""

from __future__ import annotations

import math
from collections.abc import Sequence

import optuna
from optuna.importance import FanovaImportanceEvaluator, get_param_importances
from optuna.trial import FrozenTrial, TrialState

from lrlab.errors import describe
from lrlab.sweep.markdown import param_cell, table_head, table_row

MIN_TRIALS = 10
"""Complete searched trials below which no importance is estimated: a forest fitted to fewer
points says more about the points than about the parameters."""

HEADING = "## Which parameters mattered"


def varied_params(trials: Sequence[FrozenTrial]) -> list[str]:
    """The params every trial has and that take two values or more among them, in space order."""
    if not trials:
        return []
    names = [name for name in trials[0].params if all(name in t.params for t in trials)]
    return [name for name in names if len({repr(t.params[name]) for t in trials}) > 1]


def importances(study: optuna.Study, trials: Sequence[FrozenTrial], seed: int = 0) -> dict[str, float]:
    """fANOVA importance of each varied param over `trials` (complete ones of `study`), on the first
    objective, summing to 1, largest first; empty when fewer than two params vary."""
    params = varied_params(trials)
    if len(params) < 2:
        return {}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line for the scratch study
    try:
        scratch = optuna.create_study(directions=study.directions)
    finally:
        optuna.logging.set_verbosity(verbosity)
    scratch.add_trials(trials)
    found = get_param_importances(
        scratch,
        evaluator=FanovaImportanceEvaluator(seed=seed),
        params=params,
        target=lambda trial: trial.values[0],
    )
    return {name: float(value) for name, value in found.items()}


def section(study: optuna.Study, searched: Sequence[FrozenTrial]) -> list[str]:
    """The report's section: each varied param's importance and the best trial's value of it; a line
    saying why not when the trials are too few; nothing when fewer than two params were searched."""
    complete = [
        t for t in searched if t.state == TrialState.COMPLETE and t.values and math.isfinite(t.values[0])
    ]
    params = varied_params(complete)
    if len(params) < 2:
        return []
    if len(complete) < MIN_TRIALS:
        why = (
            f"{len(complete)} complete searched trials with a finite objective, and the estimate "
            f"needs {MIN_TRIALS} or more (raise `hydra.sweeper.n_trials`)"
        )
        return [HEADING, "", f"Not estimated: {why}.", ""]
    if len({t.values[0] for t in complete}) == 1:
        why = f"every complete searched trial scored {complete[0].values[0]:.4g}, so nothing is explained"
        return [HEADING, "", f"Not estimated: {why}.", ""]
    try:
        found = importances(study, complete)
    except (RuntimeError, ValueError) as exc:  # the report must not end a sweep over its side table
        return [HEADING, "", f"Not estimated: Optuna's fANOVA failed ({describe(exc)}).", ""]
    pick = max if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else min
    best = pick(complete, key=lambda trial: trial.values[0])
    columns = ["parameter", "importance", "best trial's value"]
    lines = [HEADING, "", *table_head(columns)]
    for name, share in found.items():
        lines.append(table_row([f"`{name}`", f"{share:.2f}", param_cell(best.params[name])], len(columns)))
    lines += [
        "",
        f"fANOVA over the {len(complete)} complete searched trials (Optuna's default importance "
        "evaluator, seed 0): the share of the objective's variance each parameter explains on its "
        "own. A large share for `seed` means the differences between trials are mostly noise.",
        "",
    ]
    return lines
