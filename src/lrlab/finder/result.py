"""The result of a range test: the recorded curve, its smoothing, every rule's suggestion, the
spread over repeats, and its CSV, table and plot.

The drawing lives in `plot.py`, which this module imports (never the reverse): `plot` and
`save` are thin methods over `plot.plot_result` and `plot.save_plot`."""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lrlab.finder.flags import edge_flag
from lrlab.finder.plot import plot_result, save_plot


@dataclass
class LRFinderResult:
    """One range-test curve (or the median of repeated ones) with its suggestions.

    `lrs` is the learning rate applied to the reference group (the head, i.e. the last
    parameter group, unless one group is swept on its own) at each recorded optimizer step.
    """

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    suggestions: dict[str, float]
    method: str = "lrlab"
    group: str = "all"
    smoothing: str = "ema"
    val_losses: np.ndarray | None = None
    seconds: float = 0.0
    stop_reason: str = "completed"
    repeats: list[LRFinderResult] = field(default_factory=list)
    spread: dict[str, dict[str, float]] = field(default_factory=dict)
    rule_curves: dict[str, str] = field(default_factory=dict)
    flags: dict[str, str | None] = field(default_factory=dict)
    cached: bool = False  # the raw curve was reused from a CurveStore: `seconds` is what it cost then
    curves: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # every smoothing, by name

    @property
    def spent_seconds(self) -> float:
        """What this run spent on the curve: nothing when it reused one (a sweep counts it once);
        `seconds` is what a lone run of the test pays."""
        if self.repeats:
            return sum(r.spent_seconds for r in self.repeats)
        return 0.0 if self.cached else self.seconds

    @property
    def suggestion(self) -> float:
        """The suggestion of the configured rule."""
        return self.suggestions[self.method]

    def __repr__(self) -> str:
        """One line instead of the arrays: the rule in use, its suggestion and flag, the ramp."""
        span = f"{self.lrs[0]:.1e}..{self.lrs[-1]:.1e}" if len(self.lrs) else "no steps"
        flag = f" [{self.flags[self.method]}]" if self.flags.get(self.method) else ""
        return (
            f"LRFinderResult({self.method} suggests {self.suggestion:.2e}{flag}; {len(self.lrs)} steps "
            f"over {span}, {self.stop_reason}; .table() shows every rule, .plot() the curve)"
        )

    def _repr_png_(self) -> bytes:
        """The plot as PNG bytes: Jupyter shows a result as its plot, as fastai's `lr_find` does."""
        import io

        import matplotlib.pyplot as plt

        figure = self.plot()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        plt.close(figure)
        return buffer.getvalue()

    def table(self) -> str:
        """A short text table of every rule's suggestion, the curve it was computed on, a flag for
        suggestions at the ramp's edges, the spread when repeated; `*` marks the rule in use."""
        spread_head = "   spread (log10 IQR, min..max)" if self.spread else ""
        width = max([8, *(len(rule) for rule in self.suggestions)])
        curve_width = max([8, *(len(c) for c in self.rule_curves.values())])
        lines = [f"  {'rule':<{width}} {'lr':>10}  {'curve':<{curve_width}}  {'flag':<13}{spread_head}"]
        for rule, lr in self.suggestions.items():
            mark = "*" if rule == self.method else " "
            extra = ""
            if rule in self.spread:
                s = self.spread[rule]
                extra = f"   {s['log10_iqr']:.2f} dec, {s['min']:.2e}..{s['max']:.2e}"
            curve = self.rule_curves.get(rule, self.smoothing)
            flag = self.flags.get(rule) or ""
            row = f"{mark} {rule:<{width}} {lr:>10.2e}  {curve:<{curve_width}}  {flag:<13}{extra}"
            lines.append(row.rstrip())
        return "\n".join(lines)

    def to_csv(self, path: str | Path) -> Path:
        """Write (step, lr, loss, smoothed_loss, <curve>_loss for every other smoothing a rule read
        [, val_loss]) rows, one per recorded step."""
        path = Path(path)
        others = {
            name: curve
            for name, curve in self.curves.items()
            if name != self.smoothing and name in set(self.rule_curves.values())
        }
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            header = ["step", "lr", "loss", "smoothed_loss", *(f"{name}_loss" for name in others)]
            writer.writerow(header + (["val_loss"] if self.val_losses is not None else []))
            for i, (lr, loss, smooth) in enumerate(zip(self.lrs, self.losses, self.smoothed)):
                row = [i, repr(float(lr)), repr(float(loss)), repr(float(smooth))]
                row += [repr(float(curve[i])) for curve in others.values()]
                if self.val_losses is not None:
                    row.append(repr(float(self.val_losses[i])))
                writer.writerow(row)
        return path

    def save(
        self, directory: str | Path, stem: str = "lr_find", title: str | None = None
    ) -> tuple[Path, Path]:
        """Write `<stem>.png` and `<stem>.csv` into `directory`; returns both paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        png = save_plot(self, directory / f"{stem}.png", title=title)
        return png, self.to_csv(directory / f"{stem}.csv")

    def plot(self, path: str | Path | None = None, ax: Any = None, title: str | None = None) -> Any:
        """Loss against LR on a log axis: raw and smoothed curves, every suggestion, the band of
        repeated curves. Saves a PNG when `path` is given; returns the matplotlib Figure."""
        return plot_result(self, path, ax, title)


def summarize_repeats(results: Sequence[LRFinderResult]) -> LRFinderResult:
    """Per rule: the median suggestion over repeats and its spread (log10 IQR, min, max); the
    curve shown is the point-wise median of the smoothed curves."""
    first = results[0]
    n = max(len(r.lrs) for r in results)
    longest = max(results, key=lambda r: len(r.lrs))
    stack = np.full((len(results), n), np.nan)
    raw = np.full((len(results), n), np.nan)
    for i, r in enumerate(results):
        stack[i, : len(r.smoothed)] = r.smoothed
        raw[i, : len(r.losses)] = r.losses
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        median_curve, median_raw = np.nanmedian(stack, axis=0), np.nanmedian(raw, axis=0)
    suggestions, spread = {}, {}
    for rule in first.suggestions:
        values = np.array([r.suggestions[rule] for r in results], dtype=np.float64)
        values = values[np.isfinite(values) & (values > 0)]
        if not len(values):
            suggestions[rule] = math.nan
            continue
        logs = np.log10(values)
        q25, q50, q75 = np.percentile(logs, [25, 50, 75])
        suggestions[rule] = float(10**q50)
        spread[rule] = {
            "median": float(10**q50),
            "q25": float(10**q25),
            "q75": float(10**q75),
            "log10_iqr": float(q75 - q25),
            "min": float(values.min()),
            "max": float(values.max()),
            "n": float(len(values)),
        }
    summary = LRFinderResult(
        longest.lrs,
        median_raw,
        median_curve,
        suggestions,
        first.method,
        first.group,
        first.smoothing,
        None,
        sum(r.seconds for r in results),
        "; ".join(sorted({r.stop_reason for r in results})),
        list(results),
        spread,
        dict(first.rule_curves),
    )
    summary.flags = {r: edge_flag(summary.lrs, summary.smoothed, lr) for r, lr in suggestions.items()}
    summary.cached = all(r.cached for r in results)
    return summary
