"""The staged trainer (fastai's `fine_tune` and more): per stage, freeze or unfreeze layer groups,
optionally run the range test and take its suggestion, spread discriminative LRs over the groups,
build that stage's one-cycle scheduler and fit.

One optimizer holds every parameter from the start (so unfreezing needs no new param group and
no new scheduler wiring); frozen parameters have requires_grad off, so they get no gradient and
no weight decay; the optimizer state is cleared whenever the trainable set changes, as fastai does.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from lrlab.core.engine import Engine
from lrlab.core.optim import group_lrs, set_lrs
from lrlab.core.types import EpochResult, LayerGroup
from lrlab.errors import ConfigError, check_choice
from lrlab.finder.config import FinderConfig
from lrlab.finder.curve_cache import SharedCurves
from lrlab.finder.range_test import find_lr
from lrlab.finder.result import LRFinderResult
from lrlab.train.race import JudgeFactory, RaceResult, race
from lrlab.train.resume import Decisions, ResumeState
from lrlab.train.stage import SPREAD_MODES, AutoLrConfig, Stage, parse_trainable, uses_range_test

log = logging.getLogger("lrlab")

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


@dataclass
class StageStart:
    """What a stage decided before fitting: reported to callbacks (console, MLflow)."""

    stage: Stage
    index: int
    lr: float
    rule: str | None
    layer_lrs: dict[str, float]
    trainable_groups: list[str]
    trainable_params: int
    finder: LRFinderResult | None = None
    cleared_optimizer_state: bool = False
    decisions: Decisions = field(default_factory=dict)  # (lr, rule) of every stage started so far
    race: RaceResult | None = None  # lr=auto: the race that chose `lr`
    steps_per_epoch: int = 0  # optimizer steps in one pass over the training images


def trainable_group_indices(trainable: str, n_groups: int) -> list[int]:
    """Indices of the layer groups a `trainable` spec unfreezes ('head', 'all', 'from:K')."""
    first = parse_trainable(trainable)
    if first is None:
        return list(range(n_groups))
    if not -n_groups <= first < n_groups:
        raise ConfigError(
            f"trainable={trainable!r} is not valid for {n_groups} layer groups; "
            f"use from:K with -{n_groups} <= K < {n_groups}."
        )
    return list(range(first % n_groups, n_groups))


def spread_lrs(lr: float, n_groups: int, spread: float = 1.0, mode: str = "geometric") -> list[float]:
    """Per layer group LRs: geometric from lr/spread (first) to lr (head), fastai's slice(lo, hi);
    or mode 'slice_hi': lr/spread for every body group and lr for the head, fastai's slice(hi)."""
    check_choice(mode, SPREAD_MODES, "lr_spread_mode")
    if n_groups == 1 or spread == 1.0:
        return [lr] * n_groups
    if mode == "slice_hi":
        return [lr / spread] * (n_groups - 1) + [lr]
    lo = lr / spread
    return [lo * (lr / lo) ** (i / (n_groups - 1)) for i in range(n_groups)]


def freeze(
    model: nn.Module, groups: Sequence[LayerGroup], trainable: Sequence[int], train_bn: bool
) -> list[nn.Module]:
    """Set requires_grad per layer group; with train_bn, norm layers of frozen groups stay
    trainable. Returns the norm modules to keep in eval mode (frozen groups when not train_bn)."""
    names = dict(model.named_parameters())
    frozen_names = {n for i, g in enumerate(groups) if i not in trainable for n in g.param_names}
    norm_param_names: set[str] = set()
    norm_modules: dict[str, nn.Module] = {}
    for module_name, module in model.named_modules():
        if isinstance(module, NORM_TYPES):
            for pname, _ in module.named_parameters(recurse=False):
                full = f"{module_name}.{pname}" if module_name else pname
                norm_param_names.add(full)
                if full in frozen_names:
                    norm_modules[module_name] = module
    for name, param in names.items():
        keep = name not in frozen_names or (train_bn and name in norm_param_names)
        param.requires_grad_(keep)
        if not keep:
            param.grad = None
    return [] if train_bn else list(norm_modules.values())


