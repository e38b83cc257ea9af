"""Builds a run's components from a validated config: config -> (data, model) -> layer groups,
loaders, optimizer, schedule and stages. Everything here can fail on bad input, so it runs before
any MLflow run exists."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lrlab.app.schema import validate
from lrlab.core import distributed
from lrlab.core.device import resolve_device, resolve_precision
from lrlab.core.ema import WeightAverage
from lrlab.core.engine import Engine
from lrlab.core.losses import balanced_class_weights, training_loss
from lrlab.core.mixing import batch_mixer
from lrlab.core.optim import build_optimizer
from lrlab.core.reproducibility import seed_everything
from lrlab.core.settings import StepOptions, progress_enabled
from lrlab.data.loaders import make_loaders
from lrlab.data.preprocess import Preprocess
from lrlab.data.sources import load_source
from lrlab.data.types import split_labels
from lrlab.errors import ConfigError
from lrlab.finder.config import FinderConfig
from lrlab.finder.curve_cache import SharedCurves
from lrlab.integrations.tracking import get_backend
from lrlab.models.factory import (
    count_parameters,
    create_model,
    normalization,
    to_device,
)
from lrlab.models.groups import layer_groups, model_summary
from lrlab.train.stage import AutoLrConfig, Stage
from lrlab.train.stages import Training, trainable_group_indices

log = logging.getLogger("lrlab")


@dataclass
class Setup:
    """The components a config builds before any run is started (so bad input fails first)."""

    cfg: DictConfig
    device: torch.device
    precision: str
    model: torch.nn.Module
    groups: list
    train_loader: Any
    valid_loader: Any
    optimizer: torch.optim.Optimizer
    schedule: Any
    stages: list[Stage]
    test_loader: Any = None  # None without a test split (data.test_pct=0)
    test_paths: list[str] | None = None  # the test images' files, in the loader's order (file data)
    class_names: list[str] = field(default_factory=list)
    class_groups: dict[str, list[int]] | None = None  # coarser classes reported on test (ELPV: 2-class)
    split_sizes: dict[str, int] = field(default_factory=dict)  # images in train, valid and test
    split_digests: dict[str, str] = field(default_factory=dict)  # content digests (only when tracked)
    preprocess: Preprocess | None = None  # how an image file becomes an input, as for the eval splits
    finder: FinderConfig = field(default_factory=FinderConfig)  # the range test's settings (lr_finder)
    auto: AutoLrConfig = field(default_factory=AutoLrConfig)  # lr=auto's race (lr_auto)
    class_weights: torch.Tensor | None = None  # the training loss's class weights (data.balance=weights)

    def training(self, shared: SharedCurves | None = None) -> Training:
        """What the staged trainer works on (range-test curves reused from `shared`, if given)."""
        return Training(
            self.groups,
            self.train_loader,
            self.valid_loader,
            self.optimizer,
            self.schedule,
            self.finder,
            self.cfg.seed,
            shared,
            self.auto,
            _race_judge,
        )

    def model_description(self) -> dict[str, Any]:
        """What `lrlab.load_model` needs besides the weights, stored in every checkpoint."""
        from lrlab import __version__

        return {
            "model_name": self.cfg.model.name,
            "head": self.cfg.model.head,
            "class_names": list(self.class_names),
            "preprocess": self.preprocess.to_dict() if self.preprocess else None,
            "in_chans": 3,
            "tta": self.cfg.train.tta,
            "config": OmegaConf.to_yaml(self.cfg, resolve=True),
            "lrlab_version": __version__,
        }


def build(cfg: DictConfig) -> Setup:
    """Validate `cfg`, seed, and build data, model, layer groups, loaders and optimizer."""
    cfg = validate(cfg)
    seed_everything(cfg.seed, cfg.deterministic)
    device = distributed.init_distributed(resolve_device(cfg.device))  # cuda:LOCAL_RANK under torchrun
    precision = resolve_precision(cfg.precision, device)
    started = time.perf_counter()
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    source = load_source(data_cfg)
    model = create_model(
        cfg.model.name,
        source.num_classes,
        cfg.model.pretrained,
        cfg.model.drop_rate,
        cfg.model.drop_path_rate,
        cfg.model.head,
    )
    groups = layer_groups(model, cfg.model.body_groups)
    norm = normalization(model)
    if cfg.train.sync_batchnorm and distributed.is_distributed():
        model = distributed.convert_sync_batchnorm(model, device)
    model = to_device(model, device, cfg.train.channels_last)
    data_device = device if cfg.data.in_memory else "cpu"
    shard = (distributed.rank(), distributed.world_size())
    loaders = make_loaders(source, data_cfg, norm, data_device, cfg.seed, shard)
    # plain lists, not ListConfig: the optimizer's state (betas) goes into weights_only checkpoints
    factory = instantiate(cfg.optimizer, _convert_="all")
    optimizer = build_optimizer(factory, model, groups, cfg.lr_finder.start_lr, None, cfg.train.layer_decay)
    stages: list[Stage] = OmegaConf.to_object(cfg.stages)  # Stage is the schema of each entry
    check_stages_fit(stages, groups)
    sizes = _log_setup(
        cfg, model, groups, source, f"device {device}{_processes()}, precision {precision}", started
    )
    return Setup(
        cfg,
        device,
        precision,
        model,
        groups,
        loaders.train,
        loaders.valid,
        optimizer,
        instantiate(cfg.schedule),
        stages,
        test_loader=loaders.test,
        test_paths=getattr(source.test, "paths", None),
        class_names=list(source.class_names),
        class_groups=source.class_groups,
        split_sizes=sizes,
        split_digests=source.digests() if _records_datasets(cfg) else {},
        preprocess=Preprocess.of(source.eval_resize, cfg.data.image_size, source.channels, norm),
        finder=FinderConfig(**OmegaConf.to_container(cfg.lr_finder, resolve=True)),
        auto=AutoLrConfig(**OmegaConf.to_container(cfg.lr_auto, resolve=True)),
        class_weights=_class_weights(source) if cfg.data.balance == "weights" else None,
    )


def _log_setup(
    cfg: DictConfig, model: Any, groups: Any, source: Any, where: str, started: float
) -> dict[str, int]:
    """The run's first lines (model, data and splits, device and precision, setup time; layer
    groups); returns the split sizes they name."""
    sizes = source.sizes()
    log.info(
        f"lrlab: {cfg.model.name} ({count_parameters(model):,d} params, "
        f"pretrained={cfg.model.pretrained}) on {cfg.data.name} ({sizes['train']} train / "
        f"{sizes['valid']} valid / {sizes['test']} test, {source.num_classes} classes, "
        f"{cfg.data.image_size} px) | {where} | setup {time.perf_counter() - started:.1f}s"
    )
    log.info("layer groups:\n" + model_summary(model, groups))
    return sizes


def _class_weights(source: Any) -> torch.Tensor:
    """The balanced class weights of the training split, printed beside the class counts."""
    labels = split_labels(source.train)
    weights = balanced_class_weights(labels, source.num_classes)
    counts = torch.bincount(labels, minlength=source.num_classes).tolist()
    listed = ", ".join(
        f"{name} {n} x{w:.2f}"
        for name, n, w in zip(source.class_names, counts, weights.tolist(), strict=True)
    )
    log.info(f"data.balance=weights: training loss weights per class (train images x weight): {listed}")
    return weights


def _race_judge(reduction_factor: int) -> Any:
    """lr=auto's judge, Optuna's successive halving (imported only when a race runs)."""
    from lrlab.integrations.optuna import SuccessiveHalvingJudge

    return SuccessiveHalvingJudge(reduction_factor)


def _records_datasets(cfg: DictConfig) -> bool:
    """Whether this process records the data's content digests (they read every image once)."""
    return get_backend(cfg.tracking.backend).records_datasets and distributed.is_main()


