"""The task table: `task=NAME` runs `TASKS[NAME]`, a function of the `Job` that returns a
`RunResult`. Entries are `module:function` paths, imported when the task runs, so the config check
(which reads the names) stays as light as the CLI. A new task is one module here and one entry."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lrlab.app.job import Job, RunResult

TASKS: dict[str, str] = {
    "train": "lrlab.app.tasks.train:run",
    "lr_find": "lrlab.app.tasks.lr_find:run",
    "evaluate": "lrlab.app.tasks.evaluate:run",
    "predict": "lrlab.app.tasks.predict:run",
    "export": "lrlab.app.tasks.export:run",
}
CHECKPOINT_TASKS = ("predict", "evaluate", "export")  # tasks that read a trained checkpoint


def run_task(job: Job) -> RunResult:
    """Run the task `job.cfg.task` names."""
    module, _, function = TASKS[str(job.cfg.task)].partition(":")
    task: Any = getattr(importlib.import_module(module), function)
    return task(job)
