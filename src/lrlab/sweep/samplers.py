"""Optuna samplers by name (one table, name -> factory), the grid sampler that works with ask/tell,
and suggesting a trial's value for a distribution. The sampler a study asks with is built from the
settings by `lrlab.sweep.study.make_sampler`; this module does not import the settings, whose
validation reads the table here (so imports go one way)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from lrlab.sweep.search_space import SearchSpace


class AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler whose exhausted grid does not call `study.stop()`, which only works inside
    `Study.optimize` (the sweeper caps `n_trials` at the grid's size instead), and which re-runs a
    failed grid point: Optuna's counts FAIL as visited, so a resumed grid whose trial crashed or was
    killed re-evaluated a random finished point instead and never ran the failed one."""

    def __init__(self, search_space: dict[str, Sequence[Any]], **kwargs: Any):
        super().__init__(search_space, **kwargs)
        self.space = {name: list(values) for name, values in search_space.items()}
        self.size = math.prod(len(v) for v in self.space.values())

    def _get_unvisited_grid_ids(self, study: optuna.Study) -> list[int]:
        """Grid ids without a COMPLETE, PRUNED or RUNNING trial (a RUNNING one's, once none is left)."""
        done, running = set(), set()
        for t in study.get_trials(deepcopy=False):
            if "grid_id" not in t.system_attrs or t.system_attrs.get("search_space") != self.space:
                continue
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
                done.add(t.system_attrs["grid_id"])
            elif t.state == TrialState.RUNNING:
                running.add(t.system_attrs["grid_id"])
        todo = set(range(self.size)) - done
        return sorted(todo - running) or sorted(todo)

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
