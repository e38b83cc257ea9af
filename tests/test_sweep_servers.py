"""Sweeps across machines, for real: a PostgreSQL server holds the Optuna study and an MLflow
tracking server (itself on PostgreSQL, artifacts uploaded over HTTP) the runs; two `lrlab -m`
workers started in the same instant fill one study. Also: workers opening one study together
enqueue each finder baseline exactly once, on every kind of storage, and start one MLflow parent run.

The servers are started by fixtures (`servers.py`) on 127.0.0.1 and removed afterwards; where
they cannot start the tests skip, naming why (CI sets LRLAB_REQUIRE_SERVERS=1: they fail instead)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from conftest import spawn_lrlab
from lrlab.integrations.optuna_storage import open_storage
from lrlab.integrations.tracking import get_backend
from lrlab.sweep.parent import open_parent_run
from lrlab.sweep.search_space import SearchSpace, parse_search_space
from lrlab.sweep.session import SweepSession
from lrlab.sweep.settings import SweepSettings
from lrlab.sweep.study import SOURCE
from servers import Postgres, ServerUnavailable, mlflow_server, postgres_server, unavailable

optuna.logging.set_verbosity(optuna.logging.ERROR)
pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.filterwarnings("ignore:Heartbeat of storage"),
]

T = TypeVar("T")
RULES = ["valley", "steep", "minimum"]
STAGES = [{"name": "full", "epochs": 1, "trainable": "all", "lr": 1e-3}]


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """One PostgreSQL cluster for this module's tests (each test creates its own database)."""
    try:
        with postgres_server() as server:
            yield server
    except ServerUnavailable as exc:
        unavailable(exc)


def _together(work: Callable[[], T], workers: int = 2) -> list[T]:
    """Run `work` in `workers` threads released by one barrier, as workers started in the same
    instant; returns their results (re-raises the first error)."""
    barrier, results, errors = threading.Barrier(workers), [], []

    def worker() -> None:
        try:
            barrier.wait()
            results.append(work())
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise errors[0]
    assert len(results) == workers, "a worker did not finish in 120 s"
    return results


def _settings_and_space() -> tuple[SweepSettings, SearchSpace]:
    settings = SweepSettings(n_trials=8, enqueue=["lr_finder"], finder_rules=RULES).validate()
    return settings, parse_search_space({"stages.*.lr": "tag(log, interval(1e-5, 1e-1))"}, [], STAGES)


