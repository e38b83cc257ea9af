"""The range-test plot: loss against LR on a log axis with each rule's suggestion marked; rule
styles come from the rule registry so a newly registered rule is drawn too.

Imports run one way: `result.py` calls into this module for `LRFinderResult.plot` and `.save`,
and this module never imports `result.py`. It draws anything shaped like a result
(`RangeTestCurve`, which `LRFinderResult` satisfies) and owns the band helper it needs."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lrlab.finder.rules import RULES

MARKERS = ("o", "^", "v", "s", "D", "P", "X", "*", "<", ">", "h", "p")
COLORS = (
    "tab:red",
    "tab:orange",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:olive",
    "tab:cyan",
    "black",
    "tab:gray",
    "teal",
    "gold",
    "navy",
)


class RangeTestCurve(Protocol):
    """What the plot reads of a range-test result: the fields of `LRFinderResult` it draws."""

    @property
    def lrs(self) -> np.ndarray: ...
    @property
    def losses(self) -> np.ndarray: ...
    @property
    def smoothed(self) -> np.ndarray: ...
    @property
    def val_losses(self) -> np.ndarray | None: ...
    @property
    def suggestions(self) -> Mapping[str, float]: ...
    @property
    def method(self) -> str: ...
    @property
    def group(self) -> str: ...
    @property
    def smoothing(self) -> str: ...
    @property
    def seconds(self) -> float: ...
    @property
    def stop_reason(self) -> str: ...
    @property
    def repeats(self) -> Sequence[RangeTestCurve]: ...
    @property
    def spread(self) -> Mapping[str, Mapping[str, float]]: ...
    @property
    def flags(self) -> Mapping[str, str | None]: ...
    @property
    def rule_curves(self) -> Mapping[str, str]: ...
    @property
    def curves(self) -> Mapping[str, np.ndarray]: ...


def rule_style(rule: str) -> tuple[str, str]:
    """(marker, colour) of a rule, by its position in the registry (stable across plots)."""
    index = list(RULES).index(rule) if rule in RULES else len(RULES)
    return MARKERS[index % len(MARKERS)], COLORS[index % len(COLORS)]


def curve_band(curves: Sequence[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Point-wise (min, max) over `curves` for the first `n` steps; NaN past every curve's end."""
    stack = np.full((len(curves), n), np.nan)
    for i, c in enumerate(curves):
        stack[i, : min(n, len(c))] = c[:n]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # columns where every curve has stopped
        return np.nanmin(stack, axis=0), np.nanmax(stack, axis=0)


def plot_result(
    result: RangeTestCurve, path: str | Path | None = None, ax: Any = None, title: str | None = None
) -> Any:
    """Draw `result` on `ax` (a new figure when None); save a PNG when `path` is given."""
    import matplotlib

    if ax is None:
        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    else:
        fig = ax.figure
    _curves(result, ax)
    _suggestions(result, ax)
    ax.set_xscale("log")
    ax.set_xlabel(f"learning rate ({'head group' if result.group == 'all' else 'group ' + result.group})")
    ax.set_ylabel("training loss")
    _limits(result, ax)
    default_title = f"LR range test ({result.stop_reason}, {len(result.lrs)} steps, {result.seconds:.1f}s)"
    ax.set_title(title or default_title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig


def save_plot(result: RangeTestCurve, path: str | Path, title: str | None = None) -> Path:
    """Draw `result` into a new figure, write it to the PNG `path` and close the figure."""
    figure = plot_result(result, path, title=title)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return Path(path)


def _curves(result: RangeTestCurve, ax: Any) -> None:
    if result.repeats:
        for rep in result.repeats:
            ax.plot(rep.lrs, rep.smoothed, color="tab:blue", alpha=0.25, lw=0.8)
        lo, hi = curve_band([r.smoothed for r in result.repeats], len(result.lrs))
        label = f"range of {len(result.repeats)} runs"
        ax.fill_between(result.lrs, lo, hi, color="tab:blue", alpha=0.15, label=label)
    else:
        ax.plot(result.lrs, result.losses, color="0.6", lw=0.8, alpha=0.7, label="loss (raw)")
    ax.plot(result.lrs, result.smoothed, color="tab:blue", lw=2, label=f"loss ({result.smoothing} smoothed)")
    for name, curve in _other_drawn_curves(result).items():
        readers = ", ".join(
            r
            for r, c in result.rule_curves.items()
            if c == name and np.isfinite(result.suggestions.get(r, np.nan))
        )
        ax.plot(
            result.lrs, curve, color="tab:blue", lw=1.2, ls="--", label=f"loss ({name} smoothed: {readers})"
        )
    if result.val_losses is not None:
        ax.plot(result.lrs, result.val_losses, color="tab:green", lw=1.2, label="held-out loss")


def _other_drawn_curves(result: RangeTestCurve) -> dict[str, np.ndarray]:
    """The lag-free curve, drawn beside the main smoothed one when a shown rule reads it (fastai's
    EMA trails the raw loss by up to ~50 steps, so the two part where the loss turns)."""
    read = set(result.rule_curves.values())
    return {
        name: result.curves[name]
        for name in ("zero_lag",)
        if name in read and name != result.smoothing and name in result.curves and not result.repeats
    }


def _suggestions(result: RangeTestCurve, ax: Any) -> None:
    drawn = {result.smoothing: result.smoothed, **_other_drawn_curves(result)}
    for rule, lr in result.suggestions.items():
        curve = drawn.get(result.rule_curves.get(rule, result.smoothing), result.smoothed)
        finite = np.isfinite(curve)
        if not (np.isfinite(lr) and finite.any()):
            continue
        y = float(np.interp(np.log(lr), np.log(result.lrs[finite]), curve[finite]))
        band = f" (IQR {result.spread[rule]['log10_iqr']:.2f} dec)" if rule in result.spread else ""
        used = " (used)" if rule == result.method else ""
        flag = result.flags.get(rule)
        note = f" [{flag}]" if flag else ""
        marker, color = rule_style(rule)
        label = f"{rule}: {lr:.2e}{band}{used}{note}"
        face = "none" if flag else color  # hollow: a suggestion at the ramp's edge
        ax.plot([lr], [y], marker=marker, color=color, mfc=face, ms=9, ls="none", label=label)


def _limits(result: RangeTestCurve, ax: Any) -> None:
    """Clip the y axis to the informative part: from the minimum to a little above the start."""
    shown = (
        np.concatenate([result.smoothed[:-5], result.losses[:-5]])
        if len(result.lrs) > 10
        else result.smoothed
    )
    shown = shown[np.isfinite(shown)]
    if not shown.size:
        return
    start = result.smoothed[np.isfinite(result.smoothed)][: max(1, len(result.lrs) // 4)]
    top = min(shown.max(), start.max() + 0.5 * abs(start.max())) if start.size else shown.max()
    span = max(top - shown.min(), 1e-12)
    ax.set_ylim(shown.min() - 0.05 * span, top + 0.1 * span)
