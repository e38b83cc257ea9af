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
        save_atomic(payload, self.directory / "last.pt")
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
