"""The config checks of the files a run reads before it starts: the checkpoint and input of the
checkpoint tasks and the `last.pt` that `resume=` continues, so a wrong path fails in one paragraph
before any model is built."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from lrlab.app.tasks import CHECKPOINT_TASKS
from lrlab.errors import ConfigError
from lrlab.integrations.tracking import is_tracked


def check_paths(merged: DictConfig) -> None:
    """ConfigError naming the key when a file the task reads is missing (a `runs:/` checkpoint is
    fetched from the store by the task, which names what is missing there)."""
    if merged.task in CHECKPOINT_TASKS:
        for key in ("checkpoint", "input") if merged.task == "predict" else ("checkpoint",):
            if key == "checkpoint" and is_tracked(merged[key]):
                continue
            if merged[key] is None or not Path(str(merged[key])).expanduser().exists():
                wanted = (
                    "checkpoint (e.g. outputs/<date>/<time>/checkpoints/final.pt, or runs:/<run id>)"
                    if key == "checkpoint"
                    else "image file or folder"
                )
                raise ConfigError(
                    f"task={merged.task} needs {key}=PATH of an existing {wanted}; got {key}={merged[key]!r}."
                )
    resume = merged.resume
    if resume and str(resume) != "auto" and not Path(str(resume)).expanduser().is_file():
        raise ConfigError(
            f"resume={resume!r} is not a file: pass resume=PATH/TO/checkpoints/last.pt of the "
            "interrupted run, or resume=auto (the newest last.pt under outputs/ from a run with this config)."
        )
    if str(resume) == "auto" and not merged.train.checkpoints:
        raise ConfigError(
            "resume=auto needs train.checkpoints=true: without last.pt an interrupted run leaves nothing to "
            "continue, and every resubmission would start over."
        )
