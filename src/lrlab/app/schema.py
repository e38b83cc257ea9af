"""The config schemas, one dataclass per concept, each registered in Hydra's ConfigStore as the
schema its YAML extends, so a misspelt key fails when the config is composed, naming the key:

- the top-level keys, `model`, `train`, `tracking` and `trial`: the dataclasses below;
- each entry of `stages`: `lrlab.train.stage.Stage`;
- `lr_finder`: `lrlab.finder.config.FinderConfig` (`conf/lr_finder/*.yaml` extend
  `/lr_finder_schema`);
- `data`: each source's own dataclass from the data-source registry (`conf/data/<source>.yaml`
  extends `/data_<source>_schema`).

Defaults live in these dataclasses only; the YAML files pick options and override what differs.
`validate` then checks values the types cannot express (choices, ranges, files that must exist).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lrlab.app.key_checks import check_known_keys, check_target_keys
from lrlab.app.lr_free import check_lr_free
from lrlab.app.model_checks import check_model_name, check_pretrained
from lrlab.app.path_checks import check_paths
from lrlab.app.target_checks import check_targets
from lrlab.app.tasks import TASKS
from lrlab.core.compiling import compile_mode
from lrlab.core.limits import check_limits
from lrlab.core.monitor import Monitor
from lrlab.core.settings import DEVICES, TTA_MODES, precision_choice
from lrlab.data.registry import DataConfig, get_source, registered_sources
from lrlab.errors import ConfigError, check_choice
from lrlab.finder.config import FinderConfig
from lrlab.integrations.tracking import backend_names
from lrlab.train.batch_config import BatchFinderConfig
from lrlab.train.stage import SPREAD_MODES, AutoLrConfig, Stage, parse_trainable, uses_range_test

TRIAL_METRICS = ("error_rate", "valid_loss", "accuracy", "train_loss")


@dataclass
class ModelConfig:
    """A timm architecture with a new head sized to the data's classes."""

    name: str = MISSING  # a timm model name
    pretrained: bool | str = False  # false | true (timm hub) | bundled | /path/to/weights.{pth,safetensors}
    body_groups: int = 2  # the body is split into this many layer groups, plus the head
    drop_rate: float | None = None  # classifier dropout; None = timm's default for the model
    drop_path_rate: float | None = None
    # classify (timm's linear head) | regress (the level in [0, 1], squared error, nearest level) |
    # ordinal (CORN: rank-consistent cumulative probabilities); the last two for ordered classes
    head: str = "classify"


@dataclass
class TrainConfig:
    """How each optimizer step runs."""

    grad_accum: int = 1  # micro-batches per optimizer step
    grad_clip: float | None = None  # max gradient norm, None = off
    channels_last: bool = True
    # torch.compile the model: false | true (= default) | default | reduce-overhead (CUDA graphs) |
    # max-autotune | max-autotune-no-cudagraphs; training, evaluation and the range test all use it
    compile: bool | str = False
    log_every: int = 25  # optimizer steps between host read-backs of the loss
    progress: bool | str = "auto"  # batch progress bars: auto (when attached to a terminal) | true | false
    checkpoints: bool = True  # write last.pt, best.pt (by train.monitor) and final.pt in the run directory
    # true: cuDNN times its algorithms per input shape (CUDA; measured on H200: first epoch 31 s
    # instead of 15 s, no faster afterwards for EfficientNet-Lite0)
    cudnn_benchmark: bool = False
    label_smoothing: float = 0.0  # training loss only (valid/test losses are plain cross-entropy)
    # > 0: classes are ordered levels; train against a Gaussian of this width (class steps) around
    # the true class instead of one-hot targets (SORD). 0: off
    ordinal_smoothing: float = 0.0
    # Mixup / CutMix of training batches (timm's Mixup, soft targets): the Beta(alpha, alpha) of
    # each, 0: off; both > 0: one or the other per batch. mix_prob: the share of batches mixed
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    # EMA of the weights (timm's ModelEmaV3) for evaluation, checkpoints and the test split; the
    # EMA's weight on the past, e.g. 0.999; None: off. ema_warmup: timm's ramp of the decay from 0
    ema_decay: float | None = None
    ema_warmup: bool = True
    # layer-wise LR decay (timm's, BEiT's rule): each block's LR x layer_decay ** (blocks above it),
    # on top of the stage's LR per layer group, e.g. 0.75; None: off
    layer_decay: float | None = None
    tta: str = "none"  # none | hflip (image and mirror) | flips (also upside down, and both): mean probs
    monitor: str = "valid_loss"  # the valid-split metric best.pt, save_top_k and patience follow
    mode: str = "auto"  # auto (max for accuracy, else min) | min | max
    patience: int | None = None  # end a stage after this many epochs without improvement; None: off
    min_delta: float = 0.0  # the smallest change of `monitor` that counts as an improvement
    save_top_k: int = 1  # >1: also keep the k best epochs as checkpoints/top/epoch<N>-<metric><value>.pt
    # end the training on best.pt's weights (by `monitor`, as Keras's restore_best_weights): the test
    # split, final.pt and the logged model are then that epoch's; false: the last epoch's
    restore_best: bool = False
    sync_batchnorm: bool = False  # under torchrun: BatchNorm statistics over the global batch (CUDA only)


