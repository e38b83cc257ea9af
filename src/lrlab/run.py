"""Wires a validated config into components: config -> (data, model) -> stages -> engine -> tracking.

Everything that can fail on bad input (config values, model name, weights, data) runs before the
MLflow run is created, and the run always ends FINISHED, FAILED or KILLED.
"""

from __future__ import annotations

import logging
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lrlab.checkpoint import CheckpointCallback
from lrlab.config import validate
from lrlab.data import load_source, make_loaders
from lrlab.engine import Engine, EpochResult, resolve_device, resolve_precision
from lrlab.models import count_parameters, create_model, layer_groups, model_summary, normalization, to_device
from lrlab.optim import build_optimizer
from lrlab.progress import ConsoleTable, format_time
from lrlab.reproducibility import seed_everything
from lrlab.tracking import MlflowTracker, default_tracking_uri, provenance_tags
from lrlab.transfer import Stage, run_stages

log = logging.getLogger("lrlab")


@dataclass
class RunResult:
    """What a finished run returns: per-epoch results, the final metrics and where things went."""

    epochs: list[EpochResult]
    final: dict[str, float]
    run_id: str | None = None
    output_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _progress_enabled(setting: Any) -> bool:
    if isinstance(setting, bool):
        return setting
    return sys.stderr.isatty()


def run_experiment(
    cfg: DictConfig,
    output_dir: str | Path,
    launch_dir: str | Path | None = None,
    overrides: list[str] | None = None,
    parent_run_id: str | None = None,
) -> RunResult:
    """Train as `cfg` says, logging to MLflow unless `tracking.backend=none`."""
    cfg = validate(cfg)
    output_dir, launch_dir = Path(output_dir), Path(launch_dir or Path.cwd())
    seed_everything(cfg.seed, cfg.deterministic)
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)

    started = time.perf_counter()
    source = load_source(OmegaConf.to_container(cfg.data, resolve=True))
    model = create_model(cfg.model.name, source.num_classes, cfg.model.pretrained, cfg.model.drop_rate, cfg.model.drop_path_rate)
    groups = layer_groups(model, cfg.model.body_groups)
    norm = normalization(model)
    model = to_device(model, device, cfg.train.channels_last)
    data_device = device if cfg.data.in_memory else "cpu"
    train_loader, valid_loader = make_loaders(source, OmegaConf.to_container(cfg.data, resolve=True), norm, data_device, cfg.seed)
    optimizer = build_optimizer(instantiate(cfg.optimizer), model, groups, lr=float(cfg.stages[0].lr))
    schedule = instantiate(cfg.schedule)
    stages = [Stage(**OmegaConf.to_container(s, resolve=True)) for s in cfg.stages]
    log.info(
        f"lrlab: {cfg.model.name} ({count_parameters(model):,d} params, pretrained={cfg.model.pretrained}) on "
        f"{cfg.data.name} ({len(source.train)} train / {len(source.valid)} valid, {source.num_classes} classes, "
        f"{cfg.data.image_size} px) | device {device}, precision {precision} | setup {time.perf_counter() - started:.1f}s"
    )
    log.info("layer groups:\n" + model_summary(model, groups))

    callbacks: list[Any] = [ConsoleTable()]
    checkpoints = CheckpointCallback(output_dir / "checkpoints") if cfg.train.checkpoints else None
    if checkpoints:
        callbacks.append(checkpoints)
    tracker: MlflowTracker | None = None
    if cfg.tracking.backend == "mlflow":
        uri = cfg.tracking.uri or default_tracking_uri(launch_dir)
        run_name = cfg.tracking.run_name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        tracker = MlflowTracker(uri, cfg.tracking.experiment, run_name, parent_run_id)
        callbacks.append(tracker)
    engine = Engine(
        model, device, precision, grad_accum=cfg.train.grad_accum, grad_clip=cfg.train.grad_clip,
        channels_last=cfg.train.channels_last, compile=cfg.train.compile, log_every=cfg.train.log_every,
        progress=_progress_enabled(cfg.train.progress), callbacks=callbacks,
    )
    status = "FAILED"
    try:
        if tracker:
            _log_run_start(tracker, cfg, overrides or [], launch_dir, device, precision, output_dir)
        results = run_stages(engine, groups, train_loader, valid_loader, stages, optimizer, schedule)
        final = results[-1].metrics() if results else engine.evaluate(valid_loader)
        if tracker:
            _log_run_end(tracker, cfg, results, final, checkpoints, output_dir)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if tracker:
            tracker.finish(status)
    total = sum(r.seconds for r in results)
    log.info(
        f"done in {format_time(total)}: valid_loss {final['valid_loss']:.4f}, error_rate {final['error_rate']:.4f}, "
        f"accuracy {final['accuracy']:.4f}"
    )
    if tracker:
        log.info(f"MLflow run {tracker.run_id} in {tracker.uri}  (view: mlflow ui --backend-store-uri {tracker.uri})")
    return RunResult(results, final, tracker.run_id if tracker else None, output_dir)


def _log_run_start(tracker: MlflowTracker, cfg: DictConfig, overrides: list[str], launch_dir: Path,
                   device: torch.device, precision: str, output_dir: Path) -> None:
    container = OmegaConf.to_container(cfg, resolve=True)
    tracker.log_params(container)
    tracker.set_tags({
        **provenance_tags(launch_dir), "device": str(device), "precision": precision, "seed": cfg.seed,
        "overrides": " ".join(overrides), "output_dir": str(output_dir), "python": platform.python_version(),
        "task": cfg.task,
    })
    tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config/config.yaml")
    tracker.log_text(OmegaConf.to_yaml(OmegaConf.create(list(overrides))), "config/overrides.yaml")


def _log_run_end(tracker: MlflowTracker, cfg: DictConfig, results: list[EpochResult], final: dict[str, float],
                 checkpoints: CheckpointCallback | None, output_dir: Path) -> None:
    for key, value in final.items():
        tracker.log_metric(f"final_{key}", value, results[-1].epoch if results else 0)
    if results:
        tracker.log_metric("best_valid_loss", min(r.valid_loss for r in results))
        tracker.log_metric("seconds_per_epoch", sum(r.seconds for r in results) / len(results))
    tracker.log_epoch_table(results)
    if checkpoints and checkpoints.best_path and cfg.tracking.log_model:
        tracker.log_artifact(checkpoints.best_path, "model")
