"""Resuming an interrupted training: the whole training state at the end of an epoch (model,
optimizer, LR scheduler, GradScaler, every RNG, the loader's generator, step and epoch counters,
the stage reached and each started stage's LR decision, the epochs so far) as plain tensors and
containers, so it loads with `weights_only=True`, and putting it back so that training continues
bit-identically on the same machine."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from lrlab.core.reproducibility import loader_generator, restore_rng_state, rng_state
from lrlab.core.types import EpochResult


@dataclass
class StageProgress:
    """Where `run_stages` is: the running stage's index and every started stage's (lr, rule)."""

    index: int = 0
    decisions: dict[int, tuple[float, str | None]] = field(default_factory=dict)


def capture(engine: Any, progress: StageProgress, stage_epochs_done: int) -> dict[str, Any]:
    """The training state at the end of the engine's current epoch (call from `on_epoch_end`)."""
    optimizer, scheduler, loader = engine.fit_context
    gen = loader_generator(loader)
    return {
        "stage_index": progress.index,
        "stage_epochs_done": stage_epochs_done,
        "decisions": {str(i): [lr, rule] for i, (lr, rule) in progress.decisions.items()},
        "global_step": engine.global_step,
        "global_epoch": engine.global_epoch + 1,
        "history": [asdict(r) for r in engine.history],
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": engine.scaler.state_dict() if engine.scaler else None,
        "rng": rng_state(),
        "loader": gen.get_state() if gen is not None else None,
    }


def decisions(state: dict[str, Any]) -> dict[int, tuple[float, str | None]]:
    return {int(i): (float(lr), rule) for i, (lr, rule) in state["decisions"].items()}


def restore(
    state: dict[str, Any],
    model_state: dict[str, torch.Tensor],
    engine: Any,
    optimizer: Any,
    scheduler: Any,
    loader: Any,
) -> None:
    """Put a captured state back (after the resumed stage's scheduler was built as before)."""
    engine.model.load_state_dict(model_state)
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if engine.scaler and state["scaler"] is not None:
        engine.scaler.load_state_dict(state["scaler"])
    restore_rng_state(state["rng"])
    gen = loader_generator(loader)
    if gen is not None and state["loader"] is not None:
        gen.set_state(state["loader"])
    engine.global_step, engine.global_epoch = state["global_step"], state["global_epoch"]
    engine.history = [EpochResult(**r) for r in state["history"]]
