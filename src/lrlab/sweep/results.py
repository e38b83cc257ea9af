"""`optimization_results.yaml` in the sweep directory: best params and value(s), trial counts by
state, and where the study lives (`lrlab-report` finds the study from it)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf
from optuna.trial import TrialState

from lrlab.sweep.study import METRIC_ATTR, SOURCE, STORAGE_ATTR

RESULTS_FILE = "optimization_results.yaml"


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best complete trial (the first Pareto-optimal one for several objectives), or None."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    return study.best_trial if len(study.directions) == 1 else study.best_trials[0]


def write_results(study: optuna.Study, directory: Path) -> Path:
    """Write `optimization_results.yaml` into `directory`; returns its path."""
    states = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    data: dict[str, Any] = {
        "name": study.study_name,
        "storage": study.user_attrs.get(STORAGE_ATTR),
        "metric": study.user_attrs.get(METRIC_ATTR),
        "directions": [d.name.lower() for d in study.directions],
        "trials": {k.lower(): v for k, v in sorted(states.items())},
    }
    best = best_trial(study)
    if best is not None and len(study.directions) == 1:
        data.update(
            best_params=dict(best.params),
            best_value=best.value,
            best_trial=best.number,
            best_source=best.user_attrs.get(SOURCE),
        )
    elif best is not None:
        data["best_trials"] = [
            {"number": t.number, "params": dict(t.params), "values": list(t.values)}
            for t in study.best_trials
        ]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / RESULTS_FILE
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(data)))
    return path
