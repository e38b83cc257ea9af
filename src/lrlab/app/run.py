"""Wires a validated config into components: config -> (data, model) -> stages -> engine -> tracking.

Everything that can fail on bad input (config values, model name, weights, data) runs before the
MLflow run is created, and the run always ends FINISHED, FAILED or KILLED.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf

from lrlab.app.build import Setup, _engine, build
from lrlab.app.checkpoint import CheckpointCallback, load_resume
from lrlab.app.console import format_time
from lrlab.app.evaluate import TestReport, evaluate_checkpoint, evaluate_split
from lrlab.app.hooks import RunCallbacks
from lrlab.app.run_record import log_evaluation, log_run_start
from lrlab.app.schema import validate
from lrlab.app.shared_curves import shared_curves
from lrlab.core.distributed import is_main
from lrlab.core.engine import Engine
from lrlab.core.stages import run_stages
from lrlab.core.types import EpochResult
from lrlab.finder.config import FinderConfig
from lrlab.finder.curve_cache import SharedCurves
from lrlab.finder.range_test import find_lr
from lrlab.integrations.mlflow import MlflowTracker, check_tracking_uri, default_tracking_uri
from lrlab.integrations.mlflow_run import SystemMetrics

log = logging.getLogger("lrlab")


@dataclass
class RunResult:
    """What a finished run returns: per-epoch results, the final metrics and where things went."""

    epochs: list[EpochResult]
    final: dict[str, float]
    run_id: str | None = None
    output_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    stages: list[dict[str, Any]] = field(default_factory=list)
    test: dict[str, float] = field(default_factory=dict)  # the final model on the test split, once

    def summary(self) -> dict[str, Any]:
        """Plain data for a sweeper (picklable, YAML-able): final metrics (on valid: what sweeps
        optimise), seconds spent training and in range tests, each stage's chosen LR, rule and
        range-test curve file, and, apart, the test metrics (`test`, empty without a test split),
        which nothing should choose by."""
        train_seconds = sum(r.seconds for r in self.epochs)
        finder_seconds = sum(s.get("finder_seconds", 0.0) for s in self.stages)
        return {
            "metrics": {k: float(v) for k, v in self.final.items()},
            "train_seconds": train_seconds,
            "finder_seconds": finder_seconds,
            "stages": self.stages,
            "test": {k: float(v) for k, v in self.test.items()},
            "run_id": self.run_id,
            "output_dir": str(self.output_dir) if self.output_dir else None,
        }


def _tracking_uri(cfg: DictConfig, launch_dir: Path) -> str | None:
    """The MLflow URI this run records to (checked, so a bad one fails before any work), or None."""
    if cfg.tracking.backend != "mlflow":
        return None
    uri = cfg.tracking.uri or default_tracking_uri(launch_dir)
    check_tracking_uri(uri)
    return uri


def _tracker(
    cfg: DictConfig, uri: str | None, parent_run_id: str | None, run_id: str | None = None
) -> MlflowTracker | None:
    """The run's MLflow tracker: a new run, or (`run_id`, a resumed training) the same run again."""
    if uri is None:
        return None
    if run_id is not None:
        return MlflowTracker(uri, cfg.tracking.experiment, run_id=run_id)
    run_name = cfg.tracking.run_name or f"{cfg.name}-{cfg.task}-{time.strftime('%Y%m%d-%H%M%S')}"
    if cfg.trial.study is not None and not cfg.tracking.run_name:  # a sweep's child: trial-<n>-<source>
        run_name = f"trial-{cfg.trial.number}-{str(cfg.trial.source or 'search').replace(':', '-')}"
    return MlflowTracker(uri, cfg.tracking.experiment, run_name, parent_run_id)


def _system_metrics(cfg: DictConfig, tracker: MlflowTracker | None, resumed: bool) -> SystemMetrics | None:
    """MLflow's system-metrics sampler for the run when `tracking.system_metrics` asks for it."""
    if tracker is None or not cfg.tracking.system_metrics:
        return None
    return SystemMetrics(tracker.uri, tracker.run_id, cfg.tracking.system_metrics_interval, resume=resumed)


