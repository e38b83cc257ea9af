"""Why a range test's suggestion deserves suspicion: it sits among the ramp's first points or in the
diverged tail. The table, the plot and a stage's console lines show these flags beside the rules'
suggestions."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from lrlab.finder.rules import trim

EDGE_FLAGS = {
    "ramp start": "its first usable points, before the curve shows a descent",
    "diverged tail": "past where the loss climbs clear of its start",
}
"""The flags `edge_flag` gives, with what each means (printed beside a flagged suggestion)."""


def climb_start(lrs: ArrayLike, smoothed: ArrayLike) -> float:
    """The LR where the smoothed loss, after its minimum, climbs clear of its start (the highest of
    the first tenth of the trimmed curve plus their spread, so a low first reading or a noisy flat
    start is no climb); NaN when it never does or the trimmed curve is empty."""
    lr_arr, loss_arr = trim(lrs, smoothed)
    if not loss_arr.size:
        return float("nan")
    start = loss_arr[: max(3, loss_arr.size // 10)]
    level = start.max() + max(start.max() - start.min(), 0.01 * abs(start.max()))
    low = int(np.argmin(loss_arr))
    above = np.flatnonzero(loss_arr[low:] > level)
    return float(lr_arr[low + int(above[0])]) if above.size else float("nan")


def edge_flag(lrs: ArrayLike, smoothed: ArrayLike, lr: float) -> str | None:
    """Why a suggestion deserves suspicion: "ramp start" at or below the third usable point (the
    curve had not moved), "diverged tail" in the last 3 usable points or at or past
    :func:`climb_start`; None otherwise."""
    lr_arr, loss_arr = trim(lrs, smoothed)
    if not loss_arr.size or not np.isfinite(lr):
        return None
    if lr <= lr_arr[min(2, lr_arr.size - 1)]:
        return "ramp start"
    last = lr_arr[max(0, lr_arr.size - 3)]
    climb = climb_start(lrs, smoothed)
    tail_start = min(climb, last) if np.isfinite(climb) else last
    return "diverged tail" if lr >= tail_start else None
