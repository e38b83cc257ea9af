"""A run's record in its tracker (whichever backend `tracking.backend` names): the run opened and
named, and what it records when it starts: the params that apply to it (keys of other tasks, of
sweeps when it is not a trial, of the range test when no stage runs one are left out rather than
logged with values that mislead), tags, dataset inputs and config; and `task=evaluate`'s own run."""

from __future__ import annotations

import logging
import platform
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lrlab.app.build import Setup
from lrlab.app.evaluate import TestReport
from lrlab.core.distributed import world_size
from lrlab.core.reproducibility import machine_fingerprint
from lrlab.integrations.provenance import provenance_tags
from lrlab.integrations.tracking import Tracker, get_backend
from lrlab.train.stage import uses_range_test

CHECKPOINT_TASK_KEYS = ("checkpoint", "format", "input")  # predict / evaluate / export only
log = logging.getLogger("lrlab")


def run_name(cfg: DictConfig) -> str:
    """`tracking.run_name`, else `<name>-<task>-<time>`, or for a sweep's trial `trial-<n>-<source>`."""
    if cfg.tracking.run_name:
        return str(cfg.tracking.run_name)
    if cfg.trial.study is not None:
        return f"trial-{cfg.trial.number}-{str(cfg.trial.source or 'search').replace(':', '-')}"
    return f"{cfg.name}-{cfg.task}-{time.strftime('%Y%m%d-%H%M%S')}"


def open_tracker(cfg: DictConfig, uri: str | None, parent_run_id: str | None, run_id: str | None) -> Tracker:
    """The run's tracker: a new run, or (`run_id`, a resumed training) the same run again."""
    backend = get_backend(cfg.tracking.backend)
    if run_id is not None:
        return backend.open_run(uri, cfg.tracking.experiment, run_id=run_id)
    return backend.open_run(uri, cfg.tracking.experiment, run_name(cfg), parent_run_id)


