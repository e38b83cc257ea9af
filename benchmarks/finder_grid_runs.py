"""Running lrlab for the finder-vs-grid benchmark (`finder_vs_grid.py`) and timing it: the `lrlab`
command in a subprocess with its output echoed and logged, a study's progress, and the seconds per
piece of a job (range tests, epochs, overhead) that `plan` turns into an estimate and `measure`
writes to `<bench dir>/timings.json`."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finder_grid_analysis import load_trials


@dataclass(frozen=True)
class Timing:
    """Seconds per piece of one job, from `measure` (1+1 and 1+3 epoch finder runs)."""

    rt_head: float  # the head stage's range test
    rt_unfrozen: float  # the unfrozen stage's range test (finder runs only)
    head_epoch: float
    unfrozen_epoch: float
    overhead: float  # per job: model, data, test evaluation, tracking
    startup: float  # per lrlab process


MEASURED = {
    # `measure` on 2 CPU cores (lrlab's dev machine, nothing else running, 2026-11-26); rerun it for yours.
    "elpv4": Timing(5.4, 10.2, 1.7, 5.4, 6.3, 5.4),
    "elpv2": Timing(6.4, 10.9, 2.1, 6.4, 6.1, 4.5),
    "digits": Timing(4.5, 8.4, 0.3, 1.7, 3.2, 4.3),
    "mnist5k": Timing(4.2, 7.9, 2.2, 3.7, 3.2, 4.2),
}


def lrlab_executable() -> list[str]:
    """The `lrlab` script of this interpreter's environment, else `python -m lrlab` (the same)."""
    script = Path(sys.executable).parent / "lrlab"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "lrlab"]


def load_timings(bench: Path) -> dict[str, Timing]:
    """`MEASURED`, updated by `<bench dir>/timings.json` from `measure` where present."""
    path = bench / "timings.json"
    measured = dict(MEASURED)
    if path.is_file():
        measured.update({k: Timing(**v) for k, v in json.loads(path.read_text()).items()})
    return measured


def complete_trials(storage: str, study: str) -> int:
    """COMPLETE trials of a study, 0 when the study (or its database) does not exist yet."""
    import optuna
    from optuna.trial import TrialState

    path = Path(storage.removeprefix("sqlite:///"))
    if storage.startswith("sqlite:///") and not path.is_file():
        return 0
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        found = optuna.load_study(study_name=study, storage=storage)
    except KeyError:
        return 0
    return len(found.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def run_lrlab(args: Sequence[str], bench: Path, log_path: Path) -> int:
    """Run lrlab from `bench`, echoing its output to the console and `log_path`; its exit status."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with (
        log_path.open("a") as log,
        subprocess.Popen(
            [*lrlab_executable(), *args],
            cwd=bench,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as proc,
    ):
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
        return proc.wait()


def delete_study(storage: str, study: str) -> None:
    """Remove a study (to measure afresh); nothing when there is none."""
    import optuna

    if complete_trials(storage, study) or Path(storage.removeprefix("sqlite:///")).is_file():
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=study, storage=storage)


def measured_timing(storage: str, study_name: str, wall: float) -> dict[str, float]:
    """Per-piece seconds (the fields of `Timing`) from a study of finder runs that
    differ only in `epochs` (freeze_epochs=1), and the whole process's wall-clock seconds."""
    trials = {int(t.params["epochs"]): t for t in load_trials(storage, study_name)}
    if len(trials) < 2:
        raise ValueError(f"study {study_name}: need complete runs at two values of epochs")
    low, high = min(trials), max(trials)

    def seconds(t: Any, key: str) -> float:
        return float(t.user_attrs.get(key) or 0)

    unfrozen = (seconds(trials[high], "train_seconds") - seconds(trials[low], "train_seconds")) / (high - low)
    tests = [[float(s.get("finder_seconds", 0)) for s in t.user_attrs["stages"]] for t in trials.values()]
    walls = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials.values()]
    busy = [seconds(t, "train_seconds") + seconds(t, "finder_seconds") for t in trials.values()]
    return {
        "rt_head": float(np.mean([t[0] for t in tests])),
        "rt_unfrozen": float(np.mean([t[-1] for t in tests])),
        "head_epoch": max(0.0, seconds(trials[low], "train_seconds") - low * unfrozen),
        "unfrozen_epoch": unfrozen,
        "overhead": float(np.mean([w - b for w, b in zip(walls, busy)])),
        "startup": max(0.0, wall - sum(walls)),
    }
