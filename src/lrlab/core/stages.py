"""The staged runner (fastai's `fine_tune` and more): per stage, freeze or unfreeze layer groups,
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
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from lrlab.core.engine import Engine
from lrlab.core.optim import group_lrs, set_lrs
from lrlab.core.resume import StageProgress, decisions, restore
from lrlab.core.types import EpochResult, Stage
from lrlab.finder.config import FinderConfig
from lrlab.finder.curve_cache import SharedCurves
from lrlab.finder.range_test import find_lr
from lrlab.finder.result import LRFinderResult
from lrlab.models.groups import LayerGroup

log = logging.getLogger("lrlab")

ScheduleFactory = Callable[..., Any]
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


def trainable_group_indices(trainable: str, n_groups: int) -> list[int]:
    """Indices of the layer groups a `trainable` spec unfreezes ('head', 'all', 'from:K')."""
    if trainable == "all":
        return list(range(n_groups))
    if trainable == "head":
        return [n_groups - 1]
    if trainable.startswith("from:"):
        try:
            k = int(trainable[5:])
        except ValueError:
            k = None
        if k is not None and -n_groups <= k < n_groups:
            return list(range(k % n_groups, n_groups))
    raise ValueError(
        f"trainable={trainable!r} is not valid; use head, all, or from:K with -{n_groups} <= K < {n_groups}"
    )


def spread_lrs(lr: float, n_groups: int, spread: float = 1.0, mode: str = "geometric") -> list[float]:
    """Per layer group LRs: geometric from lr/spread (first) to lr (head), fastai's slice(lo, hi);
    or mode 'slice_hi': lr/spread for every body group and lr for the head, fastai's slice(hi)."""
    if n_groups == 1 or spread == 1.0:
        return [lr] * n_groups
    if mode == "slice_hi":
        return [lr / spread] * (n_groups - 1) + [lr]
    if mode != "geometric":
        raise ValueError(f"lr_spread_mode={mode!r} is not valid; use geometric or slice_hi")
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


def _trainable_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _stage_lr(
    engine: Engine,
    stage: Stage,
    index: int,
    train_loader: Any,
    valid_loader: Any,
    optimizer: torch.optim.Optimizer,
    ratios: Sequence[float],
    finder: FinderConfig,
    seed: int,
    shared: SharedCurves | None = None,
) -> tuple[float, str | None, LRFinderResult | None]:
    """The stage's head LR: its fixed `lr`, or (lr 'find') the range test's suggestion for the
    stage's rule, run with the stage's LR ratios across groups; times `lr_scale`."""
    if stage.lr != "find":
        return float(stage.lr) * stage.lr_scale, None, None
    rule = stage.lr_rule or finder.rule
    set_lrs(optimizer, group_lrs(optimizer, ratios))
    config = replace(finder, suggest=rule, per_group=False)
    found = find_lr(
        engine.model,
        train_loader,
        optimizer,
        engine=engine,
        config=config,
        seed=seed,
        val_loader=valid_loader,
        progress=engine.progress,
        curve_store=shared.store if shared else None,
        context=shared.context if shared else "",
    )
    lr = found.suggestions[rule] * stage.lr_scale
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(
            f"stage {stage.name}: the range test gave no {rule} suggestion ({found.stop_reason}); "
            f"set stages.{index}.lr to a number or try another lr_rule"
        )
    return lr, rule, found


def _announce(
    engine: Engine, groups: Sequence[LayerGroup], trainable: list[int], layer_lrs: list[float], **decided: Any
) -> None:
    """Tell the callbacks what a stage decided (a StageStart of `decided` plus its per-group LRs,
    trainable groups and parameter count)."""
    start = StageStart(
        layer_lrs=dict(zip((g.name for g in groups), layer_lrs)),
        trainable_groups=[groups[i].name for i in trainable],
        trainable_params=_trainable_count(engine.model),
        **decided,
    )
    for cb in engine.callbacks:
        cb.on_stage_start(engine, start)


def run_stages(
    engine: Engine,
    groups: Sequence[LayerGroup],
    train_loader: Any,
    valid_loader: Any,
    stages: Sequence[Stage],
    optimizer: torch.optim.Optimizer,
    schedule: ScheduleFactory,
    finder: FinderConfig | None = None,
    seed: int = 0,
    resume: dict[str, Any] | None = None,
    shared: SharedCurves | None = None,
) -> list[EpochResult]:
    """Run each stage in order and return every epoch's result. Stages whose lr is 'find' run the
    range test with `finder` (held-out loss on `valid_loader`, repeats' data orders from `seed`, a
    curve reused from `shared` when its start is identical). `resume` (a checkpoint's `resume` entry
    plus its `model`) skips finished stages, reuses their LR decisions, continues after its last epoch."""
    finder, steps = finder or FinderConfig(), engine.steps_per_epoch(train_loader)
    model = engine.model
    engine.stage_progress = progress = StageProgress()
    first_result = len(engine.history)
    previous: tuple[int, ...] | None = None
    for index, stage in enumerate(stages):
        trainable = trainable_group_indices(stage.trainable, len(groups))
        resuming = resume is not None and index == resume["stage_index"]
        if stage.epochs <= 0 or (resume is not None and index < resume["stage_index"]):
            previous = tuple(trainable) if stage.epochs > 0 else previous
            continue
        engine.eval_modules = freeze(model, groups, trainable, stage.train_bn)
        cleared = previous is not None and tuple(trainable) != previous and not resuming
        if cleared:
            optimizer.state.clear()
        previous = tuple(trainable)
        ratios = spread_lrs(1.0, len(groups), stage.lr_spread, stage.lr_spread_mode)
        if resuming:
            progress.decisions = decisions(resume)
        lr, rule, found = (
            (*progress.decisions[index], None)
            if resuming
            else _stage_lr(
                engine, stage, index, train_loader, valid_loader, optimizer, ratios, finder, seed, shared
            )
        )
        progress.index, progress.decisions[index] = index, (lr, rule)
        layer_lrs = [lr * r for r in ratios]
        decided = {"stage": stage, "index": index, "lr": lr, "rule": rule, "finder": found}
        _announce(engine, groups, trainable, layer_lrs, cleared_optimizer_state=cleared, **decided)
        scheduler = schedule(
            optimizer,
            max_lr=group_lrs(optimizer, layer_lrs),
            total_steps=steps * stage.epochs,
            **stage.schedule_overrides(),
        )
        first = 0
        if resuming:
            restore(resume, resume["model"], engine, optimizer, scheduler, train_loader)
            first, first_result = resume["stage_epochs_done"], 0
        engine.fit(train_loader, valid_loader, optimizer, scheduler, stage.epochs, stage.name, first)
    engine.eval_modules = []
    return engine.history[first_result:]
