"""Atomic checkpoints (last and best by valid_loss) that load with `weights_only=True`, so a
checkpoint file can never run code."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lrlab.core.types import Callback, EpochResult


def save_atomic(obj: dict[str, Any], path: str | Path) -> Path:
    """torch.save to a temporary file in the same folder, then rename over `path` (never truncated)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True` (tensors and plain containers only)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as contiguous CPU tensors (independent of device and memory format)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


class CheckpointCallback(Callback):
    """Writes `last.pt` every epoch and `best.pt` whenever valid_loss improves."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.best_loss = math.inf
        self.best_path: Path | None = None

    def on_epoch_end(self, engine: Any, result: EpochResult) -> None:
        payload = {
            "model": model_state(engine.model),
            "epoch": result.epoch,
            "stage": result.stage,
            "metrics": result.metrics(),
        }
        save_atomic(payload, self.directory / "last.pt")
        if result.valid_loss < self.best_loss:
            self.best_loss = result.valid_loss
            self.best_path = save_atomic(payload, self.directory / "best.pt")
