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

from lrlab.core.types import Callback, EpochResult
from lrlab.models.checkpoint import CheckpointError, load_checkpoint, save_atomic

__all__ = ["CheckpointCallback", "CheckpointError", "load_checkpoint", "model_state", "save_atomic"]


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as contiguous CPU tensors (independent of device and memory format)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


class CheckpointCallback(Callback):
    """Writes `last.pt` every epoch and `best.pt` whenever valid_loss improves; `meta` (the model's
    description: architecture, classes, preprocessing, config, lrlab version) goes into both."""

    def __init__(self, directory: str | Path, meta: Mapping[str, Any] | None = None):
        self.directory = Path(directory)
        self.meta = dict(meta or {})
        self.best_loss = math.inf
        self.best_path: Path | None = None

    def on_epoch_end(self, engine: Any, result: EpochResult) -> None:
        payload = {
            "model": model_state(engine.model),
            "epoch": result.epoch,
            "stage": result.stage,
            "metrics": result.metrics(),
            "meta": self.meta,
        }
        save_atomic(payload, self.directory / "last.pt")
        if result.valid_loss < self.best_loss:
            self.best_loss = result.valid_loss
            self.best_path = save_atomic(payload, self.directory / "best.pt")
