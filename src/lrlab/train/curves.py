"""The training at a glance (fastai's `recorder.plot_loss` and `plot_sched` in one figure): the
loss of every optimizer step with each epoch's valid loss, the learning rate of every layer group,
and the gradient norm, against the optimizer step, stage starts marked. Written for every training
as `training_curves.png`, so a run without a tracker still shows whether its learning rate suited it;
from Python, pass one to the Engine's callbacks and show it in Jupyter."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lrlab.core.types import Callback, EpochResult, StepRecord
from lrlab.finder.smoothing import ema_smooth


@dataclass
class TrainingCurves(Callback):
    """Collects each optimizer step (loss, LR per layer group, gradient norm), each epoch's valid
    loss at the step it ended, and where each stage started; `save(path)` draws them."""

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    lrs: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    grad_norms: list[tuple[int, float]] = field(default_factory=list)
    epochs: list[tuple[int, float]] = field(default_factory=list)
    stage_starts: list[tuple[int, str]] = field(default_factory=list)

    def __repr__(self) -> str:
        stages = ", ".join(name for _, name in self.stage_starts) or "none"
        return f"TrainingCurves({len(self.steps)} steps, {len(self.epochs)} epochs, stages: {stages})"

    def on_fit_start(self, engine: Any, stage: str, epochs: int, steps_per_epoch: int) -> None:
        self.stage_starts.append((int(engine.global_step), stage))

    def on_steps(self, engine: Any, records: list[StepRecord]) -> None:
        for record in records:
            self.steps.append(record.step)
            self.losses.append(record.loss)
            for group, lr in record.lrs.items():
                self.lrs.setdefault(group, []).append((record.step, lr))
            if record.grad_norm is not None and np.isfinite(record.grad_norm):
                self.grad_norms.append((record.step, record.grad_norm))

    def on_epoch_end(self, engine: Any, result: EpochResult) -> None:
        """The epoch's valid loss at the step it ended; an epoch replayed without its steps (an
        `lr=auto` race's winner) has no place on the step axis and is left out."""
        if self.steps and (not self.epochs or self.steps[-1] >= self.epochs[-1][0]):
            self.epochs.append((int(engine.global_step), result.valid_loss))

    def save(self, path: str | Path, since: str | None = None) -> Path | None:
        """Draw the curves into `path` (a PNG), `since` saying what part of the training they cover
        (a resumed run's); None when no step was trained."""
        if not self.steps:
            return None
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.figure(since).savefig(path, dpi=100)
        return path

    def _repr_png_(self) -> bytes | None:
        if not self.steps:
            return None
        buffer = io.BytesIO()
        self.figure().savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()

    def figure(self, since: str | None = None) -> Any:
        """The three panels as a matplotlib Figure (not attached to pyplot: nothing is left open)."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(8, 7.5))  # fixed margins: a constrained layout doubles the drawing time
        fig.subplots_adjust(left=0.1, right=0.97, top=0.92, bottom=0.07, hspace=0.1)
        loss_ax, lr_ax, norm_ax = fig.subplots(3, 1, sharex=True)
        loss_ax.plot(self.steps, self.losses, color="tab:blue", alpha=0.35, lw=0.8, label="train (step)")
        loss_ax.plot(
            self.steps, ema_smooth(self.losses, 0.9), color="tab:blue", lw=1.4, label="train (smoothed)"
        )
        if self.epochs:
            at, valid = zip(*self.epochs)
            loss_ax.plot(at, valid, "o-", color="tab:orange", ms=4, label="valid (epoch end)")
        loss_ax.set_ylabel("loss")
        loss_ax.legend(fontsize=8)
        for group, points in self.lrs.items():
            at, values = zip(*points)
            lr_ax.plot(at, values, lw=1.2, label=group)
        lr_ax.set_yscale("log")
        lr_ax.set_ylabel("learning rate")
        lr_ax.legend(fontsize=8, ncol=min(4, len(self.lrs)))
        if self.grad_norms:
            at, norms = zip(*self.grad_norms)
            norm_ax.plot(at, norms, color="tab:green", lw=0.9)
            norm_ax.set_yscale("log")
        norm_ax.set_ylabel("gradient norm")
        norm_ax.set_xlabel("optimizer step")
        for start, stage in self.stage_starts:
            for ax in (loss_ax, lr_ax, norm_ax):
                ax.axvline(start, color="grey", lw=0.8, ls="--")
            loss_ax.annotate(
                stage,
                (start, 1.0),
                xycoords=("data", "axes fraction"),
                fontsize=8,
                xytext=(3, -10),
                textcoords="offset points",
                color="grey",
            )
        title = "training: loss, learning rate and gradient norm per optimizer step"
        fig.suptitle(title + (f"\n({since})" if since else ""), fontsize=10)
        return fig
