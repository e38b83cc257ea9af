"""Hydra sweep syntax -> Optuna distributions: `interval(a, b)`, `tag(log, interval(a, b))`,
`int(interval(a, b))`, `range(start, stop, step)` and `choice(...)`, from the command line or from
the sweeper's `params` mapping (whose keys may use `stages.*.<key>` for every stage)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
)
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from lrlab.errors import ConfigError

STAGE_WILDCARD = "stages.*."
HEAD_ONLY_KEYS = ("lr_spread", "lr_spread_mode")  # meaningless for a stage that trains the head alone


@dataclass
class SearchSpace:
    """The searched keys with their distributions, and the command-line overrides every job gets."""

    params: dict[str, BaseDistribution]
    fixed: list[str]
    override_keys: dict[str, str] = field(default_factory=dict)

    def override(self, key: str, value: Any) -> str:
        """`key=value` as the job's override (`++` adds keys a stage preset leaves out)."""
        return f"{self.override_keys.get(key, '++' + key)}={format_value(value)}"

    def is_discrete(self) -> bool:
        return all(_finite_values(d) is not None for d in self.params.values())

    def grid(self) -> dict[str, list[Any]]:
        """Every value of each discrete dimension (for a grid sampler)."""
        grid = {key: _finite_values(dist) for key, dist in self.params.items()}
        for key, values in grid.items():
            if values is None:
                raise ConfigError(
                    f"sampler=grid needs finite choices; {key} is an interval. Use choice(...) or range(...)."
                )
        return grid

    def grid_size(self) -> int:
        return math.prod(len(values) for values in self.grid().values())

    def describe(self) -> dict[str, str]:
        return {key: describe_distribution(dist) for key, dist in self.params.items()}

    def lr_keys(self) -> list[str]:
        """Searched stage learning rates, `stages.<i>.lr`, in stage order."""
        keys = [k for k in self.params if k.startswith("stages.") and k.endswith(".lr")]
        return sorted(keys, key=lambda k: int(k.split(".")[1]))


def _finite_values(dist: BaseDistribution) -> list[Any] | None:
    """Every value a discrete distribution can take; None for an interval."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution) and not dist.log:
        return list(range(dist.low, dist.high + 1, dist.step))
    return None


def describe_distribution(dist: BaseDistribution) -> str:
    """An Optuna distribution as the report prints it, e.g. `float [1e-05, 0.1], log`."""
    if isinstance(dist, CategoricalDistribution):
        return f"choice{tuple(dist.choices)}"
    kind = "int" if isinstance(dist, IntDistribution) else "float"
    scale = ", log" if dist.log else ""
    has_step = dist.step is not None and (kind == "float" or dist.step != 1)
    step = f", step {dist.step:g}" if has_step else ""
    return f"{kind} [{dist.low:g}, {dist.high:g}]{scale}{step}"


def to_distribution(override: Override) -> BaseDistribution:
    """The Optuna distribution of one Hydra sweep override."""
    value = override.value()
    key = override.get_key_element()
    if isinstance(value, IntervalSweep):
        log = "log" in value.tags
        if not value.start < value.end:
            raise ConfigError(
                f"{key}: {override.input_line} is empty: an interval needs its low end first "
                f"(interval({value.end}, {value.start}))."
            )
        if log and not value.start > 0:
            raise ConfigError(
                f"{key}: {override.input_line} cannot be searched on a log scale from {value.start}: "
                "a log interval needs a positive low end (e.g. tag(log, interval(1e-5, 1e-1)))."
            )
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    if isinstance(value, RangeSweep):
        values = list(override.sweep_iterator())
        if not values:
            raise ConfigError(f"{key}: {override.input_line} is an empty range.")
        if all(isinstance(v, int) for v in values):
            step = values[1] - values[0] if len(values) > 1 else 1
            return IntDistribution(min(values), max(values), step=abs(step))
        return CategoricalDistribution(values)
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution(list(override.sweep_iterator()))
    raise ConfigError(
        f"{key}: {override.input_line} is not a sweep the sampler can search "
        "(use interval, tag(log, interval), range or choice)."
    )


def _expand(key: str, stages: Sequence[Mapping[str, Any]]) -> list[str]:
    if not key.startswith(STAGE_WILDCARD):
        return [key]
    leaf = key[len(STAGE_WILDCARD) :]
    keys = []
    for i, stage in enumerate(stages):
        if int(stage.get("epochs", 1)) <= 0:
            continue
        if leaf in HEAD_ONLY_KEYS and stage.get("trainable") == "head":
            continue
        keys.append(f"stages.{i}.{leaf}")
    return keys


def parse_search_space(
    params: Mapping[str, Any], arguments: Sequence[str], stages: Sequence[Mapping[str, Any]]
) -> SearchSpace:
    """Combine the YAML `params` (wildcards expanded over `stages`) with the command line: a sweep
    on the command line adds or replaces a searched key; a plain `key=value` pins it."""
    parser = OverridesParser.create()
    space: dict[str, BaseDistribution] = {}
    for key, spec in (params or {}).items():
        for expanded in _expand(str(key), stages):
            try:
                override = parser.parse_override(f"{expanded}={spec}")
            except Exception as exc:
                raise ConfigError(f"hydra.sweeper.params.{key}: cannot parse {spec!r}: {exc}") from None
            if not override.is_sweep_override():
                raise ConfigError(
                    f"hydra.sweeper.params.{key}={spec!r} is not a sweep; use interval, "
                    "tag(log, interval), range or choice."
                )
            space[expanded] = to_distribution(override)
    fixed: list[str] = []
    override_keys: dict[str, str] = {}
    for override in parser.parse_overrides(list(arguments)):
        key = override.get_key_element().lstrip("+~")
        if override.is_sweep_override():
            space[key] = to_distribution(override)
            override_keys[key] = override.get_key_element()
        else:
            space.pop(key, None)
            fixed.append(override.input_line)
    if not space:
        raise ConfigError(
            "the search space is empty: pick a preset (search=lr, search=lr_vs_finder) or give a "
            "sweep such as 'stages.0.lr=tag(log, interval(1e-5, 1e-1))'."
        )
    return SearchSpace(space, fixed, override_keys)


def format_value(value: Any) -> str:
    """A value as Hydra override text (floats keep full precision; strings are quoted when needed)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if value is None:
        return "null"
    text = str(value)
    return text if text.replace("_", "").replace("-", "").replace(".", "").isalnum() else repr(text)