def enter_stage(engine: Engine, groups: Sequence[LayerGroup], stage: Stage) -> tuple[list[int], list[float]]:
    """Make `engine.model` train what `stage` trains (its layer groups, norm layers per `train_bn`);
    returns the trainable group indices and the stage's LR ratio per group (head 1)."""
    trainable = trainable_group_indices(stage.trainable, len(groups))
    engine.hold_in_eval(freeze(engine.model, groups, trainable, stage.train_bn))
    return trainable, spread_lrs(1.0, len(groups), stage.lr_spread, stage.lr_spread_mode)


def first_training_stage(stages: Sequence[Stage]) -> tuple[int, Stage] | None:
    """The index and stage that trains first (epochs > 0), as `run_stages` would start; None if none."""
    return next(((i, s) for i, s in enumerate(stages) if s.epochs > 0), None)


def widest_stage(stages: Sequence[Stage], n_groups: int) -> Stage | None:
    """The training stage that trains the most layer groups (the first of equals): the one whose
    step needs the most memory, as the batch-size probe wants."""
    training = [s for s in stages if s.epochs > 0]
    return max(training, key=lambda s: len(trainable_group_indices(s.trainable, n_groups)), default=None)


def trainable_count(model: nn.Module) -> int:
    """How many parameters of `model` train now (requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


ScheduleFactory = Callable[..., Any]


@dataclass
class Training:
    """What staged training works on: the model's layer groups, the train and valid loaders, one
    optimizer over every parameter, the schedule factory each stage builds its scheduler with, and
    the range test's settings (`finder`; `seed` for repeats' data orders; `shared`: curves reused
    from runs that start from the identical state), and `lr=auto`'s race settings (`auto`) and
    judge (`judge`: reduction factor -> a `RaceJudge`, e.g.
    `lrlab.integrations.optuna.SuccessiveHalvingJudge`)."""

    groups: Sequence[LayerGroup]
    train_loader: Any
    valid_loader: Any
    optimizer: torch.optim.Optimizer
    schedule: ScheduleFactory
    finder: FinderConfig = field(default_factory=FinderConfig)
    seed: int = 0
    shared: SharedCurves | None = None
    auto: AutoLrConfig = field(default_factory=AutoLrConfig)
    judge: JudgeFactory | None = None


def _stage_lr(
    engine: Engine, training: Training, stage: Stage, index: int, ratios: Sequence[float]
) -> tuple[float, str | None, LRFinderResult | None]:
    """The stage's head LR: its fixed `lr`, or (lr 'find' or 'auto') the range test's suggestion for
    the stage's rule, run with the stage's LR ratios across groups; times `lr_scale`."""
    if not uses_range_test(stage.lr):
        return float(stage.lr) * stage.lr_scale, None, None
    if engine.average is not None:  # test the weights training continues from, not their EMA
        engine.average.swap_out(engine.model)
    rule = stage.lr_rule or training.finder.rule
    set_lrs(training.optimizer, group_lrs(training.optimizer, ratios))
    found = find_lr(
        engine.model,
        training.train_loader,
        training.optimizer,
        engine=engine,
        config=replace(training.finder, suggest=rule, per_group=False),
        seed=training.seed,
        val_loader=training.valid_loader,
        shared=training.shared,
    )
    lr = found.suggestions[rule] * stage.lr_scale
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(
            f"stage {stage.name}: the range test gave no {rule} suggestion ({found.stop_reason}); "
            f"set stages.{index}.lr to a number or try another lr_rule"
        )
    return lr, rule, found


def _scheduler_factory(
    training: Training, stage: Stage, ratios: Sequence[float], total_steps: int
) -> Callable[[float], Any]:
    """head LR -> the stage's scheduler over `total_steps` with the stage's LR ratios across groups."""

    def make(head_lr: float) -> Any:
        max_lr = group_lrs(training.optimizer, [head_lr * r for r in ratios])
        return training.schedule(
            training.optimizer, max_lr=max_lr, total_steps=total_steps, **stage.schedule_overrides()
        )

    return make


def _race(
    engine: Engine,
    training: Training,
    stage: Stage,
    index: int,
    suggestion: float,
    make_scheduler: Callable[[float], Any],
    decisions: Decisions,
) -> tuple[RaceResult, ResumeState, list[EpochResult]]:
    """lr=auto: race around `suggestion`; the race, the winner's state and its raced epochs."""
    if training.judge is None:
        raise ConfigError(
            f"stages.{index}.lr=auto needs a race judge: Training(judge=lrlab.integrations."
            "optuna.SuccessiveHalvingJudge) (the CLI passes it)"
        )
    before, judge = len(engine.history), training.judge(training.auto.reduction_factor)
    raced, winner = race(
        engine, training, stage, index, suggestion, make_scheduler, training.auto, decisions, judge
    )
    return raced, winner, winner.history[before:]


