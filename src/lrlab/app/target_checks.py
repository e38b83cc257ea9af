"""The config checks of what the training targets and weights allow: the head's own loss takes no
soft-target settings, Mixup/CutMix need class targets and even batches, and the weight EMA does
not combine with Schedule-Free's own averaging or with `lr=auto`'s race."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from lrlab.core.settings import HEADS
from lrlab.errors import ConfigError, check_choice


def check_targets(cfg: DictConfig) -> None:
    """ConfigError for a head, mixing or EMA setting that cannot apply (see the checks)."""
    check_head(cfg)
    check_mixing(cfg)
    check_ema(cfg)


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


def check_ema(cfg: DictConfig) -> None:
    """`train.ema_decay` averages the weights lrlab trains: Schedule-Free already evaluates its own
    average, and an `lr=auto` race would need one EMA per candidate (not supported)."""
    if cfg.train.ema_decay is None:
        return
    target = str(OmegaConf.select(cfg, "optimizer._target_", default=""))
    if target.startswith("schedulefree."):
        raise ConfigError(
            "train.ema_decay does not apply to optimizer=schedulefree_adamw, which evaluates its own "
            "average of the weights; set train.ema_decay=null."
        )
    auto = [i for i, stage in enumerate(cfg.stages) if str(stage.lr) == "auto"]
    if auto:
        raise ConfigError(
            f"train.ema_decay with stages.{auto[0]}.lr=auto is not supported (each raced LR would need "
            "its own average); pass a number or lr=find, or set train.ema_decay=null."
        )