@dataclass
class TrackingConfig:
    """Where the run is logged (`tracking=none` turns it off)."""

    backend: str = "mlflow"  # mlflow | none | any backend registered in lrlab.integrations.tracking
    uri: str | None = None  # None: sqlite:///<launch dir>/mlflow.db (absolute, shared by multirun jobs)
    experiment: str = "${name}"  # MLflow experiment name
    run_name: str | None = None  # None: <name>-<task>-<timestamp>
    log_model: bool = True  # log final.pt (checkpoints/) and the model in MLflow's format (model/)
    register_model: str | None = None  # also register that model in MLflow's registry under this name
    parent_run_id: str | None = None  # set by the sweeper: nests this run under the sweep's parent run
    system_metrics: bool = False  # also sample CPU, memory, disk, network (GPU with pynvml) into the run
    system_metrics_interval: float = 10.0  # seconds between system-metric samples


@dataclass
class TrialConfig:
    """Which Optuna trial this job is (set by the lrlab_optuna sweeper): the job reports
    per-epoch metrics to it."""

    storage: str | None = None  # the study's storage URL
    study: str | None = None  # the study's name
    number: int | None = None  # the trial number
    source: str | None = None  # search | lr_finder:<rule>
    metric: str = "error_rate"  # reported after every epoch, for pruning


