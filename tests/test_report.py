"""The finder-vs-search report on a hand-built study: ranks, regrets, beaten-after counts, compute."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from lrlab.sweep.report import analyse, markdown, write_report

LR = FloatDistribution(1e-5, 1e-1, log=True)
T0 = dt.datetime(2026, 1, 1)


def _trial(
    lr: float,
    error: float | None,
    source: str,
    seconds: float,
    state: TrialState = TrialState.COMPLETE,
    intermediate: dict[int, float] | None = None,
):
    return create_trial(
        state=state,
        value=error if state == TrialState.COMPLETE else None,
        params={"stages.0.lr": lr},
        distributions={"stages.0.lr": LR},
        intermediate_values=intermediate or {},
        user_attrs={
            "source": source,
            "metrics": {"valid_loss": (error or 0) * 2},
            "stages": [{"index": 0, "name": "full", "lr": lr}],
            "finder_seconds": 3.0 if source != "search" else 0.0,
        },
    )


def _study() -> optuna.Study:
    study = optuna.create_study(study_name="synthetic")
    study.set_user_attr("lrlab.metric", ["error_rate"])
    study.set_user_attr("lrlab.search_space", {"stages.0.lr": "float [1e-05, 0.1], log"})
    trials = [
        _trial(1e-3, 0.20, "lr_finder:valley", 10),
        _trial(5e-3, 0.08, "lr_finder:steep", 12),
        _trial(2e-2, 0.15, "search", 8),
        _trial(4e-3, 0.10, "search", 8),
        _trial(1e-5, None, "search", 2, TrialState.PRUNED, {0: 0.9}),
        _trial(6e-3, 0.05, "search", 8),
    ]
    start = T0
    for trial, seconds in zip(trials, [10, 12, 8, 8, 2, 8], strict=True):
        trial.datetime_start, trial.datetime_complete = start, start + dt.timedelta(seconds=seconds)
        start = trial.datetime_complete
        study.add_trial(trial)
    return study


def test_ranks_regrets_and_first_beating_trial() -> None:
    rows, searched, metric = analyse(_study())
    assert metric == "error_rate" and [t.values[0] for t in searched] == [0.15, 0.10, 0.05]
    valley, steep = rows
    assert (valley.rule, valley.rank, valley.beaten_after) == ("valley", 4, 1)
    assert valley.regret == pytest.approx(0.15)
    assert (steep.rank, steep.beaten_after) == (2, 3)
    assert steep.regret == pytest.approx(0.03)
    assert (valley.seconds, steep.seconds) == (10, 12)


def test_markdown_and_plot(tmp_path: Path) -> None:
    study = _study()
    text = markdown(study)
    assert "| valley | 0.001 | 0.2000 | 0.4000 | 4 of 4 | +0.1500 | 1 | 10 |" in text
    assert "| steep | 0.005 | 0.0800 | 0.1600 | 2 of 4 | +0.0300 | 3 | 12 |" in text
    assert "3 complete, 1 pruned, 0 failed" in text
    # 26 s of searching (8 + 8 + 2 + 8) against 11 s per finder trial on average.
    assert "26 s over 4 trials (2.4x one finder trial)" in text
    paths = write_report(study, tmp_path)
    assert [p.name for p in paths] == ["finder_vs_search.md", "finder_vs_search.png"]
    assert paths[1].stat().st_size > 10_000
