"""Tracking and study stores: created by one process at a time (concurrent first runs in a fresh
folder), with signals held during creation, and a store half-built by an older crash repaired or
explained. Real MLflow SQLite stores and Optuna RDB storages, in subprocesses where it matters."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from lrlab.integrations.locks import sqlite_path
from lrlab.integrations.mlflow_run import log_dataset_inputs
from lrlab.integrations.stores import StoreError, open_sqlite, signals_held

WORKERS = 4

MLFLOW_WORKER = """
import sys
from lrlab.integrations.mlflow import MlflowTracker
tracker = MlflowTracker(sys.argv[1], "concurrent", run_name="worker-" + sys.argv[2])
tracker.log_metric("x", 1.0)
tracker.finish()
"""

OPTUNA_WORKER = """
import sys, optuna
from lrlab.integrations.optuna_storage import open_storage
study = optuna.create_study(study_name="s", storage=open_storage(sys.argv[1]), load_if_exists=True)
study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=float(sys.argv[2])))
"""


def _start_together(script: str, url: str, tmp_path: Path) -> list[subprocess.CompletedProcess]:
    """Start WORKERS processes that wait on one file, then release them in the same instant (at the
    script's `GATE` line, or before it starts)."""
    gate = tmp_path / "go"
    wait = f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.001)\n"
    script = textwrap.dedent(script)
    body = script.replace("GATE\n", wait) if "GATE\n" in script else wait + script
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", body, url, str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        for i in range(WORKERS)
    ]
    import time

    time.sleep(6)  # let every interpreter import mlflow/optuna and reach the gate
    gate.touch()
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=300), *p.communicate()) for p in procs]


@pytest.mark.slow
def test_concurrent_first_runs_share_one_healthy_mlflow_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    results = _start_together(MLFLOW_WORKER, url, tmp_path)
    assert [r.returncode for r in results] == [0] * WORKERS, [r.stderr[-2000:] for r in results]
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(url).search_runs(
        [MlflowClient(url).get_experiment_by_name("concurrent").experiment_id]
    )
    assert sorted(r.info.run_name for r in runs) == [f"worker-{i}" for i in range(WORKERS)]
    assert {r.info.status for r in runs} == {"FINISHED"}