@dataclass
class LrlabConfig:
    """The whole config: one option per group (conf/<group>/*.yaml) plus the top-level keys."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = MISSING  # the chosen source's own dataclass (see lrlab.data.registry)
    optimizer: Any = MISSING  # a partial torch.optim class, built by hydra.utils.instantiate
    schedule: Any = MISSING  # a partial lrlab.core.schedules function
    stages: list[Stage] = field(default_factory=list)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    lr_finder: FinderConfig = field(default_factory=FinderConfig)
    lr_auto: AutoLrConfig = field(default_factory=AutoLrConfig)  # lr=auto's race
    batch_finder: BatchFinderConfig = field(default_factory=BatchFinderConfig)  # task=batch_size
    task: str = (
        "train"  # train | lr_find | batch_size (probes) | predict (checkpoint, input) | evaluate | export
    )
    checkpoint: str | None = (
        None  # a checkpoint file (final.pt / best.pt / last.pt) for task=predict, evaluate, export
    )
    format: str = "onnx"  # task=export: onnx (pip install 'lrlab[export]') | torchscript
    input: str | None = None  # an image file or a folder of them, for task=predict
    resume: str | None = (
        None  # auto (the newest last.pt of a run with this config, else a new start) | PATH/TO/last.pt
    )
    name: str = "${data.name}"  # experiment name: MLflow experiment and run-name prefix
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda | mps
    precision: str = "auto"  # auto | 32 | bf16 | 16
    # torch.use_deterministic_algorithms (CPU runs repeat bit for bit on one machine either way)
    deterministic: bool = False
    epochs: int = 5  # epochs of the main (unfrozen) stage; stage presets refer to it
    freeze_epochs: int = 1  # epochs of each frozen stage (fine_tune's head stage)
    lr_spread: float = 100.0  # fine_tune's unfrozen stage: the first layer group trains at lr / lr_spread
    # find: each stage runs the range test and takes its suggestion; auto: races LRs around it
    # (lr_auto) and continues the winner; or a number
    lr: Any = "find"
    # fine_tune's unfrozen stage; follows lr unless a recipe or the command line sets it
    unfrozen_lr: Any = "${lr}"
    train: TrainConfig = field(default_factory=TrainConfig)
    trial: TrialConfig = field(default_factory=TrialConfig)


_CLAIMED: dict[str, str] = {}


def claim_directory(base: str) -> str:
    """Create and return `base`, or `base-1`, `base-2`, ... the first that does not exist yet. The
    creation is atomic (mkdir), so two runs started in the same second never share a directory;
    the same `base` asked again in this process returns the directory already claimed."""
    if base in _CLAIMED:
        return _CLAIMED[base]
    Path(base).parent.mkdir(parents=True, exist_ok=True)
    for n in range(10_000):
        candidate = base if n == 0 else f"{base}-{n}"
        try:
            Path(candidate).mkdir()
        except FileExistsError:
            continue
        _CLAIMED[base] = candidate
        return candidate
    raise ConfigError(f"could not find a free run directory next to {base}")


def rank_suffix() -> str:
    """`-rank<R>` for the processes torchrun starts besides rank 0, else empty: their Hydra run
    directory, `.hydra` folder and log file get it, so no two processes write the same file."""
    from lrlab.core.launch import launched_rank

    rank = launched_rank()
    return f"-rank{rank}" if rank > 0 else ""


def replace_find(lr: Any, instead: Any) -> Any:
    """`instead` where `lr` is `find`, else `lr`: a recipe's measured LR for one stage replaces
    only the range test's answer, never an LR the user gave (`${lrlab_replace_find:${lr},5e-3}`)."""
    return instead if str(lr) == "find" else lr


def register_schemas() -> None:
    """Store the schemas in Hydra's ConfigStore at its root, where they are not listed as options
    of a group: `lrlab_schema` (config.yaml extends it), `lr_finder_schema` (conf/lr_finder/*.yaml)
    and one `data_<source>_schema` per registered data source (conf/data/<source>.yaml)."""
    OmegaConf.register_new_resolver("lrlab_unique_dir", claim_directory, replace=True)
    OmegaConf.register_new_resolver("lrlab_rank_suffix", rank_suffix, replace=True)
    OmegaConf.register_new_resolver("lrlab_replace_find", replace_find, replace=True)
    store = ConfigStore.instance()
    store.store(name="lrlab_schema", node=LrlabConfig, provider="lrlab")
    store.store(name="lr_finder_schema", node=FinderConfig, provider="lrlab")
    for source in registered_sources().values():
        store.store(name=f"data_{source.name}_schema", node=source.config, provider="lrlab")


def _positive(value: float, key: str) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{key}={value!r} must be a positive finite number.")


def _check_stage(stage: DictConfig, key: str) -> None:
    from lrlab.finder.rules import RULES

    if not uses_range_test(stage.lr):
        try:
            stage.lr = float(stage.lr)
        except (TypeError, ValueError):
            raise ConfigError(
                f"{key}.lr={stage.lr!r} is not valid: use find (range test), auto (range test, then "
                "a race of LRs around its suggestion) or a positive number."
            ) from None
        _positive(stage.lr, f"{key}.lr")
    try:
        parse_trainable(stage.trainable)
    except ConfigError as exc:
        raise ConfigError(f"{key}.{exc}") from None
    if stage.lr_rule is not None:
        check_choice(stage.lr_rule, tuple(RULES), f"{key}.lr_rule")
    check_choice(stage.lr_spread_mode, SPREAD_MODES, f"{key}.lr_spread_mode")
    if stage.pct_start is not None and not 0 < stage.pct_start < 1:
        raise ConfigError(f"{key}.pct_start={stage.pct_start} must be between 0 and 1.")


