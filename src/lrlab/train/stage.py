"""One training stage of the staged trainer (the schema of each entry of the `stages` config list),
its choice list for `lr_spread_mode` and the parser of its `trainable` spec. No torch import, so
the CLI can register and check it cheaply."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lrlab.errors import ConfigError

SPREAD_MODES = ("geometric", "slice_hi")
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


@dataclass
class Stage:
    """One training stage.

    trainable: 'head', 'all', or 'from:K' (layer groups K.. onwards; negative K counts from the end).
    lr: a number, or 'find' to take the range test's `lr_rule` suggestion times `lr_scale`.
    lr_spread: the first layer group gets lr / lr_spread, the head lr, geometric in between
    (lr_spread_mode 'slice_hi' instead gives every body group lr / lr_spread, as fastai's slice(lr)).
    """

    name: str
    epochs: int
    lr: Any = "find"  # a number or "find" (Any: OmegaConf 2.3 rejects an int such as lr=1 for float | str)
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
