"""The sweep's Optuna study: creating or resuming it (refusing a resume with other overrides), the
sampler it asks with (from the settings and the `lrlab.sweep.samplers` table), the effective
settings of a plain grid sweep, the user attributes lrlab keeps in it, and lookups through Optuna's
public storage API."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import optuna
from optuna.trial import TrialState

from lrlab.errors import ConfigError
from lrlab.integrations.optuna_storage import PRUNER_ATTR, make_pruner
from lrlab.sweep.samplers import SAMPLERS, STORAGE_INDEXED
from lrlab.sweep.search_space import SearchSpace, describe_distribution
from lrlab.sweep.settings import SweepSettings

log = logging.getLogger("lrlab.sweep")

DONE = (TrialState.COMPLETE, TrialState.PRUNED)
"""Finished trials that count towards `n_trials` (failed ones are replaced)."""

# Trial user attributes.
SOURCE = "source"  # search | enqueued | lr_finder:<rule>
SEARCH_SOURCE = "search"  # a trial the sampler chose
WORKER_ATTR = "lrlab.worker"  # <host>:<pid> of the sweep that asked the trial
# Study user attributes.
FIXED_ATTR = "lrlab.fixed_overrides"
METRIC_ATTR = "lrlab.metric"
SPACE_ATTR = "lrlab.search_space"
STORAGE_ATTR = "lrlab.storage"
SWEEP_DIR_ATTR = "lrlab.sweep_dir"
PARENT_ATTR = "lrlab.mlflow_parent_run"
MLFLOW_URI_ATTR = "lrlab.mlflow_uri"


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


def open_study(
    storage: optuna.storages.BaseStorage,
    url: str,
    name: str,
    settings: SweepSettings,
    space: SearchSpace,
    sweep_dir: Path,
) -> optuna.Study:
    """Create the study, or load it to resume; a resume must use the same fixed overrides, since
    other overrides make another experiment whose trials must not mix with these."""
    pruner_spec = {"name": settings.pruner, **settings.pruner_kwargs}
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        load_if_exists=True,
        sampler=make_sampler(settings, space),
        pruner=make_pruner(pruner_spec),
        directions=settings.directions,
    )
    with warnings.catch_warnings():  # experimental since Optuna 3.2, stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(settings.metrics))  # optuna-dashboard's axis, not "Objective 0"
    existing = study.user_attrs.get(FIXED_ATTR)
    if existing is not None and existing != space.fixed:
        raise ConfigError(
            f"study {name!r} in {url} was started with the overrides {existing}, not {space.fixed}. "
            "Resume it with the same command, or start a new study with hydra.sweeper.study_name=NAME."
        )
    check_space_fits(study, space, name, url)
    for key, value in {
        FIXED_ATTR: space.fixed,
        PRUNER_ATTR: pruner_spec,
        METRIC_ATTR: settings.metrics,
        SPACE_ATTR: space.describe(),
        SWEEP_DIR_ATTR: str(sweep_dir),
        STORAGE_ATTR: url,
    }.items():
        study.set_user_attr(key, value)
    return study


def check_space_fits(study: optuna.Study, space: SearchSpace, name: str, url: str) -> None:
    """ConfigError where a resumed study's trials drew a key from a distribution this sweep's cannot
    join (other categorical choices, another type): Optuna refuses that only when the first trial
    asks, with a traceback; a new range for a float or int key is fine."""
    for trial in study.get_trials(deepcopy=False):
        for key, dist in space.params.items():
            before = trial.distributions.get(key)
            if before is None:
                continue
            try:
                optuna.distributions.check_distribution_compatibility(before, dist)
            except ValueError:
                raise ConfigError(
                    f"study {name!r} in {url} drew {key} from {describe_distribution(before)} (trial "
                    f"{trial.number}), and Optuna cannot add {describe_distribution(dist)} to the same "
                    "study. Resume it with the same values, or start "
                    "a new study with hydra.sweeper.study_name=NAME (or another hydra.sweep.dir)."
                ) from None


def trial_id(storage: optuna.storages.BaseStorage, study: optuna.Study, number: int) -> int:
    """The storage's id of trial `number` (storage writes such as `set_trial_state_values` need it)."""
    study_id = storage.get_study_id_from_name(study.study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


def count(study: optuna.Study, states: Iterable[TrialState]) -> int:
    """How many of the study's trials are in `states`."""
    return len(study.get_trials(deepcopy=False, states=tuple(states)))
