"""The `hydra.sweeper` settings of lrlab's Optuna sweeper: one dataclass, the only place its keys
and defaults live. The Hydra plugin registers it in Hydra's ConfigStore as
`hydra/sweeper=lrlab_optuna`, so this module imports only the standard library (Hydra loads the
plugin for every app, and the sweeper process must not pay for Optuna, torch or timm to read it).

Annotations are real types OmegaConf 2.3 reads (no `from __future__ import annotations`: Hydra
executes the plugin module, a subclass of this one, outside `sys.modules`). OmegaConf does not
run `__post_init__`, so the sweeper calls `validate()` instead. `validate` imports the tables it
checks names against (`lrlab.sweep.samplers.SAMPLERS`, `lrlab.integrations.optuna_storage.PRUNERS`,
`lrlab.finder.rules.RULES`) when it runs; none of them imports this module, so imports go one way.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from lrlab.errors import ConfigError

FINDER_ENTRY = "lr_finder"


# What a job returns that a study can optimise: final valid metrics, and seconds.
OBJECTIVES = (
    "error_rate",
    "valid_loss",
    "accuracy",
    "train_loss",
    "train_seconds",
    "finder_seconds",
    "total_seconds",
)


@dataclass
class SweepSettings:
    """`hydra.sweeper` keys; README "Sweeps" says what each does."""

    study_name: str | None = None  # null: <name>-<search preset>
    storage: str | None = None  # null: sqlite:///<sweep dir>/optuna.db; any RDB URL or journal:///file
    direction: Any = "minimize"  # or a list, for several metrics
    metric: Any = "error_rate"  # error_rate | valid_loss | accuracy | train_loss | *_seconds, or a list
    n_trials: int = 20  # the study's total of finished (complete + pruned) trials
    n_jobs: int = 1  # trials asked at once, handed to the launcher as one batch
    sampler: str = "tpe"  # a name in lrlab.sweep.samplers.SAMPLERS
    seed: int | None = 0
    sampler_kwargs: dict[str, Any] = field(default_factory=dict)
    pruner: str = "none"  # a name in lrlab.integrations.optuna_storage.PRUNERS
    pruner_kwargs: dict[str, Any] = field(default_factory=dict)
    enqueue: list[Any] = field(default_factory=list)  # lr_finder and/or mappings of params, run first
    finder_rules: list[str] | None = None  # null or empty: every rule in lrlab.finder.rules.RULES
    max_failure_rate: float = 0.5  # stop once more than this fraction of n_trials failed
    params: dict[str, Any] = field(
        default_factory=dict
    )  # key: Hydra sweep, e.g. tag(log, interval(1e-5, 1e-1))
    report: bool = True  # write the finder-vs-search report when the sweep ends

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "SweepSettings":
        """Settings from Hydra's `hydra.sweeper` node (OmegaConf containers become plain ones;
        `_target_` is Hydra's, not a setting)."""
        from omegaconf import OmegaConf

        names = {f.name for f in fields(cls)}
        plain = {
            key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
            for key, value in values.items()
            if key in names
        }
        return cls(**plain)

    @property
    def directions(self) -> list[str]:
        return [str(d) for d in _as_list(self.direction)]

    @property
    def metrics(self) -> list[str]:
        return [str(m) for m in _as_list(self.metric)]

    def rules(self) -> list[str]:
        """The finder rules that get baseline trials: `finder_rules`, or every registered rule."""
        from lrlab.finder.rules import RULES

        return list(self.finder_rules) if self.finder_rules else list(RULES)

    def validate(self) -> "SweepSettings":
        """Raise ConfigError naming the bad value and the valid choices; returns self."""
        from lrlab.finder.rules import RULES
        from lrlab.integrations.optuna_storage import PRUNERS
        from lrlab.sweep.samplers import SAMPLERS

        _check_choice("sampler", self.sampler, SAMPLERS)
        _check_choice("pruner", self.pruner, PRUNERS)
        for rule in self.finder_rules or []:
            _check_choice("finder_rules", rule, RULES)
        if self.n_trials < 1 or self.n_jobs < 1:
            raise ConfigError(
                f"hydra.sweeper.n_trials={self.n_trials} and n_jobs={self.n_jobs} must both be at least 1."
            )
        if not 0 <= self.max_failure_rate <= 1:
            raise ConfigError(f"hydra.sweeper.max_failure_rate={self.max_failure_rate} must be in [0, 1].")
        for metric in self.metrics:
            _check_choice("metric", metric, OBJECTIVES)
        if len(self.directions) != len(self.metrics):
            raise ConfigError(
                f"hydra.sweeper.direction has {len(self.directions)} entries but metric has "
                f"{len(self.metrics)}; give one direction per metric."
            )
        for entry in self.enqueue:
            if entry != FINDER_ENTRY and not isinstance(entry, Mapping):
                raise ConfigError(
                    f"hydra.sweeper.enqueue entry {entry!r} is not valid; use {FINDER_ENTRY} or a "
                    "mapping of params such as {stages.0.lr: 0.001}."
                )
        return self


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _check_choice(key: str, value: Any, choices: Mapping[str, Any]) -> None:
    if value not in choices:
        raise ConfigError(f"hydra.sweeper.{key}={value!r} is not valid; choose one of: {', '.join(choices)}.")
