"""Which test-time augmentation a task that reads a checkpoint applies: `train.tta` when given on
the command line, else the TTA the checkpoint's own run used (the composed default would bring
the default problem's recipe, whatever the checkpoint's data)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig


def checkpoint_tta(cfg: DictConfig, overrides: list[str], meta: dict[str, Any]) -> str:
    """`meta`: the checkpoint's metadata (`LoadedModel.meta`), whose `config` is its run's config."""
    import yaml

    if any(o.lstrip("+~").split("=", 1)[0] == "train.tta" for o in overrides):
        return cfg.train.tta
    saved = yaml.safe_load(meta.get("config") or "{}") or {}
    return str((saved.get("train") or {}).get("tta", "none"))
