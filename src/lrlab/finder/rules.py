"""Loss smoothing and learning-rate suggestion rules for the LR range test.

These are written by hand rather than imported because fastai is not a
dependency of lrlab, and in fastai the rules live inside its ``Learner``
machinery (``Recorder``'s ``AvgSmoothLoss`` and ``Learner.lr_find``), so they
cannot be reused on a plain ``(lrs, losses)`` curve.  The definitions follow
fastai's ``callback/schedule.py`` (``valley``, ``steep``, ``minimum``,
``slide``) index for index, including its quirks, which are noted per rule.

The rules expect *smoothed* losses: fastai's rules the output of :func:`ema_smooth` (what
fastai's recorder stores and what they were tuned on), lrlab's own rules the zero-lag curve;
each registered rule names its curve, and :func:`suggest_on_curves` applies every rule to its
own. :func:`suggest` does not smooth.
Computation is in float64, whereas fastai uses float32 tensors, so results can
differ only where two candidates tie to within float32 rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from lrlab.finder.smoothing import as_1d, finite_prefix

# Calibrated in the finder-vs-grid benchmark, leave-one-dataset-out (experiments/finder_benchmark/).
DESCENT_FRACTION = 0.98
BOTTOM_FACTOR = 1.0
SUGGESTION_SCALE = 2.5  # the `lrlab` rule: minimum_or_valley x this


def _curve(lrs: ArrayLike, losses: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(lrs, losses)`` as equal-length 1-D float64 arrays."""
    lr_arr = as_1d(lrs, "lrs")
    loss_arr = as_1d(losses, "losses")
    if lr_arr.shape != loss_arr.shape:
        raise ValueError(f"lrs and losses must have the same length, got {lr_arr.size} and {loss_arr.size}")
    return lr_arr, loss_arr


