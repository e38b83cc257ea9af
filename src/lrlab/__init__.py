"""lrlab: learning-rate range tests, staged transfer training and Optuna sweeps for pretrained
image models, configured with Hydra and logged to MLflow.

The public Python API is importable from here (`from lrlab import find_lr, run_stages`); names
load on first use so that the CLI, shell completion and the sweeper never pay for torch and timm
unless they need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Callback": "lrlab.core.types",
    "EpochResult": "lrlab.core.types",
    "StepRecord": "lrlab.core.types",
    "Engine": "lrlab.core.engine",
    "TrainingDiverged": "lrlab.core.engine",
    "build_optimizer": "lrlab.core.optim",
    "constant": "lrlab.core.schedules",
    "cosine": "lrlab.core.schedules",
    "one_cycle": "lrlab.core.schedules",
    "Stage": "lrlab.core.stages",
    "run_stages": "lrlab.core.stages",
    "ImageSource": "lrlab.data.types",
    "Normalization": "lrlab.data.types",
    "TensorSplit": "lrlab.data.types",
    "TensorLoader": "lrlab.data.loaders",
    "make_loaders": "lrlab.data.loaders",
    "load_source": "lrlab.data.sources",
    "ConfigError": "lrlab.errors",
    "LrlabError": "lrlab.errors",
    "FinderConfig": "lrlab.finder.config",
    "LRFinderResult": "lrlab.finder.result",
    "find_lr": "lrlab.finder.range_test",
    "RULES": "lrlab.finder.rules",
    "suggest": "lrlab.finder.rules",
    "LayerGroup": "lrlab.models.groups",
    "layer_groups": "lrlab.models.groups",
    "create_model": "lrlab.models.factory",
    "normalization": "lrlab.models.factory",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first access (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lrlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from lrlab.core.engine import Engine, TrainingDiverged
    from lrlab.core.optim import build_optimizer
    from lrlab.core.schedules import constant, cosine, one_cycle
    from lrlab.core.stages import Stage, run_stages
    from lrlab.core.types import Callback, EpochResult, StepRecord
    from lrlab.data.loaders import TensorLoader, make_loaders
    from lrlab.data.sources import load_source
    from lrlab.data.types import ImageSource, Normalization, TensorSplit
    from lrlab.errors import ConfigError, LrlabError
    from lrlab.finder.config import FinderConfig
    from lrlab.finder.range_test import find_lr
    from lrlab.finder.result import LRFinderResult
    from lrlab.finder.rules import RULES, suggest
    from lrlab.models.factory import create_model, normalization
    from lrlab.models.groups import LayerGroup, layer_groups
