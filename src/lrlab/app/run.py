"""`run_experiment`: run the task a config names (the task table in `lrlab.app.tasks`), as the CLI
does inside a Hydra job and a notebook can without Hydra's launcher."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from lrlab.app.job import Job, RunResult
from lrlab.app.tasks import run_task

__all__ = ["RunResult", "run_experiment"]


def run_experiment(
    cfg: DictConfig,
    output_dir: str | Path,
    launch_dir: str | Path | None = None,
    overrides: list[str] | None = None,
    parent_run_id: str | None = None,
) -> RunResult:
    """Run the task `cfg.task` names (train, lr_find, batch_size, evaluate, predict, export),
    recording to the tracking backend `cfg.tracking.backend` names; `launch_dir` (default: the
    working directory) is where the default stores live."""
    job = Job(cfg, Path(output_dir), Path(launch_dir or Path.cwd()), list(overrides or []), parent_run_id)
    return run_task(job)