@pytest.mark.slow
def test_concurrent_sweep_workers_share_one_healthy_optuna_storage(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh' / 'study.db'}"
    results = _start_together(OPTUNA_WORKER, url, tmp_path)
    assert [r.returncode for r in results] == [0] * WORKERS, [r.stderr[-2000:] for r in results]
    import optuna

    study = optuna.load_study(study_name="s", storage=url)
    assert sorted(t.value for t in study.trials) == [float(i) for i in range(WORKERS)]


TAG_WRITER = """
import sys
from lrlab.integrations.mlflow import MlflowTracker
parent = MlflowTracker(sys.argv[1], "shared", run_id=PARENT)
GATE
for child in CHILDREN:
    parent.end_child(child, "KILLED", {"trial.state": "FAIL", "lrlab.ended": "by worker " + sys.argv[2]})
parent.set_description("worker " + sys.argv[2])
"""


@pytest.mark.slow
def test_workers_ending_the_same_runs_at_once_all_succeed(tmp_path: Path) -> None:
    """Sweep workers that finish together write the same new tags on one parent and its children:
    the store's unique (run, key) constraint must not fail the slower writer."""
    from mlflow.tracking import MlflowClient

    from lrlab.integrations.mlflow import MlflowTracker

    url = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = MlflowTracker(url, "shared", run_name="parent")
    children = [MlflowTracker(url, "shared", parent_run_id=parent.run_id).run_id for _ in range(20)]
    script = TAG_WRITER.replace("PARENT", repr(parent.run_id)).replace("CHILDREN", repr(children))
    results = _start_together(script, url, tmp_path)
    assert [r.returncode for r in results] == [0] * WORKERS, [r.stderr[-2000:] for r in results]
    client = MlflowClient(url)
    assert client.get_run(parent.run_id).data.tags["mlflow.note.content"].startswith("worker ")
    for child in children:
        run = client.get_run(child)
        assert (run.info.status, run.data.tags["trial.state"]) == ("KILLED", "FAIL")


def _half_built(path: Path, runs: int) -> None:
    """A store as an interrupted migration leaves it: some tables, a revision MLflow doesn't know."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        db.execute("INSERT INTO alembic_version VALUES ('0a8213491aaa')")
        db.execute("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, name VARCHAR(256))")
        db.execute("CREATE TABLE runs (run_uuid VARCHAR(32) PRIMARY KEY)")
        db.executemany("INSERT INTO runs VALUES (?)", [(f"r{i}",) for i in range(runs)])


def test_a_half_built_store_without_runs_is_moved_aside_and_recreated(tmp_path: Path, caplog) -> None:
    from lrlab.integrations.mlflow import MlflowTracker

    path = tmp_path / "mlflow.db"
    _half_built(path, runs=0)
    tracker = MlflowTracker(f"sqlite:///{path}", "repaired")
    tracker.finish()
    aside = list(tmp_path.glob("mlflow.db.broken-*"))
    assert len(aside) == 1 and "moved to" in caplog.text and "half-built" in caplog.text
    assert tracker.client.get_run(tracker.run_id).info.status == "FINISHED"


def test_a_damaged_store_with_runs_is_left_alone_and_explained(tmp_path: Path) -> None:
    from lrlab.integrations.mlflow import MlflowTracker

    path = tmp_path / "mlflow.db"
    _half_built(path, runs=3)
    with pytest.raises(StoreError, match=r"mlflow\.db cannot be opened .* holds 3 run/trial record\(s\)"):
        MlflowTracker(f"sqlite:///{path}", "kept")
    assert not list(tmp_path.glob("*.broken-*"))
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 3


@pytest.mark.parametrize("damage", ["header", "cut"])
def test_an_unreadable_store_is_moved_aside_untouched_with_the_recovery_command(
    tmp_path: Path, caplog, damage: str
) -> None:
    from lrlab.integrations.mlflow import MlflowTracker

    path = tmp_path / "mlflow.db"
    url = f"sqlite:///{path}"
    made = subprocess.run([sys.executable, "-c", MLFLOW_WORKER, url, "0"], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr[-2000:]  # another process: MLflow caches stores per URI
    data = path.read_bytes()
    damaged = b"this is not sqlite" + data[18:] if damage == "header" else data[: len(data) // 2]
    path.write_bytes(damaged)
    tracker = MlflowTracker(url, "fresh")
    tracker.finish()
    (aside,) = tmp_path.glob("mlflow.db.broken-*")
    assert aside.read_bytes() == damaged  # kept as it was, for salvage
    assert "holds no runs" not in caplog.text and "whether it held runs or trials is unknown" in caplog.text
    assert f"sqlite3 {aside} .recover | sqlite3 " in caplog.text


def test_an_empty_store_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "study.db"
    path.write_bytes(b"")
    import optuna

    from lrlab.integrations.optuna_storage import open_storage

    optuna.create_study(study_name="x", storage=open_storage(f"sqlite:///{path}"))
    assert path.stat().st_size > 0


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs pthread_kill")
@pytest.mark.parametrize("from_another_thread", [False, True])
def test_signals_during_store_creation_are_delivered_after_it(from_another_thread: bool) -> None:
    """Also when the kernel hands the signal to another thread (torch and MLflow start threads),
    where blocking it in the main thread would not hold it."""
    import threading
    import time

    seen: list[str] = []
    previous = signal.signal(signal.SIGTERM, lambda *_: seen.append("term"))
    try:

        def opener() -> str:
            if from_another_thread:
                helper = threading.Thread(
                    target=lambda: signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
                )
                helper.start()
                helper.join()
            else:
                os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # bytecode runs: a pending handler would fire here
            seen.append("created")
            return "store"

        with signals_held():
            assert opener() == "store"
            assert seen == ["created"]
        assert seen == ["created", "term"]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sqlite_path_reads_only_file_urls(tmp_path: Path) -> None:
    assert sqlite_path(f"sqlite:///{tmp_path}/a.db?timeout=5") == tmp_path / "a.db"
    assert sqlite_path("sqlite:///:memory:") is None and sqlite_path("postgresql://h/db") is None
    assert open_sqlite("http://example.invalid", "MLflow store", lambda: 7) == 7


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_runs_left_running_by_a_dead_process_are_ended_killed_by_the_next_run(tmp_path: Path) -> None:
    import socket

    from mlflow.tracking import MlflowClient

    from lrlab.integrations.mlflow import OWNER_TAG, MlflowTracker

    url = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = MlflowTracker(url, "e", run_name="killed -9")
    client = MlflowClient(url)
    assert client.get_run(first.run_id).data.tags[OWNER_TAG] == f"{socket.gethostname()}:{os.getpid()}"
    client.set_tag(first.run_id, OWNER_TAG, f"{socket.gethostname()}:{_dead_pid()}")  # its process died
    elsewhere = client.create_run(first.experiment_id, tags={OWNER_TAG: "another-host:1"}).info.run_id
    alive = MlflowTracker(url, "e", run_name="still running")  # this process: alive
    assert client.get_run(first.run_id).info.status == "KILLED"
    assert "was gone" in client.get_run(first.run_id).data.tags["lrlab.ended"]
    assert client.get_run(elsewhere).info.status == "RUNNING"  # cannot be checked from this host
    assert client.get_run(alive.run_id).info.status == "RUNNING"
    MlflowTracker(url, "e").finish()
    assert client.get_run(alive.run_id).info.status == "RUNNING"
    alive.finish()


def test_a_database_url_without_its_driver_names_the_key_and_the_extra() -> None:
    from lrlab.integrations.mlflow_store import check_tracking_uri
    from lrlab.integrations.optuna_storage import open_storage
    from lrlab.integrations.stores import require_driver

    with pytest.raises(StoreError, match=r"hydra\.sweeper\.storage='postgresql\+nosuchdriver://\*\*\*@db/x'"):
        open_storage("postgresql+nosuchdriver://user:secret@db/x")
    with pytest.raises(StoreError, match=r"tracking\.uri=.*needs the database driver 'nosuchdriver'"):
        check_tracking_uri("mysql+nosuchdriver://db/x")
    import importlib.util

    if importlib.util.find_spec("psycopg") is None:
        with pytest.raises(StoreError, match=r"pip install 'lrlab\[postgres\]' \(psycopg 3\)"):
            require_driver("postgresql://db/x", "tracking.uri")
    require_driver("sqlite:///x.db", "tracking.uri")  # no driver needed


def test_uris_mlflow_cannot_write_are_refused_with_the_fix(tmp_path: Path) -> None:
    from lrlab.errors import LrlabError
    from lrlab.integrations.mlflow_store import check_tracking_uri

    with pytest.raises(LrlabError, match=r"file store is in maintenance mode.*tracking.uri=sqlite:///"):
        check_tracking_uri(f"file://{tmp_path}")
    with pytest.raises(LrlabError, match=r"maintenance mode"):
        check_tracking_uri(str(tmp_path / "runs"))  # a bare path is MLflow's file store too
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(LrlabError, match=rf"{blocker} is a file, so the store cannot be created below it"):
        check_tracking_uri(f"sqlite:///{blocker}/mlflow.db")
    check_tracking_uri(f"sqlite:///{tmp_path}/new/mlflow.db")  # a folder still to create is fine


@pytest.mark.parametrize("override", ["name=", "tracking.experiment=' '"])
def test_an_empty_experiment_name_is_refused(compose_cfg, override: str) -> None:
    from lrlab.app.schema import validate
    from lrlab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"is empty: the MLflow experiment and the run names need one"):
        validate(compose_cfg("experiment=smoke", override))


class RaceLosingClient:
    """A real MLflow client whose first `log_inputs` loses the race a sweep's two workers ran on a
    PostgreSQL-backed server: the other worker's run links the same datasets first, then this call
    fails with the error the server answered (`error`); later calls go through."""

    def __init__(self, client: Any, other_run_id: str, error: Exception) -> None:
        self.client, self.other_run_id, self.error = client, other_run_id, error
        self.calls = 0

    def log_inputs(self, run_id: str, datasets: list[Any]) -> None:
        self.calls += 1
        if self.calls == 1:
            self.client.log_inputs(self.other_run_id, datasets=datasets)
            raise self.error
        self.client.log_inputs(run_id, datasets=datasets)


def _two_runs(store: Path) -> tuple[Any, str, str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    experiment = client.create_experiment("race")
    return client, *(client.create_run(experiment).info.run_id for _ in range(2))


def _log_splits(client: Any, run_id: str) -> None:
    digests, sizes = (
        {"train": "d-train", "valid": "d-valid", "test": "d-test"},
        {"train": 6, "valid": 2, "test": 2},
    )
    log_dataset_inputs(client, run_id, "digits", digests, sizes, {"name": "digits"})


def test_a_dataset_input_that_collides_with_another_runs_insert_is_retried_and_linked(store: Path) -> None:
    from mlflow.exceptions import RestException

    client, mine, other = _two_runs(store)
    collision = RestException(
        {
            "error_code": "BAD_REQUEST",
            "message": "(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "
            '"dataset_pk"',
        }
    )
    racing = RaceLosingClient(client, other, collision)
    _log_splits(racing, mine)
    assert racing.calls == 2
    names = {
        run: sorted(i.dataset.name for i in client.get_run(run).inputs.dataset_inputs)
        for run in (mine, other)
    }
    assert names[mine] == names[other] == ["digits-test", "digits-train", "digits-valid"]


def test_a_dataset_input_error_that_is_no_collision_is_raised_at_once(store: Path) -> None:
    from mlflow.exceptions import RestException

    client, mine, other = _two_runs(store)
    missing = RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": f"Run '{mine}' not found"})
    racing = RaceLosingClient(client, other, missing)
    with pytest.raises(RestException, match="not found"):
        _log_splits(racing, mine)
    assert racing.calls == 1
