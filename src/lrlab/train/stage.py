"""One training stage of the staged trainer (the schema of each entry of the `stages` config list),
its choice list for `lr_spread_mode`, the parser of its `trainable` spec and `lr=auto`'s settings.
No torch import, so the CLI can register and check it cheaply."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lrlab.core.limits import LIMITS
from lrlab.errors import ConfigError

SPREAD_MODES = ("geometric", "slice_hi")
SEARCHED_LRS = ("find", "auto")  # stage lr values decided by a range test (auto: then a race)
RACE_METRICS = ("valid_loss", "error_rate")
TRAINABLE_HELP = "use head, all, or from:K (layer groups K.. onwards; negative K counts from the end)"


def parse_trainable(trainable: str) -> int | None:
    """The first trainable layer group a `trainable` spec names: 'head' -> -1, 'from:K' -> K,
    'all' -> None. ConfigError for anything else (the one parser the config check uses too)."""
    spec = str(trainable)
    if spec == "all":
        return None
    if spec == "head":
        return -1
    if spec.startswith("from:") and spec[5:].lstrip("-").isdigit():
        return int(spec[5:])
    raise ConfigError(f"trainable={spec!r} is not valid; {TRAINABLE_HELP}.")


def uses_range_test(lr: Any) -> bool:
    """Whether a stage's `lr` is decided by a range test (`find`, or `auto`, which races from it)."""
    return str(lr) in SEARCHED_LRS


@dataclass
class AutoLrConfig:
    """`lr=auto`: the range test's suggestion times each of `factors` (the suggestion's own factor
    first) raced for `race` of the stage's epochs (at least one) under Optuna's successive-halving
    pruner (`reduction_factor`, one rung per epoch from the first); the candidate with the best
    `metric` after the race continues from its state to the end of the stage.

    The defaults were chosen by replaying races on the finder benchmark's development grids
    (`benchmarks/finder_race_replay.py`): the range test falls short where the best LR sits above
    its curve's minimum (from scratch by ~1.4 decades, a plain-SGD probe by ~0.7), and a short race
    favours the lower LR of two that end the other way round, so the candidates go up, not down.
    Valid error, not loss, judges: mid-schedule valid loss jumped 1.70 -> 4.43 between two epochs
    of one race, and error is what the runs are scored on."""

    factors: list[float] = field(default_factory=lambda: [1.0, 3.0, 10.0])
    race: float = 0.2
    reduction_factor: int = 3
    metric: str = "error_rate"

    def check(self, key: str = "lr_auto") -> AutoLrConfig:
        """ConfigError naming the first bad key; returns self."""
        if not self.factors or any(not f > 0 for f in self.factors):
            raise ConfigError(f"{key}.factors={list(self.factors)} must be one or more positive numbers.")
        for name in ("race", "reduction_factor"):
            LIMITS[f"lr_auto.{name}"].check(getattr(self, name), f"{key}.{name}")
        if self.metric not in RACE_METRICS:
            raise ConfigError(
                f"{key}.metric={self.metric!r} is not valid; choose one of: {', '.join(RACE_METRICS)}."
            )
        return self

    def race_epochs(self, epochs: int) -> int:
        """Epochs each candidate may train in the race: `race` of the stage's, at least 1."""
        return max(1, round(self.race * epochs))


@dataclass
class Stage:
    """One training stage.

    trainable: 'head', 'all', or 'from:K' (layer groups K.. onwards; negative K counts from the end).
    lr: a number, 'find' to take the range test's `lr_rule` suggestion times `lr_scale`, or 'auto'
    to race candidates around that suggestion (`AutoLrConfig`) and keep the winner.
    lr_spread: the first layer group gets lr / lr_spread, the head lr, geometric in between
    (lr_spread_mode 'slice_hi' instead gives every body group lr / lr_spread, as fastai's slice(lr)).
    """

    name: str
    epochs: int
    lr: Any = (
        "find"  # a number, "find" or "auto" (Any: OmegaConf 2.3 rejects an int such as lr=1 for float | str)
    )
    trainable: str = "all"
    train_bn: bool = True
    lr_rule: str | None = None
    lr_scale: float = 1.0
    lr_spread: float = 1.0
    lr_spread_mode: str = "geometric"
    pct_start: float | None = None
    div: float | None = None
    div_final: float | None = None

    def schedule_overrides(self) -> dict[str, float]:
        return {
            k: v
            for k, v in (("pct_start", self.pct_start), ("div", self.div), ("div_final", self.div_final))
            if v is not None
        }
