"""Resuming an interrupted training: `ResumeState` is the whole training state at the end of an
epoch (model, optimizer, LR scheduler, GradScaler, every RNG, the loader's generator, step and
epoch counters, the stage reached and each started stage's LR decision, the epochs so far, the
weight EMA if any). It is stored as plain tensors and containers, so a checkpoint loads with
`weights_only=True`, and put back so that training continues bit-identically on the same machine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from lrlab.core.reproducibility import LoopState, loader_generator, rng_state
from lrlab.core.types import EpochResult

SCHEDULE_LENGTH = ("total_steps", "_schedule_phases")  # scheduler state that follows the stage's epochs
Decisions = dict[int, tuple[float, str | None]]  # stage index -> (lr, rule) of every started stage


@dataclass
class ResumeState:
    """Where a training stopped and everything needed to continue it. `model` is the weights at
    that point; `path` and `meta` say which checkpoint it came from and what that run recorded
    (its tracking run id, its config)."""

    stage_index: int
    stage_epochs_done: int
    decisions: Decisions
    global_step: int
    global_epoch: int
    history: list[EpochResult]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    scaler: dict[str, Any] | None
    rng: dict[str, Any]
    loader: torch.Tensor | None
    model: dict[str, torch.Tensor] = field(default_factory=dict)
    average: dict[str, Any] | None = None  # the weight EMA (`train.ema_decay`), when the run keeps one
    path: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def trained_all(self, stage_epochs: Sequence[int]) -> bool:
        """Whether this state is the end of a training whose stages have `stage_epochs` epochs:
        its stage ran every epoch and no later stage trains."""
        later = stage_epochs[self.stage_index + 1 :]
        return self.stage_epochs_done >= stage_epochs[self.stage_index] and all(e <= 0 for e in later)

    @classmethod
    def capture(
        cls, engine: Any, stage_index: int, decisions: Decisions, stage_epochs_done: int, global_epoch: int
    ) -> ResumeState:
        """The state after the engine's latest epoch, `global_epoch` being the next epoch's number
        (from `on_epoch_end`: the ended epoch's + 1; the engine's own counter is one behind there,
        except for the epochs an `lr=auto` race replays). The weights are saved beside it by the
        checkpoint, so `model` stays empty here."""
        optimizer, scheduler, loader = engine.fit_context
        gen = loader_generator(loader)
        return cls(
            stage_index=stage_index,
            stage_epochs_done=stage_epochs_done,
            decisions=dict(decisions),
            global_step=engine.global_step,
            global_epoch=global_epoch,
            history=list(engine.history),
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict() if scheduler is not None else None,
            scaler=engine.scaler.state_dict() if engine.scaler else None,
            rng=rng_state(),
            loader=gen.get_state() if gen is not None else None,
            average=engine.average.state_dict() if getattr(engine, "average", None) else None,
        )

    def to_payload(self) -> dict[str, Any]:
        """The checkpoint's `resume` entry: plain containers and tensors (weights_only-loadable)."""
        return {
            "stage_index": self.stage_index,
            "stage_epochs_done": self.stage_epochs_done,
            "decisions": {str(i): [lr, rule] for i, (lr, rule) in self.decisions.items()},
            "global_step": self.global_step,
            "global_epoch": self.global_epoch,
            "history": [asdict(r) for r in self.history],
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "scaler": self.scaler,
            "rng": self.rng,
            "loader": self.loader,
            "average": self.average,
        }

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any], path: str = "") -> ResumeState:
        """The state a checkpoint holds (its `resume` entry, weights and metadata)."""
        entry = checkpoint["resume"]
        return cls(
            stage_index=int(entry["stage_index"]),
            stage_epochs_done=int(entry["stage_epochs_done"]),
            decisions={int(i): (float(lr), rule) for i, (lr, rule) in entry["decisions"].items()},
            global_step=int(entry["global_step"]),
            global_epoch=int(entry["global_epoch"]),
            history=[EpochResult(**r) for r in entry["history"]],
            optimizer=entry["optimizer"],
            scheduler=entry["scheduler"],
            scaler=entry["scaler"],
            rng=entry["rng"],
            loader=entry["loader"],
            average=entry.get("average"),
            model=checkpoint["model"],
            path=path,
            meta=dict(checkpoint.get("meta") or {}),
        )

    def restore(self, engine: Any, optimizer: Any, scheduler: Any, loader: Any) -> None:
        """Put the state back (after the resumed stage's scheduler was built as before)."""
        saved = LoopState(self.model, self.optimizer, self.scaler, self.rng, self.loader)
        saved.restore(engine.model, optimizer, engine.scaler, loader)
        if getattr(engine, "average", None) is not None and self.average is not None:
            engine.average.load_state_dict(self.average)  # `model` held the average; training weights aside
        if scheduler is not None and self.scheduler is not None:
            # A stage resumed with more epochs keeps the new schedule's length (OneCycleLR stores it).
            fresh = scheduler.state_dict()
            scheduler.load_state_dict(
                {**self.scheduler, **{k: fresh[k] for k in SCHEDULE_LENGTH if k in fresh}}
            )
        engine.global_step, engine.global_epoch = self.global_step, self.global_epoch
        engine.history = list(self.history)
