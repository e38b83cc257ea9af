"""`lr=auto`: race a few LRs around the range test's suggestion for part of a stage and keep the
winner's training, so the winner continues from its state instead of starting over.

A judge decides which candidate stops early: `lrlab.integrations.optuna.SuccessiveHalvingJudge`,
Optuna's `SuccessiveHalvingPruner` over an in-memory study (one trial per candidate, one report
per epoch), passed in so that this layer imports no Optuna. This module only trains the
candidates in turn, each on the stage's full-length schedule, and holds a CPU copy of the best
one that finished the race.
The candidates' epochs are silent (callbacks see only the winner's, replayed), so trackers,
checkpoints and an outer sweep's pruner see one training; each candidate's steps and valid losses
are kept on the race (`RaceResult.traces`) for the callbacks that draw or log them.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from lrlab.core.engine import Engine
from lrlab.core.types import Callback, EpochResult, StepRecord
from lrlab.errors import TrainingDiverged
from lrlab.finder.snapshot import Snapshot, to_cpu
from lrlab.train.resume import Decisions, ResumeState
from lrlab.train.stage import AutoLrConfig

log = logging.getLogger("lrlab")


@dataclass(frozen=True)
class Candidate:
    """How one raced LR did: its metric after its last raced epoch, and why it stopped."""

    lr: float
    factor: float
    epochs: int
    value: float
    outcome: str  # finished | pruned | diverged
    seconds: float


@dataclass
class RaceTrace(Callback):
    """What one candidate trained, recorded as it trains: every optimizer step and, per epoch, its
    global epoch, the step it ended at and its valid loss."""

    records: list[StepRecord] = field(default_factory=list)
    epochs: list[tuple[int, int, float]] = field(default_factory=list)

    def on_steps(self, engine: Any, records: list[StepRecord]) -> None:
        self.records.extend(records)

    def on_epoch_end(self, engine: Any, result: EpochResult) -> None:
        self.epochs.append((result.epoch, int(engine.global_step), result.valid_loss))


@dataclass
class RaceResult:
    """A finished race: the suggestion it started from, every candidate (with its trace, in the
    same order), the winner's LR and the optimizer step the race started at."""

    suggestion: float
    metric: str
    race_epochs: int
    candidates: list[Candidate] = field(default_factory=list)
    winner: float = math.nan
    start_step: int = 0
    traces: list[RaceTrace] = field(default_factory=list, repr=False)

    def winner_trace(self) -> RaceTrace | None:
        """The winner's steps and epochs: the start of the stage's training, which callbacks saw only
        as replayed epochs."""
        for candidate, trace in zip(self.candidates, self.traces):
            if candidate.lr == self.winner:
                return trace
        return None

    @property
    def seconds(self) -> float:
        return sum(c.seconds for c in self.candidates)

    @property
    def epochs_trained(self) -> int:
        """Epochs the race trained, all candidates together (its compute, in stage epochs)."""
        return sum(c.epochs for c in self.candidates)

    def describe(self) -> str:
        parts = [
            f"{c.lr:.3g} ({c.factor:g}x): {self.metric} {c.value:.4g} after {c.epochs} epoch(s), {c.outcome}"
            for c in self.candidates
        ]
        return f"winner {self.winner:.3g}; " + "; ".join(parts)


MakeScheduler = Callable[[float], Any]


class RaceJudge(Protocol):
    """Says when a raced candidate should stop (a pruner): `enter` a candidate, `report` its metric
    after each epoch (True: stop it), `finish` it with its final metric or None if it stopped."""

    def enter(self, lr: float) -> Any: ...

    def report(self, entry: Any, epoch: int, value: float) -> bool: ...

    def finish(self, entry: Any, value: float | None) -> None: ...


JudgeFactory = Callable[[int], RaceJudge]  # reduction factor -> a fresh judge


