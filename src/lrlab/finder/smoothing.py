"""Loss smoothing for range-test curves: fastai's causal debiased EMA, lrlab's zero-lag
(forward-backward) EMA, and the smoothers of Lightning's tuner and torch-lr-finder, so that each
tool's rule reads the curve it reads there. Written by hand: each tool keeps its smoother inside
its own callback or loop."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def as_1d(values: ArrayLike, name: str) -> np.ndarray:
    """Return ``values`` as a 1-D float64 array, or raise ``ValueError`` naming ``name``; the input
    check of the smoothers here and of the suggestion rules."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _check_beta(beta: float) -> None:
    """Raise ``ValueError`` unless ``0 <= beta < 1``."""
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must satisfy 0 <= beta < 1, got {beta}")


def finite_prefix(losses: ArrayLike) -> int:
    """Return the number of leading finite losses, i.e. the index of the first NaN or inf."""
    arr = as_1d(losses, "losses")
    bad = np.flatnonzero(~np.isfinite(arr))
    return int(bad[0]) if bad.size else int(arr.size)


def _ema_pass(values: np.ndarray, beta: float) -> np.ndarray:
    """Debiased EMA of an all-finite array, as a ratio of weighted sums so that output[0] == values[0]."""
    out = np.empty_like(values)
    num = 0.0
    den = 0.0
    for i, value in enumerate(values):
        num = beta * num + value
        den = beta * den + 1.0
        out[i] = num / den
    return out


def ema_smooth(losses: ArrayLike, beta: float = 0.98) -> np.ndarray:
    """Causal debiased EMA, as fastai's recorder smooths losses: ``avg/(1-beta**(i+1))``.

    From the first non-finite loss onwards the output is NaN; the first output equals the first loss.
    """
    _check_beta(beta)
    arr = as_1d(losses, "losses")
    out = np.full_like(arr, np.nan)
    k = finite_prefix(arr)
    out[:k] = _ema_pass(arr[:k], beta)
    return out


def zero_lag_smooth(losses: ArrayLike, beta: float = 0.8) -> np.ndarray:
    """Forward-backward debiased EMA with no phase lag, applied to the finite prefix.

    `beta` is per pass; the default 0.8 averages over about +-5 steps (half a decade of a
    100-step test), where fastai's causal beta 0.98 trails the raw loss by up to ~50 steps.

    The debiased EMA is run forward then backward, and also backward then forward, and
    the two results are averaged.  Writing the passes directly (instead of
    ``scipy.signal.filtfilt``) needs no edge padding, so curves of any length, even
    one point, work, and debiasing removes the zero-start bias at both ends.  Averaging
    both orders makes the smoother commute exactly with reversing the curve, so a dip
    symmetric about the middle of the curve keeps its argmin; a single forward-backward
    order does not, because the debiased start-up transient is one-sided.  Off-centre dips
    can still move a few points at large ``beta`` because of edge effects.  Non-finite
    entries, and everything after the first one, are NaN.
    """
    _check_beta(beta)
    arr = as_1d(losses, "losses")
    out = np.full_like(arr, np.nan)
    k = finite_prefix(arr)
    head = arr[:k]
    forward_backward = _ema_pass(_ema_pass(head, beta)[::-1], beta)[::-1]
    backward_forward = _ema_pass(_ema_pass(head[::-1], beta)[::-1], beta)
    out[:k] = 0.5 * (forward_backward + backward_forward)
    return out


LIGHTNING_BETA = 0.98  # Lightning's `_LRCallback(beta=0.98)`
TORCH_LR_FINDER_SMOOTH_F = 0.05  # torch-lr-finder's `range_test(smooth_f=0.05)`


def lightning_smooth(losses: ArrayLike, beta: float = LIGHTNING_BETA) -> np.ndarray:
    """Lightning's `Tuner.lr_find` curve: the EMA ``avg = beta*avg + (1-beta)*loss`` divided by
    ``1 - beta**(step + 1)`` where step is the trainer's global step *after* the optimizer step, so
    point i is debiased with ``beta**(i + 2)``: the first point is ``(1-beta)/(1-beta**2)`` = 0.505x
    its loss at beta 0.98. NaN from the first non-finite loss on."""
    _check_beta(beta)
    arr = as_1d(losses, "losses")
    out = np.full_like(arr, np.nan)
    avg = 0.0
    for i in range(finite_prefix(arr)):
        avg = beta * avg + (1 - beta) * arr[i]
        out[i] = avg / (1 - beta ** (i + 2))
    return out


def torch_lr_finder_smooth(losses: ArrayLike, smooth_f: float = TORCH_LR_FINDER_SMOOTH_F) -> np.ndarray:
    """torch-lr-finder's `range_test` curve: the first loss as it is, then
    ``smooth_f * loss + (1 - smooth_f) * previous`` (no debiasing). NaN from the first non-finite
    loss on."""
    if not 0.0 < smooth_f <= 1.0:
        raise ValueError(f"smooth_f must satisfy 0 < smooth_f <= 1, got {smooth_f}")
    arr = as_1d(losses, "losses")
    out = np.full_like(arr, np.nan)
    for i in range(finite_prefix(arr)):
        out[i] = arr[i] if i == 0 else smooth_f * arr[i] + (1 - smooth_f) * out[i - 1]
    return out
