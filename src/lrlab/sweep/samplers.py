"""Optuna samplers by name (one table, name -> factory), the grid sampler that works with ask/tell,
and suggesting a trial's value for a distribution. The sampler a study asks with is built from the
settings by `lrlab.sweep.study.make_sampler`; this module does not import the settings, whose
validation reads the table here (so imports go one way)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from lrlab.sweep.search_space import SearchSpace


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


def suggest(trial: optuna.Trial, key: str, dist: BaseDistribution) -> Any:
    """The sampler's value for `key` on `trial` (recorded in the trial as a param)."""
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(key, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, log=dist.log, step=dist.step)
    return trial.suggest_categorical(key, dist.choices)