def _storage_url(kind: str, store: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return f"sqlite:///{store / 'optuna.db'}"
    if kind == "journal":
        return f"journal://{store / 'optuna.log'}"
    return request.getfixturevalue("postgres").create_database(f"optuna_{uuid.uuid4().hex[:8]}")


@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgresql"])
def test_workers_opening_a_study_together_enqueue_each_baseline_once(
    kind: str, store: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers released by one barrier. Every enqueue is slowed down (a slow database), so
    without the study's lock both would read an empty study and both enqueue every baseline."""
    url = _storage_url(kind, store, request)
    enqueue = optuna.Study.enqueue_trial

    def slow_enqueue(self: optuna.Study, *args, **kwargs) -> None:
        time.sleep(0.2)
        enqueue(self, *args, **kwargs)

    monkeypatch.setattr(optuna.Study, "enqueue_trial", slow_enqueue)
    settings, space = _settings_and_space()
    _together(lambda: SweepSession.open(settings, space, url, "study", store))
    trials = SweepSession.open(settings, space, url, "study", store).study.get_trials(deepcopy=False)
    assert sorted(t.user_attrs[SOURCE] for t in trials) == sorted(f"lr_finder:{r}" for r in RULES)
    assert {t.state for t in trials} == {TrialState.WAITING}


def test_workers_opening_a_fresh_postgresql_database_together_create_optunas_tables_once(
    postgres: Postgres,
) -> None:
    """Optuna creates its tables on first use; four at once on a fresh database collide (duplicate
    key in pg_type) unless one at a time does it."""
    url = postgres.create_database(f"fresh_{uuid.uuid4().hex[:8]}")
    storages = _together(lambda: open_storage(url), workers=4)
    assert len(storages) == 4
    study = optuna.create_study(storage=storages[0], study_name="s")
    assert optuna.load_study(study_name="s", storage=storages[3]).study_name == study.study_name


def test_workers_opening_a_study_together_start_one_mlflow_parent_run(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starting a parent run is slowed down, so without the study's lock both workers would find
    no parent recorded in the study and each start one."""
    from lrlab.integrations.mlflow import MlflowTracker

    settings, space = _settings_and_space()
    url, uri = f"sqlite:///{store / 'optuna.db'}", f"sqlite:///{store / 'mlflow.db'}"
    studies = iter([SweepSession.open(settings, space, url, "study", store).study for _ in range(2)])
    log_params = MlflowTracker.log_params

    def slow_log_params(self: MlflowTracker, params: dict) -> None:
        time.sleep(0.5)
        log_params(self, params)

    monkeypatch.setattr(MlflowTracker, "log_params", slow_log_params)
    backend = get_backend("mlflow")
    parents = _together(
        lambda: open_parent_run(backend, next(studies), settings, space, uri, "sweeps", store)
    )
    for parent in parents:
        parent.finish()
    assert len({p.run_id for p in parents}) == 1
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.data.tags.get("lrlab.sweep") for r in runs] == ["parent"]


@pytest.fixture
def servers(postgres: Postgres) -> Iterator[tuple[str, str]]:
    """(Optuna storage URL, MLflow tracking URL): a fresh database and a tracking server on
    PostgreSQL, stopped and removed afterwards."""
    study_db = postgres.create_database("optuna")
    tracking_db = postgres.create_database("mlflow")
    try:
        with mlflow_server(tracking_db.replace("postgresql://", "postgresql+psycopg://")) as tracking:
            yield study_db, tracking
    except ServerUnavailable as exc:
        unavailable(exc)


def test_two_workers_on_postgresql_and_an_mlflow_server_fill_one_study(
    servers: tuple[str, str], tmp_path: Path
) -> None:
    """Both started at once: exactly n_trials COMPLETE, each baseline once, no trial twice, both
    workers used, and every MLflow run on the server a child of the study's one parent run."""
    storage, tracking = servers
    n_trials = 4
    args = (
        "-m",
        "experiment=smoke",
        "search=lr_vs_finder",
        "epochs=1",
        "train.checkpoints=false",
        f"hydra.sweeper.n_trials={n_trials}",
        "hydra.sweeper.finder_rules=[valley,steep]",
        f"hydra.sweeper.storage={storage}",
        f"tracking.uri={tracking}",
    )
    machines = [tmp_path / "machine0", tmp_path / "machine1"]  # nothing shared but the two servers
    for machine in machines:
        machine.mkdir()
    workers = [spawn_lrlab(*args, cwd=machine) for machine in machines]
    try:
        outputs = [w.communicate(timeout=600)[0] for w in workers]
    finally:
        for worker in workers:  # a timeout must not leave workers behind the servers' teardown
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    assert [w.returncode for w in workers] == [0, 0], "\n".join(o[-3000:] for o in outputs)

    study = optuna.load_study(study_name="smoke-lr_vs_finder", storage=storage)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == n_trials
    unfinished = (TrialState.RUNNING, TrialState.FAIL)
    stuck = [
        (t.number, t.state.name, t.user_attrs.get("error")) for t in study.trials if t.state in unfinished
    ]
    assert not stuck  # number, state and the recorded error of each, should this fail again
    sources = [t.user_attrs[SOURCE] for t in study.trials]
    assert sorted(s for s in sources if s.startswith("lr_finder:")) == ["lr_finder:steep", "lr_finder:valley"]
    searched = [t.params["stages.0.lr"] for t in complete if t.user_attrs[SOURCE] == "search"]
    assert len(searched) == n_trials - 2 == len(set(searched))
    assert len({t.user_attrs["lrlab.worker"] for t in complete}) == 2, "both workers should have run trials"

    client = MlflowClient(tracking)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("lrlab.sweep") == "parent"]
    assert len(parents) == 1, [r.data.tags.get("mlflow.runName") for r in runs]
    children = [r for r in runs if r is not parents[0]]
    assert {r.data.tags.get("mlflow.parentRunId") for r in children} == {parents[0].info.run_id}
    assert sorted(int(r.data.tags["trial.number"]) for r in children) == sorted(t.number for t in complete)
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert parents[0].data.params["study_name"] == "smoke-lr_vs_finder"
    uploaded = {a.path for a in client.list_artifacts(children[0].info.run_id, "config")}
    assert "config/config.yaml" in uploaded  # artifacts went to the server over HTTP
