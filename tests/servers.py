"""Real database and tracking servers for tests: a throw-away PostgreSQL cluster (Debian's
`postgresql` package) and an `mlflow server`, both on 127.0.0.1 at free ports, with their files in
a temporary folder. Each is a context manager that stops its server and removes its files on the
way out, whatever happened inside.

A server that cannot start raises `ServerUnavailable`; `unavailable` turns it into a skip with
its reason, or into a failure when LRLAB_REQUIRE_SERVERS=1 (set by `.ci/run`, so that CI cannot
pass by skipping). PostgreSQL refuses to run as root: as root, initdb and postgres run as the
`postgres` user the Debian package creates (else `nobody`)."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

START_TIMEOUT_S = 60


class ServerUnavailable(RuntimeError):
    """A server needed by a test cannot start here (not installed, or it failed to start)."""


def unavailable(exc: ServerUnavailable) -> None:
    """Skip the test, naming why, or fail it where servers are required (CI)."""
    if os.environ.get("LRLAB_REQUIRE_SERVERS") == "1":
        pytest.fail(f"{exc} (LRLAB_REQUIRE_SERVERS=1: servers are required here)")
    pytest.skip(str(exc))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _postgres_bin(name: str) -> str:
    """A PostgreSQL program from PATH or Debian's /usr/lib/postgresql/<version>/bin (newest first)."""
    found = shutil.which(name)
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    if found or candidates:
        return found or candidates[-1]
    raise ServerUnavailable(
        f"PostgreSQL not available: {name} not found on PATH or in /usr/lib/postgresql/*/bin "
        "(apt-get install postgresql)"
    )


def _server_user() -> dict[str, Any]:
    """Popen arguments that drop root to an unprivileged user (postgres refuses to run as root)."""
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            user = pwd.getpwnam(name)
            return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    raise ServerUnavailable("PostgreSQL cannot run as root and there is no 'postgres' or 'nobody' user")


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, group: bool = False) -> None:
    """`sig` (to the process group with `group`), then SIGKILL if it is still there after 20 s."""
    if proc.poll() is not None:
        return
    send = (lambda sig: os.killpg(proc.pid, sig)) if group else proc.send_signal
    with contextlib.suppress(ProcessLookupError):
        send(sig)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            send(signal.SIGKILL)
        proc.wait(timeout=20)


def _wait(ready: Any, proc: subprocess.Popen, log: Path, what: str) -> None:
    """Poll `ready()` until it is true; ServerUnavailable (with the log's tail) if `proc` exits or
    START_TIMEOUT_S passes first."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise ServerUnavailable(f"{what} did not start (exit status {proc.poll()}): {tail}")
        time.sleep(0.2)


@dataclass(frozen=True)
class Postgres:
    """A running PostgreSQL cluster: superuser `postgres`, trust authentication on 127.0.0.1."""

    port: int

    def url(self, database: str, driver: str = "") -> str:
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database `name`; returns its URL."""
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def accepts(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.url("postgres"), connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False


@contextlib.contextmanager
def postgres_server() -> Iterator[Postgres]:
    """A fresh PostgreSQL cluster in a temporary folder (durability off: test data only)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise ServerUnavailable("psycopg is not installed: pip install -e '.[test]'") from None
    initdb, postgres, as_user = _postgres_bin("initdb"), _postgres_bin("postgres"), _server_user()
    root = Path(tempfile.mkdtemp(prefix="lrlab-pg-"))
    proc = None
    try:
        if as_user:
            os.chown(root, as_user["user"], as_user["group"])
        data, log = root / "data", root / "postgres.log"
        init = subprocess.run(
            [initdb, "-D", data, "-U", "postgres", "--auth=trust", "--no-locale", "-E", "UTF8", "--no-sync"],
            capture_output=True,
            text=True,
            **as_user,
        )
        if init.returncode != 0:
            raise ServerUnavailable(f"PostgreSQL's initdb failed: {init.stderr[-1500:]}")
        server = Postgres(free_port())
        options = ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [postgres, "-D", data, "-h", "127.0.0.1", "-p", str(server.port), "-k", root, *options],
                stdout=out,
                stderr=subprocess.STDOUT,
                **as_user,
            )
        _wait(server.accepts, proc, log, "PostgreSQL")
        yield server
    finally:
        if proc is not None:
            _stop(proc, signal.SIGINT)  # PostgreSQL's fast shutdown: it ends clients' sessions
        shutil.rmtree(root, ignore_errors=True)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def mlflow_server(backend_store_uri: str) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 over `backend_store_uri`, serving its artifacts itself (clients
    upload them over HTTP, as workers on other machines would); yields its URL."""
    root = Path(tempfile.mkdtemp(prefix="lrlab-mlflow-"))
    url = f"http://127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri]
    command += ["--artifacts-destination", str(root / "artifacts"), "--workers", "1"]
    command += ["--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1]]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no background job runner
    proc = None
    try:
        with open(root / "mlflow.log", "w") as out:
            proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True
            )
        _wait(lambda: _healthy(url), proc, root / "mlflow.log", "mlflow server")
        yield url
    finally:
        if proc is not None:
            _stop(proc, group=True)
        shutil.rmtree(root, ignore_errors=True)
