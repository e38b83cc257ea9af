"""Running lrlab for the finder benchmark (`finder_vs_grid.py`): the `lrlab` command in a
subprocess with its output echoed and logged, and a study's progress."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def lrlab_executable() -> list[str]:
    """The `lrlab` script of this interpreter's environment, else `python -m lrlab` (the same)."""
    script = Path(sys.executable).parent / "lrlab"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "lrlab"]


def settled_trials(storage: str, study: str) -> int:
    """Finished trials of a study: COMPLETE, and PRUNED (a diverged run counts as a result)."""
    return _count_trials(storage, study, ("COMPLETE", "PRUNED"))


def _count_trials(storage: str, study: str, states: Sequence[str]) -> int:
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
    return len(found.get_trials(deepcopy=False, states=tuple(TrialState[s] for s in states)))


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
