"""The range test's settings, one dataclass: `find_lr(..., config=FinderConfig(...))` from Python
and the `lr_finder` config group (registered as that group's schema) share these defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass

MODES = ("exp", "linear")
MAX_START_LR = 0.1
MIN_SPAN = 100.0
MIN_ITER = 8
GROUP_LRS = ("ratio", "equal")


# The finder-vs-grid benchmark's lowest mean test regret (scored leave-one-dataset-out), on the
# EMA curve: minimum_or_valley (which survives curves where minimum lands at the ramp's start)
# scaled by the factor calibrated there.
DEFAULT_RULE = "lrlab"


@dataclass
class FinderConfig:
    """How the range test ramps, smooths, stops and suggests.

    The ramp goes from `start_lr` to `end_lr` over `num_iter` optimizer steps (`mode` exp or
    linear). `smoothing` is the curve shown: `ema` (fastai's causal debiased EMA with `beta`, which
    also drives the divergence test) or `zero_lag` (forward-backward EMA, per-pass `zero_lag_beta`),
    or `lightning` / `torch_lr_finder` (those tools' own smoothers). Each rule is computed on the
    curve it was designed on (`rule_curve: calibrated`: fastai's rules on the EMA, lrlab's on
    zero-lag, Lightning's and torch-lr-finder's on theirs), or on one curve for all. `group_lrs:
    ratio` ramps the parameter groups together keeping their LR ratios; `equal` ramps every group at
    the same LR, as fastai's `lr_find` does. The test stops when the smoothed loss exceeds
    `div_factor` x its best or any loss is NaN/inf (`stop_div`). `suggest` names the rule used (any
    name in `lrlab.finder.rules.RULES`, or `all`: print every rule, use the default). The defaults,
    `lrlab` shown on the `ema` curve, are the pair with the lowest mean test regret
    (leave-one-dataset-out) in the finder-vs-grid benchmark (experiments/finder_benchmark/).
    `repeats` > 1 reruns with other data orders and reports each rule's median and spread;
    `val_batches` > 0 also records a held-out loss; `per_group` sweeps each layer group on its own;
    `read_every` is the number of steps between host read-backs. `share_curves` reuses a curve
    recorded from the identical starting state (see lrlab.finder.curve_cache).
    """

    start_lr: float = 1e-7
    end_lr: float = 10.0
    num_iter: int = 100
    mode: str = "exp"
    smoothing: str = "ema"
    rule_curve: str = "calibrated"
    beta: float = 0.98
    zero_lag_beta: float = 0.8
    stop_div: bool = True
    div_factor: float = 4.0
    suggest: str = DEFAULT_RULE
    repeats: int = 1
    val_batches: int = 0
    per_group: bool = False
    read_every: int = 10
    group_lrs: str = "ratio"
    # auto: range tests of one sweep's trials that start from the identical state share one curve
    # (kept in the study); off; or a folder that any runs share.
    share_curves: str = "auto"

    @property
    def rule(self) -> str:
        """The rule whose suggestion is used (`all` prints every rule and uses the default rule)."""
        return DEFAULT_RULE if self.suggest == "all" else self.suggest

    def check(self) -> FinderConfig:
        """Raise ValueError naming the first bad field; returns self so calls can chain."""
        from lrlab.finder.rules import CURVES, RULES

        choices = {
            "mode": MODES,
            "smoothing": CURVES,
            "rule_curve": ("calibrated", *CURVES),
            "group_lrs": GROUP_LRS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name}={getattr(self, name)!r} is not valid; choose one of: {', '.join(allowed)}"
                )
        if self.suggest != "all" and self.suggest not in RULES:
            raise ValueError(f"suggest={self.suggest!r} is not valid; choose one of: {', '.join(RULES)}, all")
        if not 0 < self.start_lr < self.end_lr < math.inf:
            raise ValueError(
                f"need 0 < start_lr < end_lr (finite), got start_lr={self.start_lr}, end_lr={self.end_lr}"
            )
        if not self.start_lr < MAX_START_LR:
            raise ValueError(
                f"start_lr={self.start_lr} is too high: the ramp must start where training is stable "
                f"(below {MAX_START_LR:g}; fastai starts at 1e-7)"
            )
        if self.end_lr / self.start_lr < MIN_SPAN:
            raise ValueError(
                f"end_lr={self.end_lr} must be at least {MIN_SPAN:g}x start_lr={self.start_lr}: "
                "the rules need a curve spanning a couple of decades"
            )
        if self.num_iter < MIN_ITER:
            raise ValueError(
                f"num_iter={self.num_iter} must be at least {MIN_ITER}: the rules drop the first 10% "
                "and the last 5 points of the curve and need enough left to find a descent"
            )
        for name in ("beta", "zero_lag_beta"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1)")
        if not self.div_factor > 1:
            raise ValueError(f"div_factor={self.div_factor} must be greater than 1")
        for name in ("repeats", "read_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if self.val_batches < 0:
            raise ValueError(f"val_batches={self.val_batches} must be >= 0")
        return self
