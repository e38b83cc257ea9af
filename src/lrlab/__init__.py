"""lrlab: learning-rate range tests, staged transfer training and Optuna sweeps for pretrained
image models, configured with Hydra and logged to MLflow.

The public Python API is importable from here (`from lrlab import find_lr, run_stages`); names
load on first use so that the CLI, shell completion and the sweeper never pay for torch and timm
unless they need them.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Callback": "lrlab.core.types",
    "EpochResult": "lrlab.core.types",
    "StepRecord": "lrlab.core.types",
    "Engine": "lrlab.core.engine",
    "hold_freed_memory": "lrlab.core.host_memory",
    "TrainingDiverged": "lrlab.errors",
    "build_optimizer": "lrlab.core.optim",
    "constant": "lrlab.core.schedules",
    "cosine": "lrlab.core.schedules",
    "one_cycle": "lrlab.core.schedules",
    "StepOptions": "lrlab.core.settings",
    "Stage": "lrlab.train.stage",
    "AutoLrConfig": "lrlab.train.stage",
    "RaceResult": "lrlab.train.race",
    "Training": "lrlab.train.stages",
    "run_stages": "lrlab.train.stages",
    "TrainingCurves": "lrlab.train.curves",
    "ResumeState": "lrlab.train.resume",
    "ImageSource": "lrlab.data.types",
    "Normalization": "lrlab.data.types",
    "TensorSplit": "lrlab.data.types",
    "TensorLoader": "lrlab.data.loaders",
    "make_loaders": "lrlab.data.loaders",
    "load_source": "lrlab.data.sources",
    "BatchPreview": "lrlab.data.preview",
    "preview_batch": "lrlab.data.preview",
    "ConfigError": "lrlab.errors",
    "LrlabError": "lrlab.errors",
    "FinderConfig": "lrlab.finder.config",
    "LRFinderResult": "lrlab.finder.result",
    "find_lr": "lrlab.finder.range_test",
    "RULES": "lrlab.finder.rules",
    "suggest": "lrlab.finder.rules",
    "LayerGroup": "lrlab.core.types",
    "layer_groups": "lrlab.models.groups",
    "create_model": "lrlab.models.factory",
    "load_model": "lrlab.integrations.model_uri",  # files, and runs:/ or models:/ from MLflow
    "LoadedModel": "lrlab.models.checkpoint",
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
