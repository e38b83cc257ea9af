"""`task=train` (the default): staged training (`lrlab.train.stages`), then the final model on the
test split once, and the run's end record: final and test metrics, `epochs.csv`, the model."""

from __future__ import annotations

import logging
from pathlib import Path

from lrlab.app.build import Setup
from lrlab.app.console import format_time
from lrlab.app.evaluate import TestReport, evaluate_split
from lrlab.app.job import Job, RunResult
from lrlab.app.lifecycle import TrackedRun, tracked_run
from lrlab.app.run_description import run_description
from lrlab.app.shared_curves import shared_curves
from lrlab.core.distributed import is_main
from lrlab.core.types import EpochResult
from lrlab.data.preview import preview_batch
from lrlab.data.types import Normalization
from lrlab.integrations.tracking import Tracker
from lrlab.train.stages import run_stages

log = logging.getLogger("lrlab")
EXAMPLE_IMAGES = 3


def example_images(setup: Setup, count: int = EXAMPLE_IMAGES) -> list[bytes]:
    """The first `count` test images (valid without a test split) as PNG bytes: what a client
    would send the served model."""
    loader = setup.test_loader if setup.test_loader is not None else setup.valid_loader
    if setup.preprocess is None or loader is None:
        return []
    images = next(iter(loader))[0][:count]
    return [setup.preprocess.to_png(image) for image in images]


def log_training_preview(setup: Setup, tracker: Tracker, output_dir: Path) -> Path | None:
    """`data.preview` training images, augmented as training augments them, drawn into
    `data/train_batch.png` of the run directory and logged with the run; the path, or None."""
    count, preprocess = setup.cfg.data.preview, setup.preprocess
    if not count or preprocess is None:
        return None
    norm = Normalization(preprocess.mean, preprocess.std, preprocess.interpolation)
    preview = preview_batch(setup.train_loader, norm, setup.class_names, count, setup.cfg.seed)
    if preview is None:
        return None
    path = preview.save(output_dir / "data" / "train_batch.png")
    tracker.log_artifact(path, "data")
    log.info(f"training images as the model sees them: {path}")
    return path


def run(job: Job) -> RunResult:
    return tracked_run(job, train)


def train(run: TrackedRun) -> RunResult:
    """Run the stages (continuing `run.resume` when given), evaluate on test, record the end."""
    setup, engine = run.setup, run.engine
    if run.resume is not None:
        log.info(f"resuming after epoch {run.resume.global_epoch} from {run.resume.path}")
        _continue_hooks(run)
    elif is_main():
        log_training_preview(setup, run.tracker, run.job.output_dir)
    training = setup.training(shared_curves(setup.cfg, run.job.launch_dir))
    results = run_stages(engine, training, setup.stages, run.resume)
    final = results[-1].metrics() if results else engine.evaluate(setup.valid_loader)
    final_model = None  # the last epoch's
    if setup.cfg.train.restore_best and run.hooks.checkpoints is not None:
        final, final_model = _restore_best(run, final)
    report = TestReport()  # under torchrun rank 0 alone reports the test split, whole
    if is_main():
        report = evaluate_split(
            engine,
            setup.test_loader,
            setup.class_names,
            setup.class_groups,
            setup.preprocess,
            run.job.output_dir / "evaluation",
            paths=setup.test_paths,
        )
    final_checkpoint = run.hooks.checkpoints.save_final() if run.hooks.checkpoints else None
    if final_checkpoint is not None and setup.cfg.tracking.log_model:  # first: the final metrics link to it
        _log_model(run.tracker, final_checkpoint, setup.cfg.tracking.register_model, setup)
    log_run_end(run.tracker, results, final, report.metrics)
    stages = run.hooks.stage_log.stages
    description = run_description(setup, stages, final, report.metrics, run.job.overrides, final_model)
    run.tracker.set_description(description)
    for path in report.files:
        run.tracker.log_artifact(path, "evaluation")
    _log_curves(run)
    table = run.hooks.epoch_table  # rank 0 of a training: kept whole, resumed epochs too
    if table is not None and table.path.exists():
        run.tracker.log_artifact(table.path, None)
    total = sum(r.seconds for r in results)
    speed = sum(r.train_images_per_s for r in results) / max(1, len(results))
    per_epoch = total / max(1, len(results))
    metrics = ", ".join(f"{k} {final[k]:.4f}" for k in ("valid_loss", "error_rate", "accuracy"))
    log.info(f"done in {format_time(total)} ({per_epoch:.1f} s/epoch, {speed:.0f} train images/s): {metrics}")
    return RunResult(results, final, test=report.metrics)


def _continue_hooks(run: TrackedRun) -> None:
    """A resumed training's best epoch, top-k and early-stopping wait start where the interrupted
    run left them, not afresh."""
    resume = run.resume
    if run.hooks.checkpoints is not None:
        run.hooks.checkpoints.continue_from(resume)
    if run.hooks.stopping is not None and resume.stage_epochs_done:
        run.hooks.stopping.resume_stage(resume.history[-resume.stage_epochs_done :])


def _restore_best(run: TrackedRun, final: dict[str, float]) -> tuple[dict[str, float], str | None]:
    """train.restore_best: the best epoch's weights become the final model (rank 0, which alone
    reports the test split); its valid metrics are then the final ones. Also says which epoch."""
    best = run.hooks.checkpoints.restore_best(run.engine.model)
    if best is None:
        log.info("train.restore_best: no best epoch in this process; the last epoch's model stays")
        return final, None
    which = f"epoch {best['epoch']} ({best['stage']}), the best by {run.hooks.checkpoints.monitor.metric}"
    log.info(f"train.restore_best: the final model is {which}")
    return dict(best["metrics"]), f"{which} (train.restore_best)"


def _log_curves(run: TrackedRun) -> None:
    """training_curves.png in the run directory and the run (rank 0 of a training that stepped)."""
    if run.hooks.curves is None:
        return
    since = f"since the resume after epoch {run.resume.global_epoch}" if run.resume is not None else None
    checkpoints, best = run.hooks.checkpoints, None
    if checkpoints is not None and checkpoints.best_epoch is not None:
        kept = "the final model" if run.setup.cfg.train.restore_best else "best.pt"
        best = (
            checkpoints.best_epoch,
            f"{kept}: epoch {checkpoints.best_epoch}, best {checkpoints.monitor.metric}",
        )
    path = run.hooks.curves.save(run.job.output_dir / "training_curves.png", since, best)
    if path is not None:
        run.tracker.log_artifact(path, None)
        log.info(f"training curves: {path}")


def log_run_end(
    tracker: Tracker, results: list[EpochResult], final: dict[str, float], test: dict[str, float]
) -> None:
    """Final (valid) and test metrics, the best valid loss and seconds per epoch."""
    step = results[-1].epoch if results else 0
    tracker.log_split_metrics({f"final_{key}": value for key, value in final.items()}, "valid", step)
    tracker.log_split_metrics({f"test/{key}": value for key, value in test.items()}, "test", step)
    if results:
        tracker.log_metric("best_valid_loss", min(r.valid_loss for r in results))
        tracker.log_metric("seconds_per_epoch", sum(r.seconds for r in results) / len(results))


def _log_model(tracker: Tracker, checkpoint: Path, registered_name: str | None, setup: Setup) -> None:
    """The final model's checkpoint and the model in the tracker's model format (registered when a
    name is given), with the first test images as its input example: the model the test split
    scored, so the metrics linked to it are its own."""
    where = tracker.log_model(checkpoint, registered_name, example_images(setup))
    if where:
        log.info(where)
