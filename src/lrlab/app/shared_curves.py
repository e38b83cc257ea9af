"""Which range-test curves a run may share (`lr_finder.share_curves`): a sweep trial's with the
other trials of its study, any run's with a folder, or none; and the context that, with the
starting state, identifies a curve."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lrlab.core.distributed import is_distributed
from lrlab.finder.curve_cache import DirectoryCurveStore, SharedCurves

# What shapes a range test's losses beyond the model and optimizer state (which are hashed):
CONTEXT_KEYS = ("data", "model", "optimizer", "train", "precision", "device", "seed")


def shared_curves(cfg: DictConfig, launch_dir: Path) -> SharedCurves | None:
    """The run's curve store and context, or None when `share_curves` is off (or auto outside a
    sweep, or across processes: a rank reusing a curve would skip the others' collectives)."""
    mode = str(cfg.lr_finder.share_curves)
    if mode == "off" or (mode == "auto" and cfg.trial.study is None) or is_distributed():
        return None
    resolved = OmegaConf.to_container(cfg, resolve=True)
    parts = {key: resolved.get(key) for key in CONTEXT_KEYS}
    context = json.dumps(parts, sort_keys=True, default=str)
    if mode == "auto":
        from lrlab.integrations.optuna import StudyCurveStore

        return SharedCurves(StudyCurveStore(cfg.trial.storage, cfg.trial.study), context)
    folder = Path(mode).expanduser()
    return SharedCurves(DirectoryCurveStore(folder if folder.is_absolute() else launch_dir / folder), context)