def _trimmed_curve(
    lrs: ArrayLike, losses: ArrayLike, rule: str, min_points: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validate an already-trimmed curve for ``rule``: finite losses and at least ``min_points`` points."""
    lr_arr, loss_arr = _curve(lrs, losses)
    if not np.all(np.isfinite(loss_arr)):
        raise ValueError(f"{rule}: losses contain NaN or inf; pass the curve through trim() first")
    if loss_arr.size < min_points:
        raise ValueError(f"{rule}: needs at least {min_points} point(s) after trimming, got {loss_arr.size}")
    return lr_arr, loss_arr


def trim(lrs: ArrayLike, losses: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Apply fastai's ``lr_find`` trimming: keep ``[n//10 : -5]``, then cut at the first non-finite loss.

    ``n`` is the number of recorded points (fastai uses its requested ``num_it``, which
    equals ``n`` unless the run stopped early).  fastai cuts at the first NaN only; here
    ``inf`` and ``-inf`` cut too.
    """
    lr_arr, loss_arr = _curve(lrs, losses)
    n = loss_arr.size
    lr_arr = lr_arr[n // 10 : -5]
    loss_arr = loss_arr[n // 10 : -5]
    k = finite_prefix(loss_arr)
    return lr_arr[:k].copy(), loss_arr[:k].copy()


def suggest_minimum(lrs: ArrayLike, losses: ArrayLike) -> float:
    """fastai ``minimum``: the learning rate at the lowest loss (first if tied), divided by 10.

    Needs at least one point.
    """
    lr_arr, loss_arr = _trimmed_curve(lrs, losses, "minimum", 1)
    return float(lr_arr[int(np.argmin(loss_arr))]) / 10.0


def suggest_steep(lrs: ArrayLike, losses: ArrayLike) -> float:
    """fastai ``steep``: the left point of the most negative slope of loss against ``log(lr)``.

    Needs at least two points, positive learning rates and distinct consecutive learning rates.
    """
    lr_arr, loss_arr = _trimmed_curve(lrs, losses, "steep", 2)
    if not np.all(np.isfinite(lr_arr) & (lr_arr > 0)):
        raise ValueError("steep: learning rates must be finite and positive (the slope uses log(lr))")
    log_steps = np.diff(np.log(lr_arr))
    if np.any(log_steps == 0):
        raise ValueError("steep: consecutive learning rates must differ")
    grads = np.diff(loss_arr) / log_steps
    return float(lr_arr[int(np.argmin(grads))])


def suggest_valley(lrs: ArrayLike, losses: ArrayLike) -> float:
    """fastai ``valley``: a point about 2/3 of the way along the longest decreasing run of the curve.

    ``lds[i]`` is the length of the longest strictly decreasing subsequence ending at
    ``i``; ``max_end`` is its first argmax and, as in fastai, ``max_start = max_end -
    lds[max_end]`` (one before the run's first point), or 0 when no point has
    ``lds > 1``.  The index ``max_start + int(s) + int(s/2)`` with
    ``s = (max_end - max_start)/3`` can be -1, which, as in fastai, wraps to the last
    point.  Needs at least one point.
    """
    lr_arr, loss_arr = _trimmed_curve(lrs, losses, "valley", 1)
    n = loss_arr.size
    lds = np.ones(n, dtype=np.int64)
    for i in range(1, n):
        higher = loss_arr[:i] > loss_arr[i]
        if higher.any():
            lds[i] = lds[:i][higher].max() + 1
    max_end = int(np.argmax(lds))
    max_start = max_end - int(lds[max_end]) if lds[max_end] > 1 else 0
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    return float(lr_arr[idx])


def suggest_slide(
    lrs: ArrayLike,
    losses: ArrayLike,
    lr_diff: int = 15,
    thresh: float = 0.005,
    adjust_value: float = 1.0,
) -> float:
    """fastai ``slide``: walk a window of ``lr_diff`` points leftwards from the end of the curve.

    With ``g = np.gradient(losses)`` (per index, not per lr), the window ``(r, l) = (-1,
    -1 - lr_diff)`` moves one point left while ``l`` is a valid negative index and
    ``|g[r] - g[l]| > thresh``, remembering ``lrs[l]`` before each move; the result is the
    last remembered learning rate (initially ``lrs[-1 - lr_diff]``) times
    ``adjust_value``.  Needs more than ``lr_diff`` points and at least two.
    """
    if int(lr_diff) != lr_diff or lr_diff < 0:
        raise ValueError(f"slide: lr_diff must be a non-negative integer, got {lr_diff}")
    lr_diff = int(lr_diff)
    lr_arr, loss_arr = _trimmed_curve(lrs, losses, "slide", max(lr_diff + 1, 2))
    loss_grad = np.gradient(loss_arr)
    r_idx = -1
    l_idx = r_idx - lr_diff
    local_min_lr = lr_arr[l_idx]
    while l_idx >= -loss_arr.size and abs(loss_grad[r_idx] - loss_grad[l_idx]) > thresh:
        local_min_lr = lr_arr[l_idx]
        r_idx -= 1
        l_idx -= 1
    return float(local_min_lr) * adjust_value


def suggest_descent(lrs: ArrayLike, losses: ArrayLike, fraction: float = DESCENT_FRACTION) -> float:
    """lrlab ``descent``, made for a lag-free (zero-lag) curve: the smallest learning rate at which
    the loss has made ``fraction`` of its descent from the start of the trimmed curve to its
    minimum. Fails (NaN under ``suggest("all")``) when the curve never goes below its start."""
    if not 0 < fraction <= 1:
        raise ValueError(f"descent: fraction must be in (0, 1], got {fraction}")
    lr_arr, loss_arr = _trimmed_curve(lrs, losses, "descent", 2)
    low = int(np.argmin(loss_arr))
    drop = loss_arr[0] - loss_arr[low]
    if not drop > 0:
        raise ValueError("descent: the loss never falls below its starting level")
    reached = np.flatnonzero(loss_arr[: low + 1] <= loss_arr[0] - fraction * drop)
    return float(lr_arr[int(reached[0])])


def suggest_bottom(lrs: ArrayLike, losses: ArrayLike, factor: float = BOTTOM_FACTOR) -> float:
    """lrlab ``bottom``, made for a lag-free (zero-lag) curve: the learning rate at the curve's lowest
    loss divided by ``factor``. fastai's ``minimum`` does the same on the causal EMA, whose lag puts
    the minimum late; on the zero-lag curve the minimum sits where the loss really bottoms out."""
    if not factor >= 1:
        raise ValueError(f"bottom: factor must be at least 1, got {factor}")
    lr_arr, loss_arr = _trimmed_curve(lrs, losses, "bottom", 1)
    return float(lr_arr[int(np.argmin(loss_arr))]) / factor


def suggest_steepest_lr(lrs: ArrayLike, losses: ArrayLike) -> float:
    """Lightning's `Tuner.lr_find` suggestion: the LR at the most negative slope of the loss per
    unit *LR* (``np.gradient(losses, lrs)``, central differences on the LR axis, not on log LR).
    On an exponential ramp this divides each step's change by its LR, so it leans towards small
    LRs. Needs at least two points and distinct learning rates."""
    lr_arr, loss_arr = _trimmed_curve(lrs, losses, "lightning", 2)
    if np.any(np.diff(lr_arr) == 0):
        raise ValueError("lightning: consecutive learning rates must differ")
    return float(lr_arr[int(np.argmin(np.gradient(loss_arr, lr_arr)))])


def suggest_steepest_step(lrs: ArrayLike, losses: ArrayLike) -> float:
    """torch-lr-finder's suggestion: the LR at the most negative slope of the loss per *step*
    (``np.gradient(losses)``; per log LR on an exponential ramp). Needs at least two points."""
    lr_arr, loss_arr = _trimmed_curve(lrs, losses, "torch_lr_finder", 2)
    return float(lr_arr[int(np.argmin(np.gradient(loss_arr)))])


def suggest_minimum_or_valley(lrs: ArrayLike, losses: ArrayLike) -> float:
    """lrlab ``minimum_or_valley``: the larger of fastai's ``minimum`` and ``valley``. Where the
    curve has a clear bottom, minimum (its LR / 10) is the better choice and usually the larger;
    where it is flat before it rises, its lowest point is noise in the flat part and minimum falls
    far below valley: seen on ELPV's unfrozen stage after the head stage (minimum 1.1e-7 to 8.1e-6,
    valley 7.6e-4 to 5.9e-3), where valley, 2/3 down the longest descent, is the safe choice."""
    lr_arr, loss_arr = _trimmed_curve(lrs, losses, "minimum_or_valley", 1)
    return max(float(lr_arr[int(np.argmin(loss_arr))]) / 10.0, suggest_valley(lr_arr, loss_arr))


def suggest_lrlab(lrs: ArrayLike, losses: ArrayLike, scale: float = SUGGESTION_SCALE) -> float:
    """lrlab's default ``lrlab``: ``minimum_or_valley`` times ``scale``. On fastai's EMA curve both
    minimum and valley sit below the best LR a grid search finds (in the finder benchmark by 0.35
    decades on average, below it in 22 of 24 runs): the EMA lags, so its turning points come late
    in loss and early in LR. The factor was chosen leave-one-dataset-out on that benchmark. No cap
    at the curve's lowest point: on a curve that is flat before it rises that point is noise in the
    flat part (seed 0 of the default ELPV run: 9.3e-7, which would undo minimum_or_valley's guard)."""
    if not scale > 0:
        raise ValueError(f"lrlab: scale must be positive, got {scale}")
    lr_arr, loss_arr = _trimmed_curve(lrs, losses, "lrlab", 1)
    return scale * suggest_minimum_or_valley(lr_arr, loss_arr)


RuleFunction = Callable[[np.ndarray, np.ndarray], float]
CURVES = ("ema", "zero_lag", "lightning", "torch_lr_finder")


@dataclass(frozen=True)
class Rule:
    """A suggestion rule: ``function(lrs, smoothed_losses) -> lr`` on the trimmed curve, the
    smoothing it was designed on (``ema``: fastai's causal EMA; ``zero_lag``; ``lightning`` and
    ``torch_lr_finder``: those tools' own smoothers), one line on what it picks, and how the curve
    is trimmed first: ``skip=None`` is fastai's :func:`trim`, ``(begin, end)`` drops that many
    points at each end and then every non-finite one, as Lightning and torch-lr-finder do."""

    function: RuleFunction
    curve: str
    summary: str
    skip: tuple[int, int] | None = None


RULES: dict[str, Rule] = {
    "valley": Rule(suggest_valley, "ema", "fastai's default: ~2/3 along the longest descent"),
    "steep": Rule(suggest_steep, "ema", "fastai: the steepest descent"),
    "minimum": Rule(suggest_minimum, "ema", "fastai: the minimum's LR / 10"),
    "slide": Rule(suggest_slide, "ema", "fastai: where the slope stops changing, sliding from the end"),
    "descent": Rule(
        suggest_descent, "zero_lag", f"lrlab: {DESCENT_FRACTION:.0%} of the descent to the minimum"
    ),
    "bottom": Rule(
        suggest_bottom,
        "zero_lag",
        "lrlab: the LR at the lag-free curve's minimum"
        + (f" / {BOTTOM_FACTOR:g}" if BOTTOM_FACTOR != 1 else ""),
    ),
    "minimum_or_valley": Rule(suggest_minimum_or_valley, "ema", "lrlab: the larger of minimum and valley"),
    "lrlab": Rule(
        suggest_lrlab, "ema", f"lrlab's default: {SUGGESTION_SCALE:g} x the larger of minimum and valley"
    ),
    "lightning": Rule(
        suggest_steepest_lr, "lightning", "Lightning's tuner: the steepest slope per unit LR", skip=(10, 1)
    ),
    "torch_lr_finder": Rule(
        suggest_steepest_step, "torch_lr_finder", "torch-lr-finder: the steepest slope per step", skip=(10, 5)
    ),
}
"""Every suggestion rule by name: the one registry the CLI, `suggest="all"`, sweeps' finder
baselines, plots and reports read. Add a rule with :func:`register_rule`."""


def register_rule(
    name: str,
    function: RuleFunction,
    curve: str = "zero_lag",
    summary: str = "",
    skip: tuple[int, int] | None = None,
) -> RuleFunction:
    """Make `function(lrs, smoothed_losses) -> lr` (on a curve smoothed with `curve` and trimmed
    as `skip` says, see `Rule`) available everywhere as rule `name`."""
    if name == "all" or not name.isidentifier():
        raise ValueError(f"rule name {name!r} is not valid: use an identifier other than 'all'")
    if curve not in CURVES:
        raise ValueError(f"curve={curve!r} is not valid; choose one of: {', '.join(CURVES)}")
    RULES[name] = Rule(function, curve, summary or name, skip)
    return function


def trim_for(rule: str, lrs: ArrayLike, losses: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The part of a smoothed curve `rule` reads: fastai's :func:`trim`, or the rule's own `skip`."""
    skip = RULES[rule].skip
    if skip is None:
        return trim(lrs, losses)
    lr_arr, loss_arr = _curve(lrs, losses)
    begin, end = skip
    lr_arr, loss_arr = (
        lr_arr[begin : max(begin, lr_arr.size - end)],
        loss_arr[begin : max(begin, loss_arr.size - end)],
    )
    finite = np.isfinite(loss_arr)
    return lr_arr[finite].copy(), loss_arr[finite].copy()


def rule_curves(rule_curve: str = "calibrated") -> dict[str, str]:
    """The curve each rule is computed on: its own (`calibrated`) or one for all (`ema`, `zero_lag`)."""
    if rule_curve != "calibrated" and rule_curve not in CURVES:
        raise ValueError(f"rule_curve={rule_curve!r} is not valid; choose calibrated, {', '.join(CURVES)}")
    return {name: rule.curve if rule_curve == "calibrated" else rule_curve for name, rule in RULES.items()}


def suggest(lrs: ArrayLike, losses: ArrayLike, method: str = "valley") -> float | dict[str, float]:
    """Trim a smoothed range-test curve as each rule does (:func:`trim_for`) and apply one rule,
    or all of them.

    ``method`` is one of :data:`RULES` or ``"all"``; ``"all"`` returns ``{rule: lr}`` with
    NaN for any rule the curve is too short for, while a single rule raises ``ValueError``.
    """
    if method != "all" and method not in RULES:
        valid = ", ".join(repr(m) for m in (*RULES, "all"))
        raise ValueError(f"unknown method {method!r}; valid methods are {valid}")
    if method != "all":
        return RULES[method].function(*trim_for(method, lrs, losses))
    return {rule: _safe(rule, *trim_for(rule, lrs, losses)) for rule in RULES}


def suggest_on_curves(
    lrs: ArrayLike, curves: Mapping[str, ArrayLike], rule_curve: str = "calibrated"
) -> dict[str, float]:
    """Every rule's suggestion, each on the smoothed curve `rule_curves(rule_curve)` names
    (`curves` maps ema / zero_lag to smoothed losses); NaN where a rule cannot apply."""
    out = {}
    for rule, curve in rule_curves(rule_curve).items():
        out[rule] = _safe(rule, *trim_for(rule, lrs, curves[curve]))
    return out


def _safe(rule: str, lrs: np.ndarray, losses: np.ndarray) -> float:
    try:
        return RULES[rule].function(lrs, losses)
    except ValueError:
        return float("nan")
