"""The sweep's ask/tell loop in-process, without Hydra: a fake job function stands in for the
launcher, over real Optuna storages (SQLite files, journal files)."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from lrlab.errors import ConfigError, TrainingDiverged
from lrlab.finder.rules import RULES
from lrlab.integrations.optuna_storage import open_storage
from lrlab.sweep.baselines import FinderBaselines
from lrlab.sweep.results import write_results
from lrlab.sweep.search_space import SearchSpace, parse_search_space
from lrlab.sweep.session import Outcome, SweepFailed, SweepSession, objective_values
from lrlab.sweep.settings import SweepSettings
from lrlab.sweep.study import SOURCE, WORKER_ATTR, effective_settings

optuna.logging.set_verbosity(optuna.logging.ERROR)
pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.filterwarnings("ignore:Heartbeat of storage"),
]

STAGES = [{"name": "full", "epochs": 1, "trainable": "all", "lr": 1e-3}]
LR_SPACE = {"stages.*.lr": "tag(log, interval(1e-5, 1e-1))"}
# The LR each finder rule "chooses" in a fake job (minimum: outside the searched space); other rules 1e-3.
FINDER_LRS = {"valley": 2e-3, "steep": 5e-4, "minimum": 0.5, "slide": 3e-3}


class FakeJobs:
    """A job function for `SweepSession.run`: error_rate = |log10(lr) + 3| / 10 from the job's
    overrides; chosen trial numbers fail or are pruned; a finder trial uses `FINDER_LRS`."""

    def __init__(
        self, fail: Collection[int] = (), prune: Collection[int] = (), diverge: Collection[int] = ()
    ):
        self.fail, self.prune, self.diverge = set(fail), set(prune), set(diverge)
        self.batches: list[list[list[str]]] = []

    def __call__(self, batch: list[list[str]]) -> list[Outcome]:
        self.batches.append(batch)
        return [self.job(overrides) for overrides in batch]

    def job(self, overrides: list[str]) -> Outcome:
        values = dict(o.lstrip("+").split("=", 1) for o in overrides)
        number = int(values["trial.number"])
        if number in self.fail:
            return Outcome(error=RuntimeError(f"loss is nan in trial {number}"))
        if number in self.prune:
            return Outcome(error=optuna.TrialPruned("pruned after epoch 1"))
        if number in self.diverge:
            return Outcome(error=TrainingDiverged(f"The training loss became nan in trial {number}"))
        rule = values.get("stages.0.lr_rule")
        lr = FINDER_LRS.get(rule, 1e-3) if values["stages.0.lr"] == "find" else float(values["stages.0.lr"])
        return Outcome(
            summary={
                "metrics": {"error_rate": abs(math.log10(lr) + 3) / 10, "valid_loss": 0.5},
                "train_seconds": 2.0,
                "finder_seconds": 1.0 if rule else 0.0,
                "stages": [{"index": 0, "name": "full", "lr": lr, "rule": rule}],
                "run_id": None,
                "output_dir": None,
            }
        )


def _space(*arguments: str, params: dict[str, Any] | None = None) -> SearchSpace:
    return parse_search_space(LR_SPACE if params is None else params, list(arguments), STAGES)


def _open(
    store: Path,
    space: SearchSpace | None = None,
    url: str | None = None,
    storage: Any = None,
    **settings: Any,
) -> SweepSession:
    url = url or f"sqlite:///{store / 'optuna.db'}"
    return SweepSession.open(
        SweepSettings(**settings).validate(), space or _space(), url, "study", store, storage=storage
    )


def _states(session: SweepSession) -> list[TrialState]:
    return [t.state for t in session.study.get_trials(deepcopy=False)]


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_asks_up_to_the_total_and_a_rerun_adds_only_the_difference(store: Path) -> None:
    jobs = FakeJobs()
    assert _open(store, n_trials=3).run(jobs) == 3
    again = _open(store, n_trials=3)
    assert again.run(jobs) == 0
    more = _open(store, n_trials=5)
    assert more.run(jobs) == 2
    trials = more.study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5
    lrs = [t.params["stages.0.lr"] for t in trials]
    assert len(set(lrs)) == 5 and all(1e-5 <= lr <= 1e-1 for lr in lrs)
    assert {t.user_attrs[SOURCE] for t in trials} == {"search"}
    assert trials[0].user_attrs["stages"][0]["lr"] == lrs[0] and trials[0].user_attrs["train_seconds"] == 2.0
    # Each job gets its trial's identity, so that it can report to it.
    first = jobs.batches[0][0]
    assert f"trial.storage='sqlite:///{store / 'optuna.db'}'" in first
    assert {"trial.study=study", "trial.number=0", "trial.source=search", "trial.metric=error_rate"} <= set(
        first
    )


def test_resume_with_other_overrides_is_refused(store: Path) -> None:
    _open(store, _space("epochs=2"), n_trials=1).run(FakeJobs())
    with pytest.raises(
        ConfigError, match=r"started with the overrides \['epochs=2'\].*hydra.sweeper.study_name"
    ):
        _open(store, _space("epochs=3"), n_trials=1)


def test_resume_with_other_choices_is_refused_before_any_trial_but_a_new_range_is_not(store: Path) -> None:
    """Optuna refuses other categorical choices only when a trial asks, with a traceback."""
    _open(store, _space("stages.0.lr=0.001,0.01", params={}), n_trials=2).run(FakeJobs())
    with pytest.raises(
        ConfigError,
        match=r"drew stages.0.lr from choice\(0.001, 0.01\) \(trial 0\).*"
        r"cannot add choice\(0.001, 0.003\).*hydra.sweeper.study_name",
    ):
        _open(store, _space("stages.0.lr=0.001,0.003", params={}), n_trials=3)
    other = store / "other"
    other.mkdir()
    _open(other, _space(params={"stages.0.lr": "tag(log, interval(1e-4, 1e-2))"}), n_trials=1).run(FakeJobs())
    wider = _open(other, _space(params={"stages.0.lr": "tag(log, interval(1e-5, 1e-1))"}), n_trials=2)
    assert wider.run(FakeJobs()) == 1


def test_batches_of_n_jobs_and_extra_overrides(store: Path) -> None:
    jobs = FakeJobs()
    _open(store, _space("epochs=2"), n_trials=5, n_jobs=2).run(
        jobs, extra_overrides=["tracking.parent_run_id=abc"]
    )
    assert [len(b) for b in jobs.batches] == [2, 2, 1]
    for overrides in (o for b in jobs.batches for o in b):
        assert overrides[0] == "epochs=2" and overrides[-1] == "tracking.parent_run_id=abc"


def test_failed_trials_are_replaced_and_pruned_ones_count(store: Path) -> None:
    session = _open(store, n_trials=3)
    assert session.run(FakeJobs(fail={0}, prune={2})) == 4
    assert _states(session) == [TrialState.FAIL, TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE]
    trials = session.study.get_trials(deepcopy=False)
    assert trials[0].user_attrs["error"] == "RuntimeError: loss is nan in trial 0"
    assert trials[2].user_attrs["pruned"] == "pruned after epoch 1"


def test_a_diverged_run_counts_as_pruned_and_is_not_retried(store: Path) -> None:
    session = _open(store, n_trials=3, max_failure_rate=0.0)
    assert session.run(FakeJobs(diverge={1})) == 3
    assert _states(session) == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE]
    assert "loss became nan" in session.study.get_trials(deepcopy=False)[1].user_attrs["diverged"]


def test_more_failures_than_the_rate_allows_stop_the_sweep(store: Path) -> None:
    session = _open(store, n_trials=4, n_jobs=2, max_failure_rate=0.25)
    with pytest.raises(
        SweepFailed, match=r"2 trials failed.*\(trial 1\): RuntimeError: loss is nan in trial 1"
    ):
        session.run(FakeJobs(fail={0, 1}))
    # The whole batch was recorded before stopping: nothing is left RUNNING.
    assert _states(session) == [TrialState.FAIL, TrialState.FAIL]


def test_an_interrupted_batch_fails_its_trials(store: Path) -> None:
    def interrupted(batch: list[list[str]]) -> list[Outcome]:
        raise KeyboardInterrupt

    session = _open(store, n_trials=3, n_jobs=2)
    with pytest.raises(KeyboardInterrupt):
        session.run(interrupted)
    assert _states(session) == [TrialState.FAIL, TrialState.FAIL]


def test_a_metric_no_run_returns_is_refused_before_the_first_trial(store: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"hydra.sweeper.metric='f1' is not valid; choose one of: error_rate"
    ):
        _open(store, n_trials=1, metric="f1")
    with pytest.raises(ConfigError, match=r"metric='f1' is not something a run returns"):
        objective_values({"metrics": {"error_rate": 0.1}}, ["f1"])  # the job side says the same


@pytest.mark.parametrize("url", ["garbage://x", "not a url"])
def test_a_storage_url_optuna_cannot_open_is_one_line(url: str) -> None:
    with pytest.raises(ConfigError, match=r"hydra.sweeper.storage: .* is not a storage Optuna can open"):
        open_storage(url)


def test_trials_left_running_by_a_dead_sweep_on_this_host_are_failed_and_rerun(store: Path) -> None:
    first = _open(store, n_trials=2)
    trial = first.ask(1)[0]
    trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{_dead_pid()}")
    resumed = _open(store, n_trials=2)
    assert resumed.recovered == [0]
    assert resumed.run(FakeJobs()) == 2
    assert _states(resumed) == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]


def test_another_live_workers_running_trials_count_as_taken(store: Path) -> None:
    other = _open(store, n_trials=3)
    held = other.ask(1)[0]  # this process is alive: its trial is not recovered
    session = _open(store, n_trials=3)
    assert session.recovered == []
    assert session.run(FakeJobs()) == 2
    assert _states(session) == [TrialState.RUNNING, TrialState.COMPLETE, TrialState.COMPLETE]
    other.study.tell(held, 0.5)


def test_trials_asked_beyond_the_total_go_back_to_waiting(store: Path) -> None:
    other = _open(store, n_trials=2)
    other.ask(1)
    session = _open(store, n_trials=2)
    kept = session.ask(2)  # trial 2 would make three taken trials: it goes back to the queue
    assert [t.number for t in kept] == [1]
    assert _states(session) == [TrialState.RUNNING, TrialState.RUNNING, TrialState.WAITING]
    assert [t.user_attrs[SOURCE] for t in session.study.trials] == ["search"] * 3  # the waiting one too
    other.study.tell(0, state=TrialState.FAIL)  # the other worker's trial failed: one more is needed
    assert [t.number for t in session.ask(1)] == [2]


def test_stale_heartbeats_fail_trials_of_other_hosts(store: Path) -> None:
    url = f"sqlite:///{store / 'optuna.db'}"
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=1)
    first = _open(store, url=url, storage=storage, n_trials=1)
    trial = first.ask(1)[0]
    trial.set_user_attr(WORKER_ATTR, "another-host:1")
    study_id = storage.get_study_id_from_name("study")
    storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(study_id, trial.number))
    time.sleep(2.1)  # SQLite's clock has whole seconds: 2 s make the 1 s grace period pass
    resumed = _open(store, url=url, storage=storage, n_trials=1)
    assert resumed.recovered == [0]
    resumed.run(FakeJobs())
    assert _states(resumed) == [TrialState.FAIL, TrialState.COMPLETE]


def test_finder_baselines_run_first_once_per_study_with_the_chosen_lrs_as_params(store: Path) -> None:
    space = _space(params={**LR_SPACE, "optimizer.weight_decay": "tag(log, interval(1e-4, 0.3))"})
    finder = FinderBaselines.for_space(space, STAGES, {"optimizer.weight_decay": 0.01})
    rules = ["lrlab", *(r for r in RULES if r != "lrlab")]  # one baseline per rule, the default's first
    steep, minimum = rules.index("steep"), rules.index("minimum")
    jobs = FakeJobs(fail={steep})
    session = _open(store, space, n_trials=2 * len(rules), enqueue=["lr_finder"])
    session.run(jobs, finder)
    trials = session.study.get_trials(deepcopy=False)
    assert [t.user_attrs[SOURCE] for t in trials[: len(rules)]] == [f"lr_finder:{r}" for r in rules]
    for trial in (t for t in trials[: len(rules)] if t.state == TrialState.COMPLETE):
        lr = FINDER_LRS.get(trial.user_attrs[SOURCE].split(":")[1], 1e-3)
        assert trial.params == {"stages.0.lr": lr, "optimizer.weight_decay": 0.01}
    # minimum's LR lies outside the searched interval: the param's distribution widens to hold it.
    assert trials[minimum].distributions["stages.0.lr"].high == 0.5
    valley = next(o for b in jobs.batches for o in b if "trial.source='lr_finder:valley'" in o)
    assert {"stages.0.lr=find", "++stages.0.lr_rule=valley"} <= set(valley)
    # steep failed: it is enqueued again on resume; the others are not.
    resumed = _open(store, space, n_trials=2 * len(rules) + 2, enqueue=["lr_finder"])
    resumed.run(FakeJobs(), finder)
    sources = [t.user_attrs[SOURCE] for t in resumed.study.get_trials(deepcopy=False)]
    assert sorted(s for s in sources if s.startswith("lr_finder:")) == sorted(
        [*(f"lr_finder:{r}" for r in rules), "lr_finder:steep"]
    )
    assert sources[2 * len(rules) + 1] == "lr_finder:steep"


def test_finder_rules_pick_the_baselines_and_mappings_are_enqueued(store: Path) -> None:
    session = _open(store, n_trials=4, enqueue=["lr_finder", {"stages.0.lr": 0.02}], finder_rules=["steep"])
    session.run(FakeJobs(), FinderBaselines(stages=(0,)))
    trials = session.study.get_trials(deepcopy=False)
    assert [t.user_attrs[SOURCE] for t in trials] == ["lr_finder:steep", "enqueued", "search", "search"]
    assert trials[1].params["stages.0.lr"] == 0.02


def test_a_plain_grid_sweep_runs_every_combination_once(store: Path) -> None:
    space = _space("stages.0.lr=1e-3,1e-2", "optimizer=adamw,sgd", params={})
    settings = SweepSettings().validate()
    grid = effective_settings(settings, space, preset=False)
    assert (grid.sampler, grid.n_trials) == ("grid", 4)
    assert (settings.sampler, settings.n_trials) == ("tpe", 20)  # derived, not mutated
    assert effective_settings(settings, space, preset=True) is settings
    capped = effective_settings(SweepSettings(sampler="grid", n_trials=9), space, preset=True)
    assert capped.n_trials == 4
    session = SweepSession.open(grid, space, f"sqlite:///{store / 'g.db'}", "grid", store)
    session.run(FakeJobs())
    seen = {(t.params["stages.0.lr"], t.params["optimizer"]) for t in session.study.trials}
    assert seen == {(a, b) for a in (1e-3, 1e-2) for b in ("adamw", "sgd")}


def test_a_resumed_grid_reruns_the_failed_point_and_repeats_none(store: Path) -> None:
    """Optuna's GridSampler counts a FAIL as visited: a grid whose trial crashed (or whose sweep
    was killed) re-ran a random finished point on resume and never the failed one."""
    space = _space("stages.0.lr=1e-3,1e-2", "optimizer=adamw,sgd", params={})
    grid = effective_settings(SweepSettings(max_failure_rate=1.0).validate(), space, preset=False)
    url = f"sqlite:///{store / 'g.db'}"
    first = SweepSession.open(grid, space, url, "grid", store)
    first.run(FakeJobs(fail={1}))
    failed = next(t for t in first.study.trials if t.state == TrialState.FAIL)
    second = SweepSession.open(grid, space, url, "grid", store)
    second.run(FakeJobs())
    complete = [t for t in second.study.trials if t.state == TrialState.COMPLETE]
    points = [(t.params["stages.0.lr"], t.params["optimizer"]) for t in complete]
    assert len(points) == len(set(points)) == 4
    assert (failed.params["stages.0.lr"], failed.params["optimizer"]) in points


def test_journal_storage_and_several_objectives(store: Path) -> None:
    url = f"journal://{store / 'shared' / 'study.log'}"
    session = _open(
        store,
        url=url,
        n_trials=3,
        metric=["error_rate", "total_seconds"],
        direction=["minimize", "minimize"],
    )
    session.run(FakeJobs())
    study = optuna.load_study(study_name="study", storage=open_storage(url))
    assert [t.values[1] for t in study.trials] == [2.0, 2.0, 2.0]
    results = OmegaConf.load(write_results(study, store))
    assert results.storage == url and results.trials == {"complete": 3} and len(results.best_trials) >= 1


def test_the_results_file_names_the_best_trial(store: Path) -> None:
    session = _open(store, n_trials=3)
    session.run(FakeJobs(fail={0}))
    results = OmegaConf.load(write_results(session.study, store / "out"))
    best = session.study.best_trial
    assert results.best_trial == best.number and results.best_value == pytest.approx(best.value)
    assert results.trials == {"complete": 3, "fail": 1} and results.best_source == "search"
    assert results.metric == ["error_rate"] and results.directions == ["minimize"]


def test_pid_check_sees_this_process_alive_and_a_finished_one_dead() -> None:
    from lrlab.integrations.process import pid_alive

    assert pid_alive(os.getpid()) and not pid_alive(_dead_pid())
