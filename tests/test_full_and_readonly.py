"""A full disk and read-only folders: the run's outputs, the MLflow store and the sweep's storage
on a folder that cannot be written are refused before work (exit 2, one paragraph); a disk that
fills mid-run ends the run FAILED with one paragraph naming the file (exit 1). The real cases run
on small tmpfs mounts where the machine allows mounting (root in CI), the checks everywhere."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lrlab.app.cli import unwritable_output
from lrlab.errors import ConfigError, disk_full
from lrlab.integrations.stores import check_writable


def _mount(target: Path, *options: str) -> bool:
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(target)],
                          capture_output=True)  # fmt: skip
    return done.returncode == 0


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """`full`: a 1.2 MB tmpfs; `readonly`: a read-only tmpfs holding an Optuna journal and a
    SQLite file. Skips where mounting is not allowed."""
    full, readonly = tmp_path / "full", tmp_path / "readonly"
    if os.geteuid() != 0 or not _mount(full, "size=1200k"):
        pytest.skip("mounting a tmpfs needs root")
    _mount(readonly, "size=1m")
    (readonly / "study.log").write_text("")
    (readonly / "study.db").write_bytes(b"")
    subprocess.run(["mount", "-o", "remount,ro", str(readonly)], check=True)
    try:
        yield {"full": full, "readonly": readonly}
    finally:
        for target in (full, readonly):
            subprocess.run(["umount", "-l", str(target)], capture_output=True)


def test_disk_full_is_found_behind_torchs_runtime_error() -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos") from None
    except RuntimeError as exc:
        assert disk_full(exc).errno == errno.ENOSPC  # `from None` still keeps the context
    inner = OSError(errno.ENOSPC, "No space left on device")
    outer = RuntimeError("write failed")
    outer.__context__ = inner
    assert disk_full(outer) is inner and disk_full(ValueError("x")) is None


def test_unwritable_folders_are_named_with_the_fix(tmp_path: Path, monkeypatch) -> None:
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != blocked and real_access(p, mode))
    assert unwritable_output(["experiment=smoke"], tmp_path) is None
    message = unwritable_output(["experiment=smoke"], blocked)
    assert "cannot write the run's outputs" in message and "the launch folder" in message
    message = unwritable_output(["-m", f"hydra.sweep.dir={blocked}/sweep"], tmp_path)
    assert f"hydra.sweep.dir={blocked}/sweep" in message and "hydra.sweep.dir=DIR" in message
    assert unwritable_output([f"hydra.run.dir={tmp_path}/new/deeper"], blocked) is None
    with pytest.raises(ConfigError, match=r"hydra.sweeper.storage: the Optuna journal .* is read-only"):
        check_writable(blocked / "study.log", "Optuna journal", "hydra.sweeper.storage")
    check_writable(tmp_path / "a" / "b" / "study.db", "Optuna storage", "hydra.sweeper.storage")


@pytest.mark.slow
def test_read_only_mounts_and_a_full_disk_end_in_one_paragraph(run_cli, mounts, tmp_path: Path) -> None:
    readonly, full = mounts["readonly"], mounts["full"]
    cases = [
        (("experiment=smoke", "tracking=none", f"hydra.run.dir={readonly}/out"),
         "cannot write the run's outputs"),
        (("-m", "experiment=smoke", "lr=1e-3,1e-2", "tracking=none",
          f"hydra.sweeper.storage=journal://{readonly}/study.log"), "the Optuna journal"),
        (("-m", "experiment=smoke", "lr=1e-3,1e-2", "tracking=none",
          f"hydra.sweeper.storage=sqlite:///{readonly}/study.db"), "the Optuna storage"),
    ]  # fmt: skip
    for args, message in cases:
        done = run_cli(*args)
        assert done.returncode == 2, done.stderr[-2000:]
        assert message in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert len(done.stderr.strip().splitlines()) <= 2, done.stderr

    done = run_cli("experiment=smoke", "epochs=4", "train.save_top_k=3", cwd=full, seed_store=False)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "lrlab: error: the disk is full: No space left on device while writing" in done.stderr
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{full / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True)
    assert runs["status"].tolist() == ["FAILED"]
