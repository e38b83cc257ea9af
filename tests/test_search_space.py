"""Hydra sweep syntax -> Optuna distributions, and the sweeper's samplers on real in-memory studies."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from lrlab.errors import ConfigError
from lrlab.sweep.baselines import widen
from lrlab.sweep.samplers import SAMPLERS, suggest
from lrlab.sweep.search_space import format_value, parse_search_space
from lrlab.sweep.session import objective_values
from lrlab.sweep.settings import SweepSettings
from lrlab.sweep.study import make_sampler

optuna.logging.set_verbosity(optuna.logging.ERROR)

STAGES = [
    {"name": "head", "epochs": 1, "trainable": "head"},
    {"name": "unfrozen", "epochs": 2, "trainable": "all"},
    {"name": "skipped", "epochs": 0, "trainable": "all"},
]


def test_sweep_syntax_maps_to_optuna_distributions() -> None:
    space = parse_search_space(
        {},
        [
            "stages.1.lr=tag(log, interval(1e-6, 1e-2))",
            "a=interval(0.1, 0.9)",
            "b=int(interval(1, 10))",
            "c=range(2, 10, 2)",
            "d=choice(adamw, sgd)",
            "e=range(1.0, 2.5, 0.5)",
            "epochs=3",
            "+new=choice(1, 2)",
        ],
        STAGES,
    )
    assert space.params["stages.1.lr"] == FloatDistribution(1e-6, 1e-2, log=True)
    assert space.params["a"] == FloatDistribution(0.1, 0.9)
    assert space.params["b"] == IntDistribution(1, 10)
    assert space.params["c"] == IntDistribution(2, 8, step=2)
    assert space.params["d"] == CategoricalDistribution(["adamw", "sgd"])
    assert space.params["e"] == CategoricalDistribution([1.0, 1.5, 2.0])
    assert space.fixed == ["epochs=3"]
    assert space.override("new", 2) == "+new=2"
    assert space.override("stages.1.lr", 0.001) == "stages.1.lr=0.001"
    assert space.describe()["stages.1.lr"] == "float [1e-06, 0.01], log"
    assert space.lr_keys() == ["stages.1.lr"]


def test_stage_wildcards_expand_and_the_command_line_pins_or_replaces() -> None:
    params = {
        "stages.*.lr": "tag(log, interval(1e-5, 1e-1))",
        "stages.*.lr_spread": "tag(log, interval(1, 1000))",
    }
    space = parse_search_space(
        params, ["stages.0.lr=1e-3", "stages.1.lr=tag(log, interval(1e-4, 1e-2))"], STAGES
    )
    # lr_spread only for stages that train more than the head; no key for a stage with 0 epochs.
    assert sorted(space.params) == ["stages.1.lr", "stages.1.lr_spread"]
    assert space.params["stages.1.lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert space.fixed == ["stages.0.lr=1e-3"]
    assert space.override("stages.1.lr_spread", 10.0) == "++stages.1.lr_spread=10.0"


def test_bad_search_spaces_fail_with_a_clear_message() -> None:
    with pytest.raises(ConfigError, match="search space is empty"):
        parse_search_space({}, ["epochs=3"], STAGES)
    with pytest.raises(ConfigError, match="is not a sweep"):
        parse_search_space({"stages.0.lr": "0.1"}, [], STAGES)
    with pytest.raises(
        ConfigError, match=r"interval\(1, 0\)\) is empty: an interval needs its low end first"
    ):
        parse_search_space({"stages.0.lr": "tag(log, interval(1, 0))"}, [], STAGES)
    with pytest.raises(ConfigError, match="a log interval needs a positive low end"):
        parse_search_space({"stages.0.lr": "tag(log, interval(0, 1e-1))"}, [], STAGES)
    with pytest.raises(ConfigError, match="sampler=grid needs finite choices"):
        parse_search_space({}, ["a=interval(0, 1)"], STAGES).grid()
    with pytest.raises(ConfigError, match="sampler"):
        SweepSettings(sampler="bogus").validate()
    with pytest.raises(ConfigError, match="direction has 2 entries"):
        SweepSettings(direction=["minimize", "minimize"]).validate()


def test_format_value_round_trips_through_hydra() -> None:
    assert format_value(1e-5) == "1e-05"
    assert format_value(0.1 + 0.2) == "0.30000000000000004"
    assert format_value(True) == "true" and format_value(None) == "null" and format_value(3) == "3"
    assert format_value("adamw") == "adamw"
    assert format_value("sqlite:////tmp/a b/optuna.db") == "'sqlite:////tmp/a b/optuna.db'"


@pytest.mark.parametrize("sampler", [s for s in SAMPLERS if s != "grid"])
def test_every_sampler_searches_inside_the_space(sampler: str) -> None:
    space = parse_search_space(
        {"stages.*.lr": "tag(log, interval(1e-5, 1e-1))"}, ["b=int(interval(1, 4))"], STAGES[:2]
    )
    settings = SweepSettings(sampler=sampler, seed=3)
    study = optuna.create_study(sampler=make_sampler(settings, space))
    values = []
    for _ in range(6):
        trial = study.ask()
        params = {k: suggest(trial, k, d) for k, d in space.params.items()}
        values.append(params)
        study.tell(trial, abs(math.log10(params["stages.0.lr"]) + 3) + params["b"])
    for params in values:
        assert 1e-5 <= params["stages.0.lr"] <= 1e-1 and 1e-5 <= params["stages.1.lr"] <= 1e-1
        assert params["b"] in (1, 2, 3, 4)
    again = optuna.create_study(sampler=make_sampler(settings, space))
    first = again.ask()
    assert suggest(first, "stages.0.lr", space.params["stages.0.lr"]) == values[0]["stages.0.lr"]


def test_grid_sampler_covers_every_combination_once() -> None:
    space = parse_search_space({}, ["lr=1e-3,1e-2", "optimizer=adamw,sgd"], STAGES)
    study = optuna.create_study(sampler=make_sampler(SweepSettings(sampler="grid"), space))
    seen = set()
    for _ in range(4):
        trial = study.ask()
        seen.add(tuple(suggest(trial, k, d) for k, d in space.params.items()))
        study.tell(trial, 0.0)
    assert seen == {(a, b) for a in (1e-3, 1e-2) for b in ("adamw", "sgd")}


def test_finder_lrs_outside_the_searched_interval_widen_it() -> None:
    dist = FloatDistribution(1e-5, 1e-1, log=True)
    assert widen(dist, 3.0) == FloatDistribution(1e-5, 3.0, log=True)
    assert widen(dist, 1e-3) == dist
    assert widen(dist, "find") is None
    assert widen(CategoricalDistribution(["a", "b"]), "c") is None


def test_objective_values_come_from_the_job_summary() -> None:
    summary = {
        "metrics": {"error_rate": 0.25, "valid_loss": 0.7},
        "train_seconds": 10.0,
        "finder_seconds": 4.0,
    }
    assert objective_values(summary, ["error_rate", "total_seconds"]) == [0.25, 14.0]
    with pytest.raises(ConfigError, match="not something a run returns"):
        objective_values(summary, ["f1"])
