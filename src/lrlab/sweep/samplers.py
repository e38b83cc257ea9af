"""Optuna samplers by name (one table, name -> factory), the grid sampler that works with ask/tell,
the effective settings of a plain grid sweep, and suggesting a trial's value for a distribution."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from lrlab.errors import ConfigError
from lrlab.sweep.search_space import SearchSpace
from lrlab.sweep.settings import SweepSettings

log = logging.getLogger("lrlab.sweep")


class AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler whose exhausted grid does not call `study.stop()`, which only works inside
    `Study.optimize`; the sweeper caps `n_trials` at the grid's size instead."""

    def after_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        return None


SamplerFactory = Callable[[SearchSpace, "int | None", dict[str, Any]], optuna.samplers.BaseSampler]

SAMPLERS: dict[str, SamplerFactory] = {
    "tpe": lambda space, seed, kwargs: optuna.samplers.TPESampler(seed=seed, **kwargs),
    "random": lambda space, seed, kwargs: optuna.samplers.RandomSampler(seed=seed, **kwargs),
    "cmaes": lambda space, seed, kwargs: optuna.samplers.CmaEsSampler(seed=seed, **kwargs),
    "grid": lambda space, seed, kwargs: AskTellGridSampler(space.grid(), seed=seed, **kwargs),
    "qmc": lambda space, seed, kwargs: optuna.samplers.QMCSampler(seed=seed, **kwargs),
    "gp": lambda space, seed, kwargs: optuna.samplers.GPSampler(seed=seed, **kwargs),
    "nsgaii": lambda space, seed, kwargs: optuna.samplers.NSGAIISampler(seed=seed, **kwargs),
}
"""Every sampler `hydra.sweeper.sampler` can name: `factory(space, seed, sampler_kwargs)`."""

STORAGE_INDEXED = frozenset({"qmc", "grid"})
"""Samplers whose sequence position comes from the storage: they keep one seed on resume."""


def make_sampler(settings: SweepSettings, space: SearchSpace, offset: int = 0) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded with `seed + offset` (the sweeper passes the trial's number, so a
    resumed sweep does not replay the first sweep's draws). `settings` are validated."""
    seed = settings.seed
    if seed is not None and settings.sampler not in STORAGE_INDEXED:
        seed += offset
    try:
        return SAMPLERS[settings.sampler](space, seed, dict(settings.sampler_kwargs))
    except TypeError as exc:
        raise ConfigError(f"hydra.sweeper.sampler_kwargs for sampler {settings.sampler!r}: {exc}") from None


def effective_settings(settings: SweepSettings, space: SearchSpace, preset: bool) -> SweepSettings:
    """The settings a sweep runs with: a plain `lrlab -m a=1,2 b=x,y` (no search preset, a discrete
    space, the default sampler) runs every combination once as a grid, as Hydra's basic sweeper
    would; a grid never asks for more trials than it has points."""
    if not preset and settings.sampler == "tpe" and space.is_discrete():
        return replace(settings, sampler="grid", n_trials=space.grid_size())
    if settings.sampler == "grid" and settings.n_trials > space.grid_size():
        log.info(f"sampler=grid: n_trials capped at the grid's {space.grid_size()} points")
        return replace(settings, n_trials=space.grid_size())
    return settings


def suggest(trial: optuna.Trial, key: str, dist: BaseDistribution) -> Any:
    """The sampler's value for `key` on `trial` (recorded in the trial as a param)."""
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(key, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, log=dist.log, step=dist.step)
    return trial.suggest_categorical(key, dist.choices)
