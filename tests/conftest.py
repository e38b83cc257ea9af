"""Shared fixtures: offline environment, config composition, and a CLI runner."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from lrlab.app.cli import CONFIG_DIR
from lrlab.core.host_memory import hold_freed_memory

# Tests must never reach the network: hub clients fail fast instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Under pytest-xdist each worker gets its share of the cores, and so do the lrlab processes it
# starts (they inherit OMP_NUM_THREADS): workers x threads never exceeds the machine.
if os.environ.get("PYTEST_XDIST_WORKER"):
    _share = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    os.environ["OMP_NUM_THREADS"] = str(min(2, _share))
    torch.set_num_threads(min(2, _share))
else:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
# The tests' own trainings run as the lrlab command's do, with freed host memory held for reuse.
hold_freed_memory()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def compose_cfg():
    """Compose lrlab's config with overrides, as the CLI would (without running Hydra's job)."""

    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))

    return _compose


_EMPTY_STORES: list[Path] = []


def seed_mlflow_store(directory: Path) -> None:
    """Put an empty, already migrated MLflow SQLite store at `directory/mlflow.db` unless a file is
    there: MLflow spends ~5 s of a CLI test creating and migrating a new store, the same each time."""
    target = directory / "mlflow.db"
    if target.exists():
        return
    if not _EMPTY_STORES:
        from mlflow.tracking import MlflowClient

        folder = tempfile.mkdtemp(prefix="lrlab-empty-store-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        template = Path(folder) / "mlflow.db"
        MlflowClient(f"sqlite:///{template}").search_experiments(max_results=1)
        _EMPTY_STORES.append(template)
    shutil.copyfile(_EMPTY_STORES[0], target)


@pytest.fixture
def run_cli(tmp_path: Path):
    """Run `python -m lrlab ARGS` in `tmp_path` (a migrated, empty MLflow store seeded there unless
    `seed_store=False`); returns the CompletedProcess."""

    def _run(
        *args: str, cwd: Path | None = None, timeout: int = 300, seed_store: bool = True
    ) -> subprocess.CompletedProcess:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        if seed_store:
            seed_mlflow_store(cwd or tmp_path)
        return subprocess.run(
            [sys.executable, "-m", "lrlab", *args],
            cwd=cwd or tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return _run


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Path]:
    """A directory for a study's storage or an MLflow store: on a RAM disk where there is one (real
    SQLite, without the fsyncs that make each trial cost a second on a disk), else `tmp_path`."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    directory = Path(tempfile.mkdtemp(dir=shm, prefix="lrlab-test-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def spawn_lrlab(*args: str, cwd: Path, seed_store: bool = True) -> subprocess.Popen:
    """Start `python -m lrlab ARGS` in the background, stdout and stderr merged (a migrated, empty
    MLflow store seeded in `cwd` unless `seed_store=False`). A shell without job control starts
    background jobs with SIGINT ignored; the child gets the default disposition so tests see what
    Ctrl-C does in a terminal."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    if seed_store:
        seed_mlflow_store(cwd)
    return subprocess.Popen(
        [sys.executable, "-m", "lrlab", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def terminate_after_second_epoch(*args: str, cwd: Path, seed_store: bool = True) -> int:
    """Run `python -m lrlab ARGS` until it prints its second epoch's row (epochs 0 and 1 saved),
    then send SIGTERM, as a scheduler would; returns its exit code (143 when it stopped cleanly)."""
    proc = spawn_lrlab(*args, cwd=cwd, seed_store=seed_store)
    try:
        for line in proc.stdout:
            if line.startswith("1 "):
                break
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    finally:
        proc.kill()
    return proc.returncode


def run_lrlab_report(target: str, cwd: Path) -> subprocess.CompletedProcess:
    """`lrlab-report TARGET` (a sweep directory or a parent run id), offline, in `cwd`."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "lrlab.sweep.report", target],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def digits():
    """320 training and 64 valid 8x8 digits: a real dataset small enough for staged-training tests."""
    from lrlab.data.sources import load_digits
    from lrlab.data.types import ImageSource, TensorSplit

    full = load_digits(image_size=8)
    return ImageSource(
        TensorSplit(full.train.images[:320], full.train.labels[:320]),
        TensorSplit(full.valid.images[:64], full.valid.labels[:64]),
        full.class_names,
    )


def predict_to_csv(run_cli, checkpoint: Path, folder: Path, outputs: Path, class_names: list[str]):
    """`task=predict` on `folder` from the CLI: the CSV's rows and its (N, classes) probabilities."""
    import csv

    import numpy as np

    predicted = run_cli("task=predict", f"checkpoint={checkpoint}", f"input={folder}", "tracking=none")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    with next(outputs.rglob("predictions.csv")).open() as handle:
        rows = list(csv.DictReader(handle))
    return rows, np.array([[float(r[f"p_{name}"]) for name in class_names] for r in rows])


def write_image_tree(root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 6) -> None:
    """ROOT/<class>/<i>.png: `per_class` random 24x20 RGB images per class (fixed seed)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def image_folder_config(root: Path, **changes: object) -> dict:
    """An imagefolder data config for `write_image_tree`'s tree: 16 px, batches of 4, read from
    files with timm's transforms (flips, crops of half the image or more), no loader workers."""
    return {
        "name": "imagefolder",
        "root": str(root),
        "image_size": 16,
        "batch_size": 4,
        "num_workers": 0,
        "valid_pct": 0.25,
        "split_seed": 0,
        "in_memory": False,
        "augment": {"hflip": 0.5, "scale": [0.5, 1.0]},
        **changes,
    }