def race(
    engine: Engine,
    training: Any,
    stage: Any,
    index: int,
    suggestion: float,
    make_scheduler: MakeScheduler,
    config: AutoLrConfig,
    decisions: Decisions,
    judge: RaceJudge,
) -> tuple[RaceResult, ResumeState]:
    """Train `suggestion` x each factor for up to `config.race_epochs(stage.epochs)` epochs from the
    same starting state, stopped when `judge` says; returns the race and the state of the best
    candidate that finished it (put it back with `ResumeState.restore`). Raises TrainingDiverged
    when every candidate diverged."""
    epochs = min(config.race_epochs(stage.epochs), stage.epochs)
    start = Snapshot(engine.model, training.optimizer, engine, training.train_loader)
    base_epoch, base_history = engine.global_epoch, list(engine.history)
    result = RaceResult(suggestion, config.metric, epochs, start_step=int(engine.global_step))
    best: tuple[float, float, ResumeState] | None = None
    log.info(
        f"stage {stage.name} lr=auto: racing {len(config.factors)} LRs around the suggestion "
        f"{suggestion:.3g} for up to {epochs} of {stage.epochs} epochs (Optuna successive halving, "
        f"reduction factor {config.reduction_factor}, on {config.metric})"
    )
    callbacks = engine.callbacks
    try:
        for factor in config.factors:
            result.traces.append(RaceTrace())
            engine.callbacks = [result.traces[-1]]
            start.restore(engine.model, training.optimizer, engine, training.train_loader)
            engine.global_epoch, engine.history = base_epoch, list(base_history)
            lr, began = suggestion * factor, time.perf_counter()
            entry = judge.enter(lr)
            scheduler = make_scheduler(lr)
            trained, value, outcome = _run_candidate(
                engine, training, stage, scheduler, epochs, judge, entry, config.metric
            )
            judge.finish(entry, value if outcome == "finished" else None)
            if outcome == "finished" and (best is None or value < best[0]):
                best = (value, lr, _capture(engine, index, decisions, trained, scheduler))
            result.candidates.append(
                Candidate(lr, factor, trained, value, outcome, time.perf_counter() - began)
            )
            log.info(
                f"  lr {lr:.3g} ({factor:.3g}x): {config.metric} {value:.4g}, {trained} epoch(s), {outcome}"
            )
    finally:
        engine.callbacks = callbacks
    if best is None:
        raise TrainingDiverged(
            f"stage {stage.name} lr=auto: every raced LR diverged "
            f"({', '.join(f'{c.lr:.3g}' for c in result.candidates)}); "
            "set the stage's lr to a number or lower lr_auto.factors"
        )
    result.winner = best[1]
    log.info(f"  winner {result.winner:.3g} continues from epoch {epochs + 1} of {stage.epochs}")
    return result, best[2]


def _run_candidate(
    engine: Engine,
    training: Any,
    stage: Any,
    scheduler: Any,
    epochs: int,
    judge: RaceJudge,
    entry: Any,
    metric: str,
) -> tuple[int, float, str]:
    """Train one candidate epoch by epoch until the race's end, its divergence or the judge's
    word: (epochs trained, last metric, finished | diverged | pruned)."""
    trained, value = 0, math.nan
    for epoch in range(epochs):
        try:
            done = engine.fit(
                training.train_loader,
                training.valid_loader,
                training.optimizer,
                scheduler,
                epoch + 1,
                stage.name,
                epoch,
            )
        except TrainingDiverged:
            return trained, value, "diverged"
        trained, value = epoch + 1, float(getattr(done[-1], metric))
        if not math.isfinite(value):
            return trained, value, "diverged"
        if judge.report(entry, trained, value) and trained < epochs:
            return trained, value, "pruned"
    return trained, value, "finished"


def _capture(engine: Engine, index: int, decisions: Decisions, epochs: int, scheduler: Any) -> ResumeState:
    """A CPU copy of the training state after a candidate's last raced epoch (`fit` has already
    counted that epoch, hence the global epoch as it is)."""
    optimizer = engine.fit_context[0]
    state = ResumeState.capture(engine, index, decisions, epochs, engine.global_epoch)
    return replace(
        state,
        optimizer=to_cpu(optimizer.state_dict()),
        scheduler=copy.deepcopy(scheduler.state_dict()) if scheduler is not None else None,
        model=to_cpu(engine.model.state_dict()),
    )
