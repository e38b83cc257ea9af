"""What `checkpoint=` names for the checkpoint tasks (predict, evaluate, export): a file, or a
tracked run or model (`runs:/<run id>`, `models:/<name>/<version>`), fetched from the run's store
into the task's run directory first."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from lrlab.app.job import Job
from lrlab.integrations.tracking import get_backend, is_tracked

log = logging.getLogger("lrlab")


def local_checkpoint(cfg: DictConfig, job: Job) -> str:
    """The checkpoint file the task reads: `cfg.checkpoint` itself, or its copy fetched from the
    store (`tracking.uri`, by default the launch folder's) into `<run dir>/checkpoint/`."""
    if not is_tracked(cfg.checkpoint):
        return str(cfg.checkpoint)
    backend = get_backend(cfg.tracking.backend)
    uri = backend.resolve_uri(cfg.tracking.uri, job.launch_dir)
    path = backend.fetch_checkpoint(uri, str(cfg.checkpoint), job.output_dir / "checkpoint")
    log.info(f"checkpoint {cfg.checkpoint} from {uri}: {path}")
    return str(path)
