"""The data-source registry: every source (elpv, digits, imagefolder, torchvision) registers, under
its name, its config dataclass and its loader. The dataclass is the one place its keys and their
defaults are defined: `load_source` fills a partial mapping from it, and the app registers it as
the Hydra schema of the source's `conf/data/*.yaml`, so a misspelt key fails at composition.

Nothing here imports torch: listing the sources and their settings stays cheap.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lrlab.errors import ConfigError, check_choice

if TYPE_CHECKING:
    from lrlab.data.types import ImageSource

BALANCE_MODES = ("none", "sampler", "weights")
BUILTIN_MODULES = ("lrlab.data.sources", "lrlab.data.files", "lrlab.data.mnist5k")


@dataclass
class AugmentConfig:
    """Random training augmentation: one batched affine warp and brightness/contrast jitter for
    in-memory sources, timm's transforms for file datasets (which use the flips and scale only)."""

    hflip: float = 0.5  # probability of a horizontal flip
    vflip: float = 0.0  # probability of a vertical flip
    rot90: bool = False  # random multiples of 90 degrees
    rotate: float = 0.0  # random rotation of up to this many degrees (in-memory sources)
    brightness: float = 0.0  # brightness factor drawn from [1 - b, 1 + b] (in-memory sources)
    contrast: float = 0.0  # contrast factor drawn from [1 - c, 1 + c] (in-memory sources)
    scale: list[float] = field(default_factory=lambda: [0.35, 1.0])  # random-resized-crop area range


@dataclass(kw_only=True)
class DataConfig:
    """The keys every source has; the defaults suit a file dataset of photos (224 px, DataLoader
    workers, timm's transforms). Each source subclasses it with its own keys and defaults.

    Every source has train / valid / test splits: a split the dataset does not have of its own is
    cut from its training images, stratified, by `valid_pct` / `test_pct`, deterministically from
    `split_seed`. `test_pct: 0` means no test split at all (not even a dataset's own)."""

    name: str  # the registered source
    image_size: int = 224
    batch_size: int = 32
    # DataLoader workers for file datasets (in-memory sources use none): a number, or auto: 2 on the
    # CPU (training needs the cores), on a GPU this process's share of the cores less one, up to 16
    num_workers: Any = "auto"
    valid_pct: float = 0.2  # held out for validation (checkpoints, sweeps) when the source has no valid split
    test_pct: float = 0.2  # held out for the once-only test report when the source has no test split; 0: none
    split_seed: int = 0  # the stratified splits depend only on this (and the two fractions)
    in_memory: bool = False  # decode once, hold uint8 tensors (on the GPU when training there)
    # none | sampler (draw training images with class-balanced probabilities, with replacement) |
    # weights (weight the training loss by n / (classes x n_class)); valid and test stay as they are
    balance: str = "none"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # training images drawn, augmented as training augments them, into the run's
    # data/train_batch.png (logged with the run): a look at what the model is given; 0: none
    preview: int = 16

    def check(self) -> DataConfig:
        """Raise ConfigError naming the first bad value; returns self so calls can chain."""
        for key in ("image_size", "batch_size"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"data.{key}={getattr(self, key)!r} must be positive.")
        check_choice(self.balance, BALANCE_MODES, "data.balance")
        if type(self.preview) is not int or self.preview < 0:
            raise ConfigError(f"data.preview={self.preview!r} must be a number of images >= 0 (0: none).")
        workers = self.num_workers
        if workers != "auto" and (type(workers) is not int or workers < 0):
            raise ConfigError(f"data.num_workers={workers!r} must be a number >= 0 or auto.")
        if not 0 < self.valid_pct < 1:
            raise ConfigError(f"data.valid_pct={self.valid_pct} must be between 0 and 1.")
        if not 0 <= self.test_pct < 1:
            raise ConfigError(
                f"data.test_pct={self.test_pct} must be at least 0 (0: no test split) and below 1."
            )
        if self.valid_pct + self.test_pct >= 1:
            raise ConfigError(
                f"data.valid_pct={self.valid_pct} plus data.test_pct={self.test_pct} must be below 1 "
                "(the rest is the training split)."
            )
        return self


Loader = Callable[[Any], "ImageSource"]


@dataclass(frozen=True)
class DataSource:
    """A registered source: its config dataclass and the function that loads it from one."""

    name: str
    config: type[DataConfig]
    load: Loader


SOURCES: dict[str, DataSource] = {}


def register_source(name: str, config: type[DataConfig]) -> Callable[[Loader], Loader]:
    """Decorator: make `load(config) -> ImageSource` the loader of source `name`, configured by
    the dataclass `config` (a DataConfig subclass whose `name` defaults to `name`)."""
    if not (issubclass(config, DataConfig) and _default(config, "name") == name):
        raise ValueError(f"source {name!r}: config must subclass DataConfig with name defaulting to {name!r}")

    def decorate(load: Loader) -> Loader:
        SOURCES[name] = DataSource(name, config, load)
        return load

    return decorate


def _default(config: type[DataConfig], key: str) -> Any:
    return next(f.default for f in dataclasses.fields(config) if f.name == key)


def registered_sources() -> dict[str, DataSource]:
    """Every registered source by name (the built-in ones are registered on first use)."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    return SOURCES


def get_source(name: str) -> DataSource:
    """The source called `name`; ConfigError listing the registered names if there is none."""
    registered = registered_sources()
    if name not in registered:
        raise ConfigError(f"data.name={name!r} is not a data source; choose one of: {', '.join(registered)}.")
    return registered[name]


def data_config(cfg: Mapping[str, Any] | DataConfig) -> DataConfig:
    """The source's config dataclass from a (possibly partial) mapping: missing keys take the
    source's defaults; an unknown key or a missing required one raises ConfigError naming it."""
    if isinstance(cfg, DataConfig):
        return cfg
    if "name" not in cfg:
        raise ConfigError(f"data.name is missing; choose one of: {', '.join(registered_sources())}.")
    source = get_source(cfg["name"])
    values = dict(cfg)
    _check_keys(source.config, values, "data", source.name)
    if isinstance(values.get("augment"), Mapping):
        _check_keys(AugmentConfig, values["augment"], "data.augment", source.name)
        values["augment"] = AugmentConfig(**values["augment"])
    required = [f.name for f in dataclasses.fields(source.config) if _required(f) and f.name not in values]
    if required:
        raise ConfigError(f"data.{required[0]} is missing: data source {source.name!r} requires it.")
    return source.config(**values)


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _check_keys(config: type, values: Mapping[str, Any], prefix: str, source: str) -> None:
    keys = [f.name for f in dataclasses.fields(config)]
    unknown = [k for k in values if k not in keys]
    if unknown:
        raise ConfigError(
            f"{prefix}.{unknown[0]} is not a key of data source {source!r}; its keys are: {', '.join(keys)}."
        )
