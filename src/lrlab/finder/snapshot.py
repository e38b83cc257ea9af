"""Everything the range test changes (model, buffers, optimizer, GradScaler, the loader's
generator, every RNG, the engine's step counter), held once on the CPU and put back afterwards, so
that training after the test is bit-identical to training without it."""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn

from lrlab.core.engine import Engine
from lrlab.core.reproducibility import LoopState, loader_generator, rng_state


def to_cpu(obj: Any) -> Any:
    """A detached CPU copy of every tensor in `obj` (nested dicts and lists kept), so a snapshot
    survives the training that follows."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


class Snapshot:
    """A CPU copy of the training state; `restore` puts it back."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, engine: Engine, loader: Any):
        self.model_state = to_cpu(model.state_dict())
        self.optimizer_state = to_cpu(optimizer.state_dict())
        self.scaler_state = to_cpu(engine.scaler.state_dict()) if engine.scaler else None
        self.rng = rng_state()
        gen = loader_generator(loader)
        self.loader_state = gen.get_state() if gen is not None else None
        self.training = model.training
        self.global_step = engine.global_step
        # Not restored (the test does not change them) but part of the starting point's identity:
        self.trainable = [p.requires_grad for p in model.parameters()]
        self.module_modes = [m.training for m in model.modules()]

    def digest(self) -> str:
        """SHA-256 of everything held (weights, buffers, optimizer and scaler state, RNGs, the
        loader's generator, train/eval mode, step): equal digests mean an identical starting point."""
        sha = hashlib.sha256()
        _feed(sha, [self.model_state, self.optimizer_state, self.scaler_state, self.rng])
        _feed(sha, [self.loader_state, self.training, self.global_step, self.trainable, self.module_modes])
        return sha.hexdigest()

    def restore(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, engine: Engine, loader: Any
    ) -> None:
        saved = LoopState(
            self.model_state, self.optimizer_state, self.scaler_state, self.rng, self.loader_state
        )
        saved.restore(model, optimizer, engine.scaler, loader)
        optimizer.zero_grad(set_to_none=True)
        model.train(self.training)
        if self.training:
            engine.train_mode()
        engine.global_step = self.global_step


def _feed(sha: Any, obj: Any) -> None:
    """Hash a nested structure of tensors, containers and plain values (tensors by dtype, shape
    and bytes; dict entries in key order)."""
    if isinstance(obj, torch.Tensor):
        tensor = obj.detach().cpu().contiguous()
        sha.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
        sha.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    elif isinstance(obj, dict):
        sha.update(b"{")
        for key in sorted(obj, key=repr):
            sha.update(repr(key).encode())
            _feed(sha, obj[key])
        sha.update(b"}")
    elif isinstance(obj, (list, tuple)):
        sha.update(b"[")
        for item in obj:
            _feed(sha, item)
        sha.update(b"]")
    else:
        sha.update(repr(obj).encode())