def run_experiment(
    cfg: DictConfig,
    output_dir: str | Path,
    launch_dir: str | Path | None = None,
    overrides: list[str] | None = None,
    parent_run_id: str | None = None,
) -> RunResult:
    """Run the task `cfg.task` names (train or lr_find), logging to MLflow unless `tracking=none`."""
    output_dir, launch_dir = Path(output_dir), Path(launch_dir or Path.cwd())
    if cfg.task in ("predict", "evaluate", "export"):
        return _from_checkpoint_task(validate(cfg), output_dir, overrides or [], launch_dir)
    uri = _tracking_uri(cfg, launch_dir)
    setup = build(cfg)
    cfg = setup.cfg
    resume = load_resume(cfg, launch_dir) if cfg.resume else None
    hooks = RunCallbacks.create(setup, output_dir)
    run_id = resume["meta"].get("mlflow_run_id") if resume else None
    tracker = _tracker(cfg, uri, parent_run_id or cfg.tracking.parent_run_id, run_id) if is_main() else None
    engine = _engine(setup, hooks.all(tracker))
    if tracker and hooks.checkpoints:
        hooks.checkpoints.meta["mlflow_run_id"] = tracker.run_id
    status, trial_state = "FAILED", "FAIL"
    monitor = _system_metrics(cfg, tracker, resumed=run_id is not None)
    try:
        if tracker:
            log_run_start(tracker, setup, overrides or [], launch_dir, output_dir)
        if cfg.task == "lr_find":
            result = _lr_find_task(setup, engine, tracker, output_dir)
        else:
            shared = shared_curves(cfg, launch_dir)
            result = _train_task(setup, engine, tracker, hooks.checkpoints, output_dir, resume, shared)
        status, trial_state = "FINISHED", "COMPLETE"
        if tracker and hooks.stopping and hooks.stopping.stops:
            tracker.set_tags({"early_stopping": " | ".join(hooks.stopping.stops.values())})
    except optuna.TrialPruned:
        status, trial_state = "KILLED", "PRUNED"
        raise
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if monitor:
            monitor.stop()
        if tracker:
            if cfg.trial.study is not None:
                tracker.set_tags({"trial.state": trial_state})
            tracker.finish(status)
    result.output_dir = output_dir
    result.stages = hooks.stage_log.stages
    if tracker:
        result.run_id = tracker.run_id
        view = f"mlflow ui --backend-store-uri {tracker.uri}"
        log.info(f"MLflow run {tracker.run_id} in {tracker.uri}  (view: {view})")
    return result


def _checkpoint_tta(cfg: DictConfig, overrides: list[str]) -> str:
    """`train.tta` when given on the command line, else the TTA the checkpoint's own run used (the
    composed default would bring the default problem's recipe, whatever the checkpoint's data)."""
    import yaml

    from lrlab.models.checkpoint import load_checkpoint

    if any(o.lstrip("+~").split("=", 1)[0] == "train.tta" for o in overrides):
        return cfg.train.tta
    saved = yaml.safe_load(load_checkpoint(cfg.checkpoint).get("meta", {}).get("config") or "{}") or {}
    return str((saved.get("train") or {}).get("tta", "none"))


def _from_checkpoint_task(
    cfg: DictConfig, output_dir: Path, overrides: list[str], launch_dir: Path
) -> RunResult:
    """task=predict (image files -> predictions.csv), evaluate (the checkpoint's test split) or
    export (ONNX / TorchScript file + model.json, checked against PyTorch)."""
    from lrlab.core.device import resolve_device
    from lrlab.models.checkpoint import load_model

    device = resolve_device(cfg.device)
    tta = _checkpoint_tta(cfg, overrides) if cfg.task != "export" else "none"  # export: no TTA
    if cfg.task == "evaluate":
        uri = _tracking_uri(cfg, launch_dir)
        loaded = load_model(cfg.checkpoint, device=device)
        report = evaluate_checkpoint(cfg.checkpoint, loaded, output_dir, tta, device)
        run_id = log_evaluation(uri, cfg, loaded.meta, report, overrides, tta) if uri else None
        return RunResult([], {}, output_dir=output_dir, test=report.metrics, run_id=run_id)
    if cfg.task == "export":
        from lrlab.models.export import export_model

        done = export_model(load_model(cfg.checkpoint), output_dir / "export", cfg.format)
        diff = done.max_abs_diff
        check = "not checked" if diff is None else f"max |diff| vs PyTorch {diff:.1e}"
        log.info(f"exported {cfg.format}: {done.path} ({check}); inputs and classes: {done.sidecar}")
        return RunResult([], {}, output_dir=output_dir, extra={"export": str(done.path)})
    from lrlab.app.predict import run_predict

    path = run_predict(cfg.checkpoint, cfg.input, output_dir, tta, device)
    return RunResult([], {}, output_dir=output_dir, extra={"predictions": str(path)})


