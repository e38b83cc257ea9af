"""The valid range of every numeric setting, written once: the config check reads it before any
model is built or any run is created, and the engine and schedules read the same entries for
callers that skip the config (notebooks). torch-free, so the CLI can check cheaply.

Keys are dotted config paths; `*` stands for every entry of a list (`stages.*.pct_start`). A key a
config does not have (an optimizer without `momentum`) is not checked.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from lrlab.errors import ConfigError


@dataclass(frozen=True)
class Limit:
    """A number between `low` and `high` (open ends exclusive); `optional`: null allowed;
    `integer`: a whole number; `length`: a list of that many such numbers; `ordered`: a list that
    does not decrease. `note` says what a special value means."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    optional: bool = False
    length: int | None = None
    ordered: bool = False
    note: str = ""

    def describe(self) -> str:
        kind = "a whole number" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            bounds = f"{kind} in {left}{self.low:g}, {self.high:g}{right}"
        elif self.low is not None:
            bounds = f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
        elif self.high is not None:
            bounds = f"{kind} {'<' if self.high_open else '<='} {self.high:g}"
        else:
            bounds = f"a finite {kind}"
        if self.length is not None:
            order = ", not decreasing" if self.ordered else ""
            bounds = f"a list of {self.length} values, each {bounds}{order}"
        extra = " or null" if self.optional else ""
        return bounds + extra + (f" ({self.note})" if self.note else "")

    def _number_ok(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.integer and value != int(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def check(self, value: Any, key: str) -> None:
        """ConfigError naming `key`, the value and the valid range unless `value` fits."""
        if value is None and self.optional:
            return
        if self.length is not None:
            values = list(value) if isinstance(value, (list, tuple)) or hasattr(value, "__len__") else None
            fits = (
                values is not None
                and len(values) == self.length
                and all(self._number_ok(v) for v in values)
                and (not self.ordered or all(a <= b for a, b in itertools.pairwise(values)))
            )
        else:
            fits = self._number_ok(value)
        if not fits:
            shown = list(value) if isinstance(value, (list, tuple)) else value
            raise ConfigError(f"{key}={shown!r} is not valid: it must be {self.describe()}.")


PROBABILITY = Limit(0, 1)
FRACTION_BELOW_ONE = Limit(0, 1, high_open=True)
POSITIVE = Limit(0, low_open=True)
NON_NEGATIVE = Limit(0)
COUNT = Limit(1, integer=True)

LIMITS: dict[str, Limit] = {
    "epochs": Limit(0, integer=True),
    "freeze_epochs": Limit(0, integer=True),
    "lr_spread": Limit(1, note="the first layer group trains at lr / lr_spread"),
    "model.body_groups": COUNT,
    "model.drop_rate": Limit(0, 1, high_open=True, optional=True, note="null: the model's default"),
    "model.drop_path_rate": Limit(0, 1, high_open=True, optional=True, note="null: the model's default"),
    "train.grad_accum": COUNT,
    "train.grad_clip": Limit(0, low_open=True, optional=True, note="the largest gradient norm; null: off"),
    "train.log_every": COUNT,
    "train.label_smoothing": FRACTION_BELOW_ONE,
    "train.ordinal_smoothing": Limit(0, note="0: off"),
    "train.mixup_alpha": Limit(0, note="0: off"),
    "train.cutmix_alpha": Limit(0, note="0: off"),
    "train.mix_prob": PROBABILITY,
    "train.ema_decay": Limit(0, 1, low_open=True, high_open=True, optional=True, note="null: off"),
    "train.layer_decay": Limit(0, 1, low_open=True, optional=True, note="null: off"),
    "train.min_delta": NON_NEGATIVE,
    "train.patience": Limit(1, integer=True, optional=True, note="null: off"),
    "train.save_top_k": COUNT,
    "data.augment.hflip": PROBABILITY,
    "data.augment.vflip": PROBABILITY,
    "data.augment.rotate": Limit(0, 180, note="degrees"),
    "data.augment.brightness": FRACTION_BELOW_ONE,
    "data.augment.contrast": FRACTION_BELOW_ONE,
    "data.augment.scale": Limit(0, 1, low_open=True, length=2, ordered=True, note="the crop's area range"),
    "optimizer.weight_decay": NON_NEGATIVE,
    "optimizer.momentum": FRACTION_BELOW_ONE,
    "optimizer.eps": POSITIVE,
    "optimizer.betas": Limit(0, 1, high_open=True, length=2),
    "optimizer.d_coef": POSITIVE,
    "optimizer.warmup_steps": Limit(0, integer=True),
    "schedule.pct_start": FRACTION_BELOW_ONE,
    "schedule.div": POSITIVE,
    "schedule.div_final": POSITIVE,
    "schedule.moms": Limit(0, 1, high_open=True, length=3),
    "lr_auto.race": Limit(0, 1, low_open=True, high_open=True, note="the fraction of a stage's epochs raced"),
    "lr_auto.reduction_factor": Limit(2, integer=True),
    "stages.*.epochs": Limit(0, integer=True),
    "stages.*.lr_scale": POSITIVE,
    "stages.*.lr_spread": Limit(1, note="the first layer group trains at lr / lr_spread"),
    "stages.*.pct_start": Limit(0, 1, high_open=True, optional=True),
    "stages.*.div": Limit(0, low_open=True, optional=True),
    "stages.*.div_final": Limit(0, low_open=True, optional=True),
}


def _values(config: Any, path: list[str], prefix: str) -> Iterator[tuple[str, Any]]:
    """(key, value) of every entry `path` reaches in a nested mapping/list config; a part the
    config lacks yields nothing."""
    if not path:
        yield prefix, config
        return
    head, rest = path[0], path[1:]
    if head == "*":
        for i, item in enumerate(config if isinstance(config, (list, tuple)) or _is_list(config) else []):
            yield from _values(item, rest, f"{prefix}.{i}")
        return
    if (isinstance(config, Mapping) or hasattr(config, "keys")) and head in config:
        yield from _values(config[head], rest, f"{prefix}.{head}" if prefix else head)


def _is_list(config: Any) -> bool:
    return hasattr(config, "__len__") and hasattr(config, "__getitem__") and not hasattr(config, "keys")


def check_limits(config: Any, limits: Mapping[str, Limit] = LIMITS) -> None:
    """ConfigError for the first value of `config` (a mapping, e.g. the composed DictConfig) that
    breaks its entry in `limits`."""
    for key, limit in limits.items():
        for where, value in _values(config, key.split("."), ""):
            limit.check(value, where)
