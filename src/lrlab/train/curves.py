"""The training at a glance (fastai's `recorder.plot_loss` and `plot_sched` in one figure): the
loss of every optimizer step with each epoch's valid loss, the learning rate of every layer group,
and the gradient norm, against the optimizer step, stage starts marked; an `lr=auto` race's winner
is the stage's first steps and its other candidates are drawn over the same steps; early stops and
the best epoch are marked. Written for every training
as `training_curves.png`, so a run without a tracker still shows whether its learning rate suited it;
from Python, pass one to the Engine's callbacks and show it in Jupyter."""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lrlab.core.types import Callback, EpochResult, StepRecord
from lrlab.finder.smoothing import ema_smooth

RACE_COLOURS = ("tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")  # apart from the run's own


@dataclass(frozen=True)
class RaceLine:
    """A losing `lr=auto` candidate as drawn: its label, steps, losses and last layer group's LR."""

    label: str
    steps: list[int]
    losses: list[float]
    lrs: list[float]


@dataclass
class TrainingCurves(Callback):
    """Collects each optimizer step (loss, LR per layer group, gradient norm), each epoch's valid
    loss at the step it ended, where each stage started and the losing candidates of `lr=auto`
    races; `save(path)` draws them."""

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    lrs: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    grad_norms: list[tuple[int, float]] = field(default_factory=list)
    epochs: list[tuple[int, float]] = field(default_factory=list)
    stage_starts: list[tuple[int, str]] = field(default_factory=list)
    race_losers: list[RaceLine] = field(default_factory=list)
    race_ends: list[int] = field(default_factory=list)
    early_stops: list[int] = field(default_factory=list)  # the step where a stage stopped early
    _epoch_points: dict[int, tuple[int, float]] = field(default_factory=dict, repr=False)
    _race_start: int | None = field(default=None, repr=False)
    _trainable: set[str] | None = field(default=None, repr=False)  # the stage's, as it announced them

    def __repr__(self) -> str:
        stages = ", ".join(name for _, name in self.stage_starts) or "none"
        return f"TrainingCurves({len(self.steps)} steps, {len(self.epochs)} epochs, stages: {stages})"

    def on_stage_start(self, engine: Any, start: Any) -> None:
        """The stage's trainable groups (the LRs drawn from now on); a raced stage began where its
        race did: the winner's steps and epochs join the curves (callbacks see its epochs only
        replayed) and the other candidates are kept to draw."""
        self._trainable = set(start.trainable_groups) or None
        race = start.race
        if race is None or not race.traces:
            return
        self._race_start = race.start_step
        winner = race.winner_trace()
        for candidate, trace in zip(race.candidates, race.traces):
            if trace is winner:
                self.on_steps(engine, trace.records)
                for epoch, step, valid_loss in trace.epochs:
                    self._add_epoch(epoch, step, valid_loss)
                if trace.records:
                    self.race_ends.append(trace.records[-1].step + 1)
            elif trace.records:
                self.race_losers.append(
                    RaceLine(
                        f"race {candidate.lr:.2g} ({candidate.outcome})",
                        [r.step for r in trace.records],
                        [r.loss for r in trace.records],
                        [list(r.lrs.values())[-1] if r.lrs else float("nan") for r in trace.records],
                    )
                )

    def on_fit_start(self, engine: Any, stage: str, epochs: int, steps_per_epoch: int) -> None:
        start = int(engine.global_step) if self._race_start is None else self._race_start
        self.stage_starts.append((start, stage))
        self._race_start = None

    def on_steps(self, engine: Any, records: list[StepRecord]) -> None:
        for record in records:
            self.steps.append(record.step)
            self.losses.append(record.loss)
            for group, lr in record.lrs.items():
                if self._trainable is None or group in self._trainable:  # a frozen group's LR moves nothing
                    self.lrs.setdefault(group, []).append((record.step, lr))
            if record.grad_norm is not None and np.isfinite(record.grad_norm):
                self.grad_norms.append((record.step, record.grad_norm))

    def on_epoch_end(self, engine: Any, result: EpochResult) -> None:
        """The epoch's valid loss at the step it ended; a replayed epoch already drawn from its
        race's trace is not added twice."""
        self._add_epoch(result.epoch, int(engine.global_step), result.valid_loss)

    def on_fit_end(self, engine: Any, stage: str, results: list[EpochResult]) -> None:
        if getattr(engine, "stop_reason", None):
            self.early_stops.append(int(engine.global_step))

    def _add_epoch(self, epoch: int, step: int, valid_loss: float) -> None:
        if epoch not in self._epoch_points:
            self._epoch_points[epoch] = (step, valid_loss)
            self.epochs.append((step, valid_loss))

    def save(
        self, path: str | Path, since: str | None = None, best: tuple[int, str] | None = None
    ) -> Path | None:
        """Draw the curves into `path` (a PNG), `since` saying what part of the training they cover
        (a resumed run's) and `best` which epoch to mark on the valid loss, with its label (the
        checkpointed best); None when no step was trained."""
        if not self.steps:
            return None
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.figure(since, best).savefig(path, dpi=100)
        return path

    def _repr_png_(self) -> bytes | None:
        if not self.steps:
            return None
        buffer = io.BytesIO()
        self.figure().savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()

    def figure(self, since: str | None = None, best: tuple[int, str] | None = None) -> Any:
        """The three panels as a matplotlib Figure (not attached to pyplot: nothing is left open);
        `best`: an epoch to mark on the valid loss, and its label."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(8, 7.5))  # fixed margins: a constrained layout doubles the drawing time
        fig.subplots_adjust(left=0.1, right=0.97, top=0.92, bottom=0.07, hspace=0.1)
        loss_ax, lr_ax, norm_ax = fig.subplots(3, 1, sharex=True)
        colours = list(zip(self.race_losers, itertools.cycle(RACE_COLOURS)))
        self._draw_losses(loss_ax, colours)
        if best is not None and best[0] in self._epoch_points:
            at, value = self._epoch_points[best[0]]
            loss_ax.plot([at], [value], "*", color="tab:red", ms=12, zorder=5, label=best[1])
            loss_ax.legend(fontsize=8)
        for group, points in self.lrs.items():
            at, values = zip(*points)
            lr_ax.plot(at, values, lw=1.2, label=group)
        for line, colour in colours:
            lr_ax.plot(line.steps, line.lrs, color=colour, lw=1.0, ls=":")
        lr_ax.set_yscale("log")
        lr_ax.set_ylabel("learning rate")
        lr_ax.legend(fontsize=8, ncol=max(1, min(4, len(self.lrs))))
        if self.grad_norms:
            at, norms = zip(*self.grad_norms)
            norm_ax.plot(at, norms, color="tab:green", lw=0.9)
            norm_ax.set_yscale("log")
        norm_ax.set_ylabel("gradient norm")
        norm_ax.set_xlabel("optimizer step")
        marks = [(at, stage, "--", 1) for at, stage in self.stage_starts]
        marks += [(at, "race ends", ":", 1) for at in self.race_ends]
        marks += [(at, "stopped early", "-.", -1) for at in self.early_stops]  # labelled on its left
        for at, label, style, side in marks:
            for ax in (loss_ax, lr_ax, norm_ax):
                ax.axvline(at, color="grey", lw=0.8, ls=style)
            loss_ax.annotate(
                label,
                (at, 1.0),
                xycoords=("data", "axes fraction"),
                fontsize=8,
                xytext=(3 * side, -10),
                textcoords="offset points",
                color="grey",
                ha="left" if side > 0 else "right",
            )
        title = "training: loss, learning rate and gradient norm per optimizer step"
        fig.suptitle(title + (f"\n({since})" if since else ""), fontsize=10)
        return fig

    def _draw_losses(self, ax: Any, colours: list[tuple[RaceLine, str]]) -> None:
        """Train loss per step (raw and smoothed), the race's other candidates (smoothed, dotted)
        and valid loss per epoch; on a log scale when a value dwarfs the typical train loss (a
        diverging first epoch would flatten everything else)."""
        smoothed = ema_smooth(self.losses, 0.9)
        ax.plot(self.steps, self.losses, color="tab:blue", alpha=0.35, lw=0.8, label="train (step)")
        ax.plot(self.steps, smoothed, color="tab:blue", lw=1.4, label="train (smoothed)")
        drawn = [*smoothed, *(v for _, v in self.epochs)]
        for line, colour in colours:
            ax.plot(line.steps, ema_smooth(line.losses, 0.9), color=colour, lw=1.0, ls=":", label=line.label)
        if self.epochs:
            at, valid = zip(*self.epochs)
            ax.plot(at, valid, "o-", color="tab:orange", ms=4, label="valid (epoch end)")
        finite = [v for v in drawn if np.isfinite(v) and v > 0]
        if finite and max(finite) > 20 * float(np.median([v for v in smoothed if np.isfinite(v)] or [1])):
            ax.set_yscale("log")
        ax.set_ylabel("loss")
        ax.legend(fontsize=8)
