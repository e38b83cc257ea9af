"""Which test-time augmentation a task that reads a checkpoint applies: `train.tta` when given on
the command line, else the TTA the checkpoint's own run used (the composed default would bring
the default problem's recipe, whatever the checkpoint's data)."""

from __future__ import annotations

from omegaconf import DictConfig

from lrlab.app.tasks import override_key
from lrlab.models.checkpoint import LoadedModel


def checkpoint_tta(cfg: DictConfig, overrides: list[str], loaded: LoadedModel) -> str:
    """The TTA a checkpoint task uses: `train.tta` when the command line sets it, else the one the
    checkpoint's run scored with (the config's default would silently change its numbers)."""
    if any(override_key(o) == "train.tta" for o in overrides):
        return cfg.train.tta
    return loaded.tta
