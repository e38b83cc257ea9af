"""Registers lrlab's Optuna sweeper with Hydra as `hydra/sweeper=lrlab_optuna`.

Hydra imports every module under `hydra_plugins` at start-up, for every Hydra app, so this module
imports only Hydra; Optuna, MLflow and lrlab load when the sweeper is instantiated. Hydra executes
it without registering it in sys.modules, so no `from __future__ import annotations` here (the
dataclass would fail to resolve its string annotations and break every Hydra start).
"""

import sys
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper


@dataclass
class LrlabOptunaSweeperConf:
    """`hydra.sweeper` keys; see lrlab's README ("Sweeps") for what each does."""

    _target_: str = "hydra_plugins.lrlab_optuna_sweeper.lrlab_optuna_sweeper.LrlabOptunaSweeper"
    study_name: Optional[str] = None  # null: <name>-<search preset>
    storage: Optional[str] = None  # null: sqlite:///<sweep dir>/optuna.db; any RDB URL or journal:///file
    direction: Any = "minimize"  # or a list, for several metrics
    metric: Any = "error_rate"  # error_rate | valid_loss | accuracy | train_loss | train_seconds | total_seconds, or a list
    n_trials: int = 20  # total finished (complete + pruned) trials of the study
    n_jobs: int = 1  # trials asked at once, handed to the launcher as one batch
    sampler: str = "tpe"  # tpe | random | cmaes | grid | qmc | gp | nsgaii
    seed: Optional[int] = 0
    sampler_kwargs: dict[str, Any] = field(default_factory=dict)
    pruner: str = "none"  # none | median | hyperband | successive_halving
    pruner_kwargs: dict[str, Any] = field(default_factory=dict)
    enqueue: list[Any] = field(default_factory=list)  # lr_finder and/or mappings of params, run first
    finder_rules: list[str] = field(default_factory=lambda: ["valley", "steep", "minimum", "slide"])
    max_failure_rate: float = 0.5  # stop once more than this fraction of n_trials failed
    params: dict[str, Any] = field(
        default_factory=dict
    )  # key: Hydra sweep, e.g. tag(log, interval(1e-5, 1e-1))
    report: bool = True  # write the finder-vs-search report when the sweep ends


ConfigStore.instance().store(
    group="hydra/sweeper", name="lrlab_optuna", node=LrlabOptunaSweeperConf, provider="lrlab"
)


class LrlabOptunaSweeper(Sweeper):
    """Thin Hydra-facing shell around `lrlab.sweep.sweeper.OptunaSweep`."""

    def __init__(self, **settings: Any) -> None:
        from lrlab.sweep.sweeper import OptunaSweep

        self.sweep_impl = OptunaSweep(**settings)

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        self.sweep_impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        """Run the sweep; bad input (an LrlabError) prints one paragraph and exits with status 2."""
        from lrlab.errors import LrlabError

        try:
            return self.sweep_impl.sweep(arguments)
        except LrlabError as exc:
            print(f"lrlab: error: {exc}", file=sys.stderr)
            sys.exit(2)