def _train_task(
    setup: Setup,
    engine: Engine,
    tracker: MlflowTracker | None,
    checkpoints: CheckpointCallback | None,
    output_dir: Path,
    resume: dict[str, Any] | None = None,
    shared: SharedCurves | None = None,
) -> RunResult:
    if resume is not None:
        log.info(f"resuming after epoch {resume['resume']['global_epoch']} from {resume['path']}")
    results = run_stages(
        engine,
        setup.groups,
        setup.train_loader,
        setup.valid_loader,
        setup.stages,
        setup.optimizer,
        setup.schedule,
        finder=finder_config(setup.cfg),
        seed=setup.cfg.seed,
        resume={**resume["resume"], "model": resume["model"]} if resume else None,
        shared=shared,
    )
    final = results[-1].metrics() if results else engine.evaluate(setup.valid_loader)
    report = TestReport()  # under torchrun rank 0 alone reports the test split, whole
    if is_main():
        report = evaluate_split(
            engine,
            setup.test_loader,
            setup.class_names,
            setup.class_groups,
            setup.preprocess,
            output_dir / "evaluation",
        )
    test = report.metrics
    if tracker:
        _log_run_end(tracker, setup.cfg, results, final, checkpoints, test)
        for path in report.files:
            tracker.log_artifact(path, "evaluation")
    total = sum(r.seconds for r in results)
    speed = sum(r.train_images_per_s for r in results) / max(1, len(results))
    per_epoch = total / max(1, len(results))
    metrics = ", ".join(f"{k} {final[k]:.4f}" for k in ("valid_loss", "error_rate", "accuracy"))
    log.info(f"done in {format_time(total)} ({per_epoch:.1f} s/epoch, {speed:.0f} train images/s): {metrics}")
    return RunResult(results, final, test=test)


def finder_config(cfg: DictConfig) -> FinderConfig:
    """The range test's settings from the `lr_finder` config group (whose schema is FinderConfig)."""
    return FinderConfig(**OmegaConf.to_container(cfg.lr_finder, resolve=True))


def _lr_find_task(setup: Setup, engine: Engine, tracker: MlflowTracker | None, output_dir: Path) -> RunResult:
    cfg = setup.cfg
    found = find_lr(
        setup.model,
        setup.train_loader,
        setup.optimizer,
        engine=engine,
        config=finder_config(cfg),
        seed=cfg.seed,
        val_loader=setup.valid_loader,
        progress=engine.progress,
    )
    results = found if isinstance(found, dict) else {"all": found}
    if not is_main():  # every rank has the same curves; rank 0 writes them
        return RunResult([], {}, extra={"lr_finder": results})
    output_dir.mkdir(parents=True, exist_ok=True)
    final: dict[str, float] = {}
    for name, res in results.items():
        label = "" if name == "all" else f" (layer group {name})"
        log.info(f"\nLR range test{label}: {len(res.lrs)} steps, {res.stop_reason}, {res.seconds:.1f}s")
        log.info(res.table())
        suffix = "" if name == "all" else f"_{name}"
        png, csv_path = res.save(
            output_dir, f"lr_find{suffix}", title=f"{cfg.name}: {cfg.model.name} on {cfg.data.name}{label}"
        )
        log.info(f"plot: {png}")
        prefix = "lr_find" if name == "all" else f"lr_find/{name}"
        for rule, lr in res.suggestions.items():
            final[f"{prefix}/suggested_{rule}"] = lr
            if rule in res.spread:
                final[f"{prefix}/log10_iqr_{rule}"] = res.spread[rule]["log10_iqr"]
        final[f"{prefix}/seconds"] = res.seconds
        if tracker:
            tracker.log_artifact(png, "lr_finder")
            tracker.log_artifact(csv_path, "lr_finder")
            tracker.log_params(
                {f"{prefix}.suggestion.{rule}": f"{lr:.6g}" for rule, lr in res.suggestions.items()}
            )
            tracker.set_tags({f"{prefix}.stop_reason": res.stop_reason})
    if tracker:
        for key, value in final.items():
            tracker.log_metric(key, value)
        tracker.flush()
    return RunResult([], final, extra={"lr_finder": results})


def _log_run_end(
    tracker: MlflowTracker,
    cfg: DictConfig,
    results: list[EpochResult],
    final: dict[str, float],
    checkpoints: CheckpointCallback | None,
    test: dict[str, float],
) -> None:
    step = results[-1].epoch if results else 0
    for key, value in final.items():
        tracker.log_metric(f"final_{key}", value, step)
    for key, value in test.items():
        tracker.log_metric(f"test/{key}", value, step)
    if results:
        tracker.log_metric("best_valid_loss", min(r.valid_loss for r in results))
        tracker.log_metric("seconds_per_epoch", sum(r.seconds for r in results) / len(results))
    tracker.log_epoch_table(results)
    if checkpoints and checkpoints.best_path and cfg.tracking.log_model:
        from lrlab.integrations.mlflow_model import log_pytorch_model

        tracker.log_artifact(checkpoints.best_path, "checkpoints")
        tracker.flush()
        name = cfg.tracking.register_model
        logged = log_pytorch_model(tracker.uri, tracker.run_id, checkpoints.best_path, name)
        registered = logged["registered_version"]
        where = f"; registered as {name} v{registered}" if registered else ""
        log.info(f"MLflow model: {logged['model_uri']}{where}")
