"""Seeding and RNG state capture/restore (Python, NumPy, torch CPU and CUDA)."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed every RNG lrlab draws from; optionally ask torch for deterministic algorithms."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def rng_state() -> dict[str, Any]:
    """A snapshot of every global RNG, for `restore_rng_state`, in types `torch.load(weights_only=True)`
    accepts (numpy's key array as a tensor), so checkpoints can hold it too."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put every global RNG back to a `rng_state` snapshot (also one read back from a checkpoint)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def loader_generator(loader: Any) -> torch.Generator | None:
    """The torch.Generator that orders a loader's batches (TensorLoader, DataLoader), if it has one."""
    gen = getattr(loader, "generator", None)
    return gen if isinstance(gen, torch.Generator) else None


@dataclass
class LoopState:
    """The saved position of a training loop: weights, optimizer and GradScaler state, every RNG and
    the loader's generator. `restore` puts them back (the range test's snapshot and a resumed
    training both do, each adding its own counters)."""

    model: dict[str, Any]
    optimizer: dict[str, Any]
    scaler: dict[str, Any] | None
    rng: dict[str, Any]
    loader: torch.Tensor | None

    def restore(self, model: Any, optimizer: Any, scaler: Any, loader: Any) -> None:
        model.load_state_dict(self.model)
        optimizer.load_state_dict(self.optimizer)
        if scaler and self.scaler is not None:
            scaler.load_state_dict(self.scaler)
        restore_rng_state(self.rng)
        gen = loader_generator(loader)
        if gen is not None and self.loader is not None:
            gen.set_state(self.loader)


def machine_fingerprint() -> dict[str, str]:
    """What CPU results depend on beyond the seed: the CPU model, the instruction set torch's
    kernels use (e.g. AVX2, AVX512) and the intra-op thread count. Runs agree bit for bit only
    when these (and the library versions) agree."""
    import platform

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            model = next(
                (line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), model
            )
    except OSError:
        pass
    return {
        "cpu.model": model,
        "cpu.capability": str(torch.backends.cpu.get_cpu_capability()),
        "cpu.threads": str(torch.get_num_threads()),
    }
