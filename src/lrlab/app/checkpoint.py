"""The checkpoint callback: `last.pt` every epoch and `best.pt` by valid_loss, each written
atomically in lrlab's checkpoint format (`lrlab.models.checkpoint`) with the model's description,
so `lrlab.load_model(path)` rebuilds it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lrlab.core.monitor import Monitor
from lrlab.core.resume import capture
from lrlab.core.types import Callback, EpochResult
from lrlab.models.checkpoint import CheckpointError, load_checkpoint, save_atomic

__all__ = ["CheckpointCallback", "CheckpointError", "load_checkpoint", "model_state", "save_atomic"]


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as contiguous CPU tensors (independent of device and memory format)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


class CheckpointCallback(Callback):
    """Writes `last.pt` every epoch and `best.pt` whenever the monitored metric improves (default:
    valid_loss); with `save_top_k` > 1 also the k best epochs as `top/epoch<N>-<metric><value>.pt`.
    `meta` (the model's description: architecture, classes, preprocessing, config, lrlab version)
    goes into every file."""

    def __init__(
        self,
        directory: str | Path,
        meta: Mapping[str, Any] | None = None,
        monitor: Monitor | None = None,
        save_top_k: int = 1,
    ):
        self.directory = Path(directory)
        self.meta = dict(meta or {})
        self.monitor = monitor or Monitor()
        self.save_top_k = save_top_k
        self.best_value = self.monitor.worst()
        self.best_path: Path | None = None
        self.top: list[tuple[float, Path]] = []

    def on_epoch_end(self, engine: Any, result: EpochResult) -> None:
        payload = {
            "model": model_state(engine.model),
            "epoch": result.epoch,
            "stage": result.stage,
            "metrics": result.metrics(),
            "meta": self.meta,
        }
        progress = getattr(engine, "stage_progress", None)
        resume = capture(engine, progress, result.stage_epoch + 1) if progress is not None else None
        save_atomic({**payload, "resume": resume}, self.directory / "last.pt")
        value = self.monitor.value(result)
        if self.monitor.better(value, self.best_value):
            self.best_value = value
            self.best_path = save_atomic(payload, self.directory / "best.pt")
        if self.save_top_k > 1:
            self._keep_top(value, payload, result.epoch)

    def _keep_top(self, value: float, payload: dict[str, Any], epoch: int) -> None:
        """Keep the files of the `save_top_k` best epochs, deleting the one that drops out."""
        if math.isnan(value):
            return
        rank = sum(self.monitor.better(kept, value) or kept == value for kept, _ in self.top)
        if rank >= self.save_top_k:
            return
        path = save_atomic(
            payload, self.directory / "top" / f"epoch{epoch}-{self.monitor.metric}{value:.4f}.pt"
        )
        self.top.insert(rank, (value, path))
        for _, dropped in self.top[self.save_top_k :]:
            dropped.unlink(missing_ok=True)
        del self.top[self.save_top_k :]


def load_resume(cfg: Any, launch_dir: Path) -> dict[str, Any]:
    """The checkpoint `resume=` names (a `last.pt`, or `auto`: the newest `outputs/**/last.pt` under
    `launch_dir` whose run had this same config), with its path; LrlabError when there is none or
    it holds no training state."""
    from omegaconf import OmegaConf

    from lrlab.errors import ConfigError

    def plain(config: Any) -> dict[str, Any]:
        found = OmegaConf.to_container(OmegaConf.create(config), resolve=True)
        found.pop("resume", None)
        return found

    if str(cfg.resume) != "auto":
        candidates = [Path(str(cfg.resume)).expanduser()]
    else:
        found = (launch_dir / "outputs").rglob("checkpoints/last.pt")
        candidates = sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)
    wanted = plain(OmegaConf.to_container(cfg, resolve=True))
    for path in candidates:
        checkpoint = load_checkpoint(path)
        meta = checkpoint.get("meta") or {}
        if str(cfg.resume) == "auto" and plain(meta.get("config", "{}")) != wanted:
            continue
        if not checkpoint.get("resume"):
            raise ConfigError(
                f"resume: {path} holds no training state to continue from (written by an older lrlab)"
            )
        return {**checkpoint, "path": str(path)}
    raise ConfigError(
        f"resume=auto: no checkpoints/last.pt under {launch_dir / 'outputs'} comes from a run with this "
        "config (same overrides, train.checkpoints=true); pass resume=PATH/TO/last.pt"
    )
