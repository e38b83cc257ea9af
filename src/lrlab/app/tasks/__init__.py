"""The task table: `task=NAME` runs `TASKS[NAME]`, a function of the `Job` that returns a
`RunResult`. Entries are `module:function` paths, imported when the task runs, so the config check
(which reads the names) stays as light as the CLI. A new task is one module here and one entry."""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from lrlab.errors import check_choice

if TYPE_CHECKING:
    from lrlab.app.job import Job, RunResult

TASKS: dict[str, str] = {
    "train": "lrlab.app.tasks.train:run",
    "lr_find": "lrlab.app.tasks.lr_find:run",
    "batch_size": "lrlab.app.tasks.batch_size:run",
    "evaluate": "lrlab.app.tasks.evaluate:run",
    "predict": "lrlab.app.tasks.predict:run",
    "export": "lrlab.app.tasks.export:run",
}
CHECKPOINT_TASKS = ("predict", "evaluate", "export")  # tasks that read a trained checkpoint
# The config keys (and key prefixes) each checkpoint task reads: the checkpoint brings the model, its
# preprocessing and (for evaluate) its data, so any other override on its command line does nothing.
# `tracking` is not named where nothing is tracked: `tracking=none` there asks for what happens.
CHECKPOINT_TASK_KEYS: dict[str, tuple[str, ...]] = {
    "predict": (
        "checkpoint",
        "input",
        "device",
        "train.tta",
        "tracking",
        "data.batch_size",
        "data.num_workers",
    ),
    "evaluate": ("checkpoint", "device", "train.tta", "tracking", "data"),
    "export": ("checkpoint", "format", "tracking"),
}
_ANY_TASK_KEYS = ("task", "trial")  # trial.*: a sweep's bookkeeping


def override_key(override: str) -> str:
    """The key a command-line override sets (`+train.tta=hflip` -> `train.tta`, `data=x` -> `data`)."""
    return override.lstrip("+~").split("=", 1)[0]


def unused_overrides(task: str, overrides: list[str]) -> list[str]:
    """The command-line overrides that `task` does not read (empty for a task that reads the whole
    config, such as train)."""
    read = CHECKPOINT_TASK_KEYS.get(task)
    if read is None:
        return []
    known = (*read, *_ANY_TASK_KEYS)
    unused = []
    for override in overrides:
        key = override_key(override)
        if not any(key == k or key.startswith(f"{k}.") for k in known):
            unused.append(override)
    return unused


def run_task(job: Job) -> RunResult:
    """Run the task `job.cfg.task` names; overrides it does not read are named in a warning."""
    name = check_choice(job.cfg.task, tuple(TASKS), "task")
    unused = unused_overrides(name, job.overrides)
    if unused:
        logging.getLogger("lrlab").warning(
            "not used by task=%s, whose checkpoint brings the model and its preprocessing: %s",
            job.cfg.task,
            " ".join(unused),
        )
    module, _, function = TASKS[name].partition(":")
    task: Any = getattr(importlib.import_module(module), function)
    return task(job)
