"""`task=export checkpoint=PATH format=onnx|torchscript`: the checkpoint's model as one portable
file returning class probabilities (its run's TTA inside) plus `model.json` (inputs, preprocessing,
classes), checked against PyTorch."""

from __future__ import annotations

import logging

from lrlab.app.job import Job, RunResult
from lrlab.app.schema import validate
from lrlab.app.tasks.checkpoint_ref import local_checkpoint
from lrlab.errors import LrlabError
from lrlab.models.checkpoint import load_model
from lrlab.models.export import export_model

log = logging.getLogger("lrlab")


def run(job: Job) -> RunResult:
    cfg = validate(job.cfg)
    folder = job.output_dir / "export"
    if folder.exists() and not folder.is_dir():
        raise LrlabError(
            f"{folder} is a file, where task=export writes its folder: move it, or set hydra.run.dir."
        )
    done = export_model(load_model(local_checkpoint(cfg, job)), folder, cfg.format)
    diff = done.max_abs_diff
    check = "not checked" if diff is None else f"max |diff| vs PyTorch {diff:.1e}"
    log.info(f"exported {cfg.format}: {done.path} ({check}); inputs and classes: {done.sidecar}")
    return RunResult([], {}, output_dir=job.output_dir, extra={"export": str(done.path)})
