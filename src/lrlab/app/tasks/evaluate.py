"""`task=evaluate checkpoint=PATH`: the checkpoint's model on its own data's test split (rebuilt
from the config saved in it), recorded as its own run in the experiment that trained it."""

from __future__ import annotations

from lrlab.app.evaluate import evaluate_checkpoint
from lrlab.app.job import Job, RunResult
from lrlab.app.run_record import log_evaluation
from lrlab.app.schema import validate
from lrlab.app.tasks.checkpoint_tta import checkpoint_tta
from lrlab.core.device import resolve_device
from lrlab.integrations.tracking import get_backend
from lrlab.models.checkpoint import load_model


def run(job: Job) -> RunResult:
    cfg = validate(job.cfg)
    device = resolve_device(cfg.device)
    uri = get_backend(cfg.tracking.backend).resolve_uri(cfg.tracking.uri, job.launch_dir)
    loaded = load_model(cfg.checkpoint, device=device)  # the one read of the checkpoint
    tta = checkpoint_tta(cfg, job.overrides, loaded)
    report = evaluate_checkpoint(cfg.checkpoint, loaded, job.output_dir, tta, device)
    run_id = log_evaluation(uri, cfg, loaded.meta, report, job.overrides, tta)
    return RunResult([], {}, output_dir=job.output_dir, test=report.metrics, run_id=run_id)
