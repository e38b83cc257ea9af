"""The config checks of what the training targets allow: the head's own loss takes no soft-target
settings, and Mixup/CutMix need class targets and even batches."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from lrlab.core.settings import HEADS
from lrlab.errors import ConfigError, check_choice


def check_targets(cfg: DictConfig) -> None:
    """ConfigError for a head or mixing setting the targets cannot take (see the two checks)."""
    check_head(cfg)
    check_mixing(cfg)


def check_head(cfg: DictConfig) -> None:
    """`model.head` is a known head, and `regress` gets no soft-target settings (its loss is the
    squared error of the level, which neither label smoothing nor SORD applies to)."""
    check_choice(cfg.model.head, HEADS, "model.head")
    if cfg.model.head == "regress":
        for key in ("label_smoothing", "ordinal_smoothing"):
            if cfg.train[key]:
                raise ConfigError(
                    f"model.head=regress trains on the squared error of the level, so train.{key}="
                    f"{cfg.train[key]} does not apply; set train.{key}=0 (ELPV's recipe sets "
                    "label_smoothing 0.1), or use model.head=ordinal or classify."
                )


def check_mixing(cfg: DictConfig) -> None:
    """Mixup/CutMix give soft class targets, so they need the classifying head without SORD's
    targets, and an even batch (timm mixes each batch with its reverse)."""
    t = cfg.train
    if not (t.mixup_alpha > 0 or t.cutmix_alpha > 0):
        return
    which = "train.mixup_alpha" if t.mixup_alpha > 0 else "train.cutmix_alpha"
    if cfg.model.head != "classify":
        raise ConfigError(f"{which} mixes class targets; model.head={cfg.model.head} trains on none.")
    if t.ordinal_smoothing:
        raise ConfigError(f"{which} and train.ordinal_smoothing both set soft targets: choose one.")
    batch = OmegaConf.select(cfg, "data.batch_size", default=None)
    if batch is not None and batch % 2:
        raise ConfigError(f"{which} needs an even data.batch_size (timm mixes each batch with its reverse).")
