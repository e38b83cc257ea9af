"""Registers lrlab's Optuna sweeper with Hydra as `hydra/sweeper=lrlab_optuna`.

Hydra imports every module under `hydra_plugins` at start-up, for every Hydra app, so this module
imports only Hydra and `lrlab.sweep.settings` (standard library only); Optuna, MLflow and the
sweeper load when the sweeper is instantiated. The config node is `SweepSettings` plus Hydra's
`_target_`, so the keys and their defaults live in one place. Hydra executes this module without
registering it in sys.modules, so no `from __future__ import annotations` here (string
annotations would fail to resolve and break every Hydra start).
"""

import sys
from dataclasses import field, make_dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper

from lrlab.sweep.settings import SweepSettings

TARGET = "hydra_plugins.lrlab_optuna_sweeper.lrlab_optuna_sweeper.LrlabOptunaSweeper"

LrlabOptunaSweeperConf = make_dataclass(
    "LrlabOptunaSweeperConf", [("_target_", str, field(default=TARGET))], bases=(SweepSettings,)
)

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
        """Run the sweep; too many failed trials print one paragraph and exit with status 1, bad
        input (an LrlabError) with status 2."""
        from lrlab.errors import LrlabError
        from lrlab.sweep.session import SweepFailed

        try:
            return self.sweep_impl.sweep(arguments)
        except SweepFailed as exc:
            print(f"lrlab: sweep stopped: {exc}", file=sys.stderr)
            sys.exit(1)
        except LrlabError as exc:
            print(f"lrlab: error: {exc}", file=sys.stderr)
            sys.exit(2)