def _announce(engine: Engine, groups: Sequence[LayerGroup], start: dict[str, Any]) -> None:
    """Tell the callbacks what a stage decided: a StageStart of `start` plus the names of its
    trainable groups (`start["trainable_groups"]` holds their indices), its per-group LRs
    (`start["layer_lrs"]`, a list) and its trainable parameter count."""
    start.update(
        layer_lrs=dict(zip((g.name for g in groups), start["layer_lrs"])),
        trainable_groups=[groups[i].name for i in start["trainable_groups"]],
        trainable_params=trainable_count(engine.model),
    )
    for cb in engine.callbacks:
        cb.on_stage_start(engine, StageStart(**start))


def run_stages(
    engine: Engine, training: Training, stages: Sequence[Stage], resume: ResumeState | None = None
) -> list[EpochResult]:
    """Run each stage in order and return every epoch's result. Stages whose lr is 'find' run the
    range test with `training.finder` (held-out loss on the valid loader); 'auto' then races LRs
    around its suggestion (`training.auto`) and continues the winner. `resume` skips finished
    stages, reuses their LR decisions and continues after its last epoch."""
    steps, groups = engine.steps_per_epoch(training.train_loader), training.groups
    optimizer = training.optimizer
    decisions: Decisions = dict(resume.decisions) if resume is not None else {}
    first_result = len(engine.history)
    previous: tuple[int, ...] | None = None
    for index, stage in enumerate(stages):
        resuming = resume is not None and index == resume.stage_index
        if stage.epochs <= 0 or (resume is not None and index < resume.stage_index):
            if stage.epochs > 0:
                previous = tuple(trainable_group_indices(stage.trainable, len(groups)))
            continue
        trainable, ratios = enter_stage(engine, groups, stage)
        cleared = previous is not None and tuple(trainable) != previous and not resuming
        if cleared:
            optimizer.state.clear()
        previous = tuple(trainable)
        lr, rule, found = (
            (*decisions[index], None) if resuming else _stage_lr(engine, training, stage, index, ratios)
        )
        make_scheduler = _scheduler_factory(training, stage, ratios, steps * stage.epochs)
        raced, winner, replay = None, None, []
        if stage.lr == "auto" and not resuming:
            raced, winner, replay = _race(engine, training, stage, index, lr, make_scheduler, decisions)
            lr = raced.winner
        decisions[index] = (lr, rule)
        start = {"stage": stage, "index": index, "lr": lr, "rule": rule, "finder": found, "race": raced}
        start["steps_per_epoch"] = steps
        start.update(trainable_groups=trainable, cleared_optimizer_state=cleared, decisions=dict(decisions))
        _announce(engine, groups, {**start, "layer_lrs": [lr * r for r in ratios]})
        scheduler, first = make_scheduler(lr), 0
        if resuming:
            resume.restore(engine, optimizer, scheduler, training.train_loader)
            first, first_result = resume.stage_epochs_done, 0
        elif winner is not None:
            winner.restore(engine, optimizer, scheduler, training.train_loader)
            first = winner.stage_epochs_done
        engine.fit(
            training.train_loader,
            training.valid_loader,
            optimizer,
            scheduler,
            stage.epochs,
            stage.name,
            first,
            replay,
        )
    engine.hold_in_eval([])
    return engine.history[first_result:]
