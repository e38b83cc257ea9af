"""The job side of a sweep in-process: a job finds its trial from `trial.*` and reports each epoch
to it, pruned by the pruner the sweeper recorded in the study (real SQLite storage)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from conftest import seed_mlflow_store
from lrlab.core.types import EpochResult
from lrlab.integrations.optuna import TrialReporter, load_trial
from lrlab.sweep.search_space import parse_search_space
from lrlab.sweep.session import SweepSession
from lrlab.sweep.settings import SweepSettings
from lrlab.sweep.sweeper import JOB_PACKAGES

optuna.logging.set_verbosity(optuna.logging.ERROR)
pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.filterwarnings("ignore:Heartbeat of storage"),
]
SPACE = parse_search_space({"stages.*.lr": "tag(log, interval(1e-5, 1e-1))"}, [], [{"epochs": 1}])


def _epoch(epoch: int, error_rate: float) -> EpochResult:
    return EpochResult("full", epoch, epoch, 1.0, 1.0, 1 - error_rate, error_rate, 1.0)


def test_a_job_reports_each_epoch_and_the_studys_pruner_stops_it(store: Path) -> None:
    url = f"sqlite:///{store / 'optuna.db'}"
    settings = SweepSettings(n_trials=3, pruner="median", pruner_kwargs={"n_startup_trials": 2}).validate()
    session = SweepSession.open(settings, SPACE, url, "study", store)
    for value in (0.1, 0.2):
        trial = session.ask(1)[0]
        trial.report(value, 0)
        session.study.tell(trial, value)
    number = session.ask(1)[0].number
    reporter = TrialReporter(load_trial(url, "study", number), "error_rate")
    with pytest.raises(optuna.TrialPruned, match=f"trial {number} pruned after epoch 0"):
        reporter.on_epoch_end(None, _epoch(0, 0.9))
    assert session.study.trials[number].intermediate_values == {0: 0.9}


def test_several_objectives_report_nothing(store: Path) -> None:
    url = f"sqlite:///{store / 'optuna.db'}"
    settings = SweepSettings(metric=["error_rate", "train_seconds"], direction=["minimize", "minimize"])
    session = SweepSession.open(settings.validate(), SPACE, url, "study", store)
    number = session.ask(1)[0].number
    reporter = TrialReporter(load_trial(url, "study", number))
    reporter.on_epoch_end(None, _epoch(0, 0.9))
    assert not reporter.enabled and session.study.trials[number].intermediate_values == {}


def test_the_packages_a_sweep_imports_before_its_first_trial_are_those_a_job_imports(tmp_path: Path) -> None:
    """The sweeper imports JOB_PACKAGES before the first trial's clock starts (so the first trial
    is not billed ~5 s of imports the others skip); each must really be imported by a job, or the
    list has gone stale."""
    seed_mlflow_store(tmp_path)
    script = (
        "import atexit, runpy, sys\n"
        f"names = {list(JOB_PACKAGES)!r}\n"
        "atexit.register(lambda: print('UNUSED', [n for n in names if n not in sys.modules]))\n"
        "sys.argv = ['lrlab', 'experiment=smoke', 'epochs=1']\n"
        "runpy.run_module('lrlab', run_name='__main__')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "UNUSED []" in proc.stdout, proc.stdout[-2000:]