def run_params(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as a dict, without the keys that do not apply to this run."""
    params = OmegaConf.to_container(cfg, resolve=True)
    params.pop("resume", None)  # not a param: a resumed run logs into the same run
    for key in CHECKPOINT_TASK_KEYS:
        params.pop(key, None)
    if cfg.trial.study is None:
        params.pop("trial", None)
    stages = params.get("stages", [])
    uses_finder = cfg.task == "lr_find" or any(
        uses_range_test(s.get("lr")) or s.get("lr_rule") for s in stages
    )
    if not uses_finder:
        params.pop("lr_finder", None)
    if not any(str(s.get("lr")) == "auto" for s in stages):
        params.pop("lr_auto", None)
    if cfg.task != "batch_size":
        params.pop("batch_finder", None)
    return params


def _without(params: dict[str, Any], keys: Mapping[str, Any]) -> dict[str, Any]:
    """`params` (nested) less the dotted `keys` (`stages.0.epochs`), which MLflow would refuse to
    log again with a new value."""
    for key in keys:
        *path, last = key.split(".")
        node: Any = params
        for part in path:
            if isinstance(node, list):
                node = node[int(part)] if part.isdigit() and int(part) < len(node) else {}
            else:
                node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    return params


def log_run_start(
    tracker: Tracker,
    setup: Setup,
    overrides: list[str],
    launch_dir: Path,
    output_dir: Path,
    changes: Mapping[str, tuple[Any, Any]] | None = None,
) -> None:
    """Params, tags (provenance, machine, user and source, trial), dataset inputs and the config
    files of a run that starts (or resumes) logging. `changes`: keys a resumed training changed
    (key -> (checkpoint's, now)), recorded as `resume.changed.<key>` tags instead of params."""
    cfg, changes = setup.cfg, dict(changes or {})
    tracker.log_params(_without(run_params(cfg), changes))
    if cfg.resume:
        tracker.set_tags({"resumed_from": str(cfg.resume)})
        tracker.set_tags({f"resume.changed.{k}": f"{old} -> {new}" for k, (old, new) in changes.items()})
    tracker.set_tags(
        {
            **provenance_tags(launch_dir),
            **machine_fingerprint(),
            "device": str(setup.device),
            "precision": setup.precision,
            "seed": cfg.seed,
            "overrides": " ".join(overrides),
            "output_dir": str(output_dir),
            "python": platform.python_version(),
            "task": cfg.task,
            "distributed.world_size": world_size(),
        }
    )
    tracker.log_params({f"split.{name}": size for name, size in setup.split_sizes.items()})
    data = OmegaConf.to_container(cfg.data, resolve=True)
    if setup.split_digests:
        tracker.log_datasets(str(cfg.data.name), setup.split_digests, setup.split_sizes, data)
    if cfg.trial.study is not None:
        tracker.set_tags(
            {
                "trial.study": cfg.trial.study,
                "trial.number": cfg.trial.number,
                "trial.source": cfg.trial.source or "search",
                "trial.state": "RUNNING",
            }
        )
    tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config/config.yaml")
    tracker.log_text(OmegaConf.to_yaml(OmegaConf.create(list(overrides))), "config/overrides.yaml")


def log_evaluation(
    uri: str | None,
    cfg: DictConfig,
    meta: dict[str, Any],
    report: TestReport,
    overrides: list[str],
    tta: str,
    data: dict[str, Any] | None = None,
    output_dir: Path | None = None,
) -> str | None:
    """`task=evaluate` as its own MLflow run, in the experiment of the run that trained the
    checkpoint (`meta`: the checkpoint's metadata) and tagged with that run's id: the test metrics,
    the evaluation files and the console (`output_dir`'s log); `data`, when not the checkpoint's
    own, is tagged `evaluated_on`."""
    trained = OmegaConf.create(meta.get("config") or "{}")
    experiment = OmegaConf.select(trained, "tracking.experiment", default=None) or cfg.tracking.experiment
    name = cfg.tracking.run_name or f"{OmegaConf.select(trained, 'name', default='lrlab')}-evaluate"
    tracker = get_backend(cfg.tracking.backend).open_run(uri, str(experiment), run_name=name)
    tags = {"task": "evaluate", "checkpoint": str(cfg.checkpoint), "tta": tta}
    tags["overrides"] = " ".join(overrides)
    if data is not None:
        tags["evaluated_on"] = " ".join(f"{k}={data[k]}" for k in ("name", "root") if data.get(k) is not None)
    if meta.get("mlflow_run_id"):
        tags["source_run_id"] = meta["mlflow_run_id"]
    tracker.set_tags(tags)
    for key, value in report.metrics.items():
        tracker.log_metric(f"test/{key}", value)
    for path in report.files:
        tracker.log_artifact(path, "evaluation")
    if output_dir is not None:
        log_console(tracker, output_dir, "logs/lrlab.log", None)
    tracker.finish("FINISHED")
    return tracker.run_id


def run_log_file(output_dir: Path) -> Path | None:
    """The log file this process writes in `output_dir` (Hydra's `lrlab.log`), None without one."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == Path(output_dir):
            handler.flush()
            return Path(handler.baseFilename)
    return None


def log_console(
    tracker: Tracker, output_dir: Path, artifact_file: str, failure: BaseException | None
) -> None:
    """The run directory's log (everything printed, warnings included), with the traceback of
    `failure` appended, as the run's `artifact_file`: a run's console and why it failed, in the UI.
    A store that cannot take it is named in a warning, never raised over the run's own outcome."""
    path = run_log_file(output_dir)
    if path is None or not path.is_file():
        return
    text = path.read_text(errors="replace")
    if failure is not None:
        text += "\n" + "".join(traceback.format_exception(failure))
    try:
        tracker.log_text(text, artifact_file)
    except Exception as exc:  # the store may be the failure (disk full, server gone)
        log.warning("the run's log could not be stored as %s: %s", artifact_file, exc)