def _qualified(check: Callable[[], object], section: str, keys: Iterable[str]) -> None:
    """Run a dataclass's `check()`; its ValueError becomes a ConfigError whose `key=` mentions
    read `section.key=`, so the message names the config path."""
    try:
        check()
    except ValueError as exc:
        message, count = re.subn(rf"\b({'|'.join(keys)})=", rf"{section}.\1=", str(exc))
        raise ConfigError(message if count else f"{section}: {message}") from None


def _merged(cfg: DictConfig) -> DictConfig:
    """`cfg` merged into LrlabConfig (with the data source's own schema under `data`), every
    interpolation resolvable and nothing missing; ConfigError naming the key otherwise."""
    try:
        schema = OmegaConf.structured(LrlabConfig)
        schema.data = OmegaConf.structured(get_source(OmegaConf.select(cfg, "data.name")).config)
        merged = OmegaConf.merge(schema, cfg)
        OmegaConf.to_container(merged, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        where = f" (key: {key})" if key else ""
        reason = (getattr(exc, "msg", None) or str(exc)).splitlines()[0]
        raise ConfigError(f"Invalid configuration{where}: {reason}.") from exc
    return merged


def _check_sections(merged: DictConfig) -> None:
    """The settings each section's own dataclass checks: the monitor, the data source, the range
    test, lr=auto's race and the batch-size probe."""
    _qualified(
        lambda: Monitor(merged.train.monitor, merged.train.mode, merged.train.min_delta),
        "train",
        ("monitor", "mode"),
    )
    OmegaConf.to_object(merged.data).check()
    finder = OmegaConf.to_container(merged.lr_finder, resolve=True)
    _qualified(lambda: FinderConfig(**finder).check(), "lr_finder", finder)
    OmegaConf.to_object(merged.lr_auto).check()
    probe = OmegaConf.to_container(merged.batch_finder, resolve=True)
    _qualified(lambda: BatchFinderConfig(**probe).check(), "batch_finder", probe)


def validate(cfg: DictConfig) -> DictConfig:
    """Merge `cfg` into the schemas and check values; raises ConfigError naming the bad key."""
    merged = _merged(cfg)
    check_known_keys(merged)
    check_limits(merged)
    for key in ("name", "tracking.experiment"):
        if not str(OmegaConf.select(merged, key) or "").strip():
            raise ConfigError(
                f"{key} is empty: the MLflow experiment and the run names need one (e.g. {key}=elpv)."
            )
    merged.task = check_choice(merged.task, tuple(TASKS), "task")
    merged.device = check_choice(merged.device, DEVICES, "device")
    merged.precision = precision_choice(merged.precision)
    check_choice(merged.tracking.backend, backend_names(), "tracking.backend")
    check_choice(merged.train.tta, TTA_MODES, "train.tta")
    if merged.train.restore_best and not merged.train.checkpoints:
        raise ConfigError("train.restore_best=true needs train.checkpoints=true: best.pt holds the weights.")
    check_targets(merged)
    compile_mode(merged.train.compile)
    _check_sections(merged)
    if merged.trial.study is not None:
        check_choice(merged.trial.metric, TRIAL_METRICS, "trial.metric")
        if merged.trial.storage is None or merged.trial.number is None:
            raise ConfigError(
                "trial.study is set but trial.storage or trial.number is missing "
                "(the sweeper sets all three)."
            )
    check_choice(merged.format, ("onnx", "torchscript"), "format")
    check_paths(merged)
    if not merged.stages:
        raise ConfigError("stages is empty: give at least one stage (name, epochs, lr).")
    for i, stage in enumerate(merged.stages):
        _check_stage(stage, f"stages.{i}")
    check_lr_free(merged)
    for section in ("optimizer", "schedule"):
        check_target_keys(merged[section], section)
    check_model_name(merged.model.name)
    check_pretrained(merged.model.pretrained)
    return merged
