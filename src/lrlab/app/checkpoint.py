"""Atomic checkpoints (last and best by valid_loss) that load with `weights_only=True`, so a
checkpoint file can never run code, and carry the SHA-256 of their payload, so a damaged file is
named instead of loaded. (torch.save has no checksum of its own; the envelope adds one.)"""

from __future__ import annotations

import hashlib
import io
import math
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lrlab.core.types import Callback, EpochResult
from lrlab.errors import LrlabError

FORMAT = "lrlab-checkpoint-1"


class CheckpointError(LrlabError):
    """A checkpoint file that is missing, empty, damaged or not a checkpoint."""


def save_atomic(obj: dict[str, Any], path: str | Path) -> Path:
    """torch.save `{format, sha256, payload}` (the payload: `obj` serialised by torch.save, as a
    uint8 tensor) to a temporary file in the same folder, then rename over `path` (never truncated)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getvalue()
    envelope = {
        "format": FORMAT,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8),  # stored raw, unlike bytes
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(envelope, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True` (tensors and plain containers only), checking its
    payload against the SHA-256 it was written with. Raises CheckpointError, one paragraph naming
    the file, for a missing, empty, damaged or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"checkpoint {path} is empty (0 bytes): its write was cut short; use another one"
        )
    envelope = _load_plain(path, io.FileIO(path), map_location)
    if not (isinstance(envelope, dict) and envelope.get("format") == FORMAT):
        raise CheckpointError(f"{path} is not an lrlab checkpoint (no {FORMAT} envelope)")
    payload = envelope.get("payload")
    payload = payload.numpy().tobytes() if isinstance(payload, torch.Tensor) else b""
    if hashlib.sha256(payload).hexdigest() != envelope.get("sha256"):
        raise CheckpointError(
            f"checkpoint {path} is damaged: its payload does not match the SHA-256 it was saved with "
            "(a disk or copy error changed it); use another checkpoint, e.g. last.pt instead of best.pt"
        )
    return _load_plain(path, io.BytesIO(payload), map_location)


def _load_plain(path: Path, source: Any, map_location: str | torch.device) -> Any:
    with source:
        try:
            return torch.load(source, map_location=map_location, weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointError(
                f"checkpoint {path} is damaged or not a checkpoint ({type(exc).__name__}: {first[:200]}). "
                "lrlab loads checkpoints with weights_only=True and never runs code from them."
            ) from exc


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
