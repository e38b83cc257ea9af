"""Structured-config schemas: the composed Hydra config is merged into these dataclasses so a
misspelt key, a wrong type or an impossible value fails before any data is loaded or run started."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lrlab.errors import ConfigError

TASKS = ("train", "lr_find")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "32", "bf16", "16")
DATA_SOURCES = ("elpv", "digits", "imagefolder", "torchvision")
TRACKING_BACKENDS = ("mlflow", "none")


@dataclass
class ModelConfig:
    name: str = MISSING
    pretrained: Any = False
    body_groups: int = 2
    drop_rate: float | None = None
    drop_path_rate: float | None = None


@dataclass
class AugmentConfig:
    hflip: float = 0.5
    vflip: float = 0.0
    rot90: bool = False
    scale: list[float] = field(default_factory=lambda: [0.35, 1.0])


@dataclass
class DataConfig:
    name: str = MISSING
    classes: int = 4
    root: str | None = None
    dataset: str | None = None
    download: bool = False
    image_size: int = 224
    batch_size: int = 32
    num_workers: int = 0
    valid_pct: float = 0.25
    split_seed: int = 0
    in_memory: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class StageConfig:
    name: str = MISSING
    epochs: int = 1
    lr: Any = "find"
    trainable: str = "all"
    train_bn: bool = True
    lr_rule: str | None = None
    lr_scale: float = 1.0
    lr_spread: float = 1.0
    lr_spread_mode: str = "geometric"
    pct_start: float | None = None
    div: float | None = None
    div_final: float | None = None


@dataclass
class TrainConfig:
    grad_accum: int = 1
    grad_clip: float | None = None
    channels_last: bool = True
    compile: bool = False
    log_every: int = 25
    progress: Any = "auto"
    checkpoints: bool = True
    cudnn_benchmark: bool = False


@dataclass
class LrFinderConfig:
    start_lr: float = 1e-7
    end_lr: float = 10.0
    num_iter: int = 100
    mode: str = "exp"
    smoothing: str = "zero_lag"
    beta: float = 0.98
    zero_lag_beta: float = 0.8
    stop_div: bool = True
    div_factor: float = 4.0
    suggest: str = "valley"
    repeats: int = 1
    val_batches: int = 0
    per_group: bool = False
    read_every: int = 10


@dataclass
class TrackingConfig:
    backend: str = "mlflow"
    uri: str | None = None
    experiment: str = "lrlab"
    run_name: str | None = None
    log_model: bool = True
    parent_run_id: str | None = None


@dataclass
class TrialConfig:
    """Which Optuna trial this job is (set by the sweeper): the job reports per-epoch metrics to it."""

    storage: str | None = None
    study: str | None = None
    number: int | None = None
    source: str | None = None
    metric: str = "error_rate"


@dataclass
class LrlabConfig:
    task: str = "train"
    name: str = "lrlab"
    seed: int = 42
    device: str = "auto"
    precision: str = "auto"
    deterministic: bool = False
    epochs: int = 5
    freeze_epochs: int = 1
    lr: Any = "find"
    train: TrainConfig = field(default_factory=TrainConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: Any = field(default_factory=dict)
    schedule: Any = field(default_factory=dict)
    stages: list[StageConfig] = field(default_factory=list)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    lr_finder: LrFinderConfig = field(default_factory=LrFinderConfig)
    trial: TrialConfig = field(default_factory=TrialConfig)


def _choice(value: Any, allowed: tuple[str, ...], key: str) -> str:
    text = str(value)
    if text not in allowed:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of: {', '.join(allowed)}.")
    return text


def _positive(value: float, key: str) -> None:
    if not value > 0:
        raise ConfigError(f"{key}={value!r} must be positive.")


def check_model_name(name: str) -> None:
    """Fail with close matches when timm has no architecture called `name`."""
    import timm

    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=6, cutoff=0.6)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    raise ConfigError(
        f"model.name={name!r} is not a timm model.{hint} "
        "List every name with `python -c \"import timm; print(timm.list_models('*resnet*'))\"`."
    )


def check_pretrained(value: Any) -> None:
    """`model.pretrained` is false, true, 'bundled' or the path of an existing weights file."""
    if isinstance(value, bool) or value in ("bundled",):
        return
    if isinstance(value, str) and Path(value).expanduser().is_file():
        return
    raise ConfigError(
        f"model.pretrained={value!r} is not valid: use false (random init), true (timm hub, needs "
        "internet), bundled (offline ImageNet EfficientNet-Lite0), or the path of an existing "
        ".pth/.safetensors weights file."
    )


RULE_CHOICES = ("valley", "steep", "minimum", "slide")


def _check_stage(stage: DictConfig, key: str) -> None:
    if stage.lr != "find":
        try:
            stage.lr = float(stage.lr)
        except (TypeError, ValueError):
            raise ConfigError(
                f"{key}.lr={stage.lr!r} is not valid: use find (range test) or a positive number."
            ) from None
        _positive(stage.lr, f"{key}.lr")
    if stage.epochs < 0:
        raise ConfigError(f"{key}.epochs={stage.epochs} must be >= 0.")
    trainable = str(stage.trainable)
    if trainable not in ("head", "all") and not (
        trainable.startswith("from:") and trainable[5:].lstrip("-").isdigit()
    ):
        raise ConfigError(
            f"{key}.trainable={trainable!r} is not valid: use head, all, or from:K (K a layer-group index)."
        )
    if stage.lr_rule is not None:
        _choice(stage.lr_rule, RULE_CHOICES, f"{key}.lr_rule")
    _positive(stage.lr_scale, f"{key}.lr_scale")
    if not stage.lr_spread >= 1:
        raise ConfigError(
            f"{key}.lr_spread={stage.lr_spread} must be >= 1 (the first group gets lr / lr_spread)."
        )
    _choice(stage.lr_spread_mode, ("geometric", "slice_hi"), f"{key}.lr_spread_mode")
    for name in ("pct_start",):
        value = stage[name]
        if value is not None and not 0 < value < 1:
            raise ConfigError(f"{key}.{name}={value} must be between 0 and 1.")


def _check_lr_finder(f: DictConfig) -> None:
    _choice(f.mode, ("exp", "linear"), "lr_finder.mode")
    _choice(f.smoothing, ("zero_lag", "ema"), "lr_finder.smoothing")
    _choice(f.suggest, ("valley", "steep", "minimum", "slide", "all"), "lr_finder.suggest")
    _positive(f.start_lr, "lr_finder.start_lr")
    if not f.end_lr > f.start_lr:
        raise ConfigError(
            f"lr_finder.end_lr={f.end_lr} must be greater than lr_finder.start_lr={f.start_lr}."
        )
    if f.num_iter < 2:
        raise ConfigError(f"lr_finder.num_iter={f.num_iter} must be at least 2.")
    for key in ("beta", "zero_lag_beta"):
        if not 0 <= f[key] < 1:
            raise ConfigError(f"lr_finder.{key}={f[key]} must be in [0, 1).")
    if not f.div_factor > 1:
        raise ConfigError(f"lr_finder.div_factor={f.div_factor} must be greater than 1.")
    _positive(f.repeats, "lr_finder.repeats")
    _positive(f.read_every, "lr_finder.read_every")


def validate(cfg: DictConfig) -> DictConfig:
    """Merge `cfg` into the schema and check values; raises ConfigError naming the bad key."""
    try:
        schema = OmegaConf.structured(LrlabConfig)
        merged = OmegaConf.merge(schema, cfg)
        OmegaConf.to_container(merged, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        where = f" (key: {key})" if key else ""
        reason = (getattr(exc, "msg", None) or str(exc)).splitlines()[0]
        raise ConfigError(f"Invalid configuration{where}: {reason}.") from exc

    merged.task = _choice(merged.task, TASKS, "task")
    merged.device = _choice(merged.device, DEVICES, "device")
    merged.precision = _choice(merged.precision, PRECISIONS, "precision")
    _choice(merged.data.name, DATA_SOURCES, "data.name")
    _choice(merged.tracking.backend, TRACKING_BACKENDS, "tracking.backend")
    _positive(merged.data.batch_size, "data.batch_size")
    _positive(merged.data.image_size, "data.image_size")
    _positive(merged.train.grad_accum, "train.grad_accum")
    _positive(merged.train.log_every, "train.log_every")
    if merged.data.num_workers < 0:
        raise ConfigError(f"data.num_workers={merged.data.num_workers} must be >= 0.")
    if not 0 < merged.data.valid_pct < 1:
        raise ConfigError(f"data.valid_pct={merged.data.valid_pct} must be between 0 and 1.")
    if merged.data.name == "elpv" and merged.data.classes not in (2, 4):
        raise ConfigError(f"data.classes={merged.data.classes} is not valid for elpv; choose 4 or 2.")
    if merged.data.name == "imagefolder":
        root = Path(str(merged.data.root)).expanduser()
        if not root.is_dir():
            raise ConfigError(f"data.root={str(merged.data.root)!r} is not an existing directory.")
    _check_lr_finder(merged.lr_finder)
    if merged.trial.study is not None:
        _choice(merged.trial.metric, ("error_rate", "valid_loss", "accuracy", "train_loss"), "trial.metric")
        if merged.trial.storage is None or merged.trial.number is None:
            raise ConfigError(
                "trial.study is set but trial.storage or trial.number is missing (the sweeper sets all three)."
            )
    if not merged.stages:
        raise ConfigError("stages is empty: give at least one stage (name, epochs, lr).")
    for i, stage in enumerate(merged.stages):
        _check_stage(stage, f"stages.{i}")
    check_model_name(merged.model.name)
    check_pretrained(merged.model.pretrained)
    return merged