def check_stages_fit(stages: list[Stage], groups: list) -> None:
    """Every stage's `trainable` names layer groups this model has (ConfigError naming the stage)."""
    for i, stage in enumerate(stages):
        try:
            trainable_group_indices(stage.trainable, len(groups))
        except ConfigError as exc:
            names = ", ".join(g.name for g in groups)
            raise ConfigError(f"stages.{i}.{exc} (this model's layer groups: {names})") from None


def _processes() -> str:
    world = distributed.world_size()
    return f" x {world} processes (DDP, global batch split across them)" if world > 1 else ""


def make_engine(setup: Setup, callbacks: list[Any]) -> Engine:
    """The run's engine: a DistributedEngine under torchrun (progress bars on rank 0 only)."""
    t = setup.cfg.train
    options = StepOptions.of(t)
    options.progress = progress_enabled(t.progress) and distributed.is_main()
    classes = len(setup.class_names)
    mixer = batch_mixer(classes, t.mixup_alpha, t.cutmix_alpha, t.mix_prob, t.label_smoothing)
    return distributed.engine_class()(
        setup.model,
        setup.device,
        setup.precision,
        loss_fn=training_loss(
            classes,
            0.0 if mixer else t.label_smoothing,  # Mixup folds the smoothing into its targets
            t.ordinal_smoothing,
            setup.class_weights,
            setup.cfg.model.head,
        ),
        callbacks=callbacks,
        options=options,
        batch_transform=mixer,
        average=WeightAverage(setup.model, t.ema_decay, t.ema_warmup) if t.ema_decay else None,
    )
