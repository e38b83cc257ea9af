"""The learning-rate range test (Smith 2015; fastai's `lr_find`), done so that it can be trusted.

Differences from fastai / Lightning / torch-lr-finder, each deliberate:
- each rule is computed on the curve it was designed on (fastai's on its causal EMA, lrlab's on a
  zero-lag EMA that can also be shown), and the default rule is the measured best;
- NaN/inf losses stop the test and are excluded from every rule; the divergence test also
  works for losses <= 0;
- model, optimizer, GradScaler, loader and every RNG are restored afterwards (one CPU snapshot),
  so training after the test is bit-identical to training without it;
- with a GradScaler, overflowed steps do not advance the ramp; with gradient accumulation the
  ramp advances once per optimizer step;
- parameter groups are ramped together keeping their LR ratios, or swept one at a time;
- `repeats` re-runs the test with other data orders and reports each rule's median and spread;
- a `curve_store` lets runs that start from the identical state share one curve (sweeps).
The loop is written here rather than taken from a library because none of them does the above.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from lrlab.core.engine import Engine
from lrlab.core.loss_buffer import LossBuffer
from lrlab.core.reproducibility import loader_generator
from lrlab.finder.config import MODES, FinderConfig
from lrlab.finder.curve_cache import CurveStore, SharedCurves, curve_key
from lrlab.finder.flags import edge_flag
from lrlab.finder.result import LRFinderResult, summarize_repeats
from lrlab.finder.rules import RULES, rule_curves, suggest_on_curves
from lrlab.finder.smoothing import ema_smooth, lightning_smooth, torch_lr_finder_smooth, zero_lag_smooth
from lrlab.finder.snapshot import Snapshot


def lr_schedule(start_lr: float, end_lr: float, num_iter: int, mode: str = "exp") -> np.ndarray:
    """The LRs of the ramp: geometric (exp) or evenly spaced (linear) from start_lr to end_lr."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not valid; choose one of {', '.join(MODES)}")
    if not 0 < start_lr < end_lr:
        raise ValueError(f"need 0 < start_lr < end_lr, got {start_lr} and {end_lr}")
    if num_iter < 2:
        raise ValueError(f"num_iter={num_iter} must be at least 2")
    t = np.arange(num_iter) / (num_iter - 1)
    if mode == "exp":
        return start_lr * (end_lr / start_lr) ** t
    return start_lr + (end_lr - start_lr) * t


def diverged(smoothed: float, best: float, div_factor: float) -> bool:
    """fastai's `smoothed > div_factor * best`, written as an excess over |best| so it also works
    when the best loss is zero or negative; any non-finite loss counts as divergence."""
    if not math.isfinite(smoothed):
        return True
    return smoothed - best > (div_factor - 1.0) * max(abs(best), 1e-12)


def _endless(loader: Iterable) -> Iterator[Any]:
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the training loader yields no batches")


def _group_keys(optimizer: torch.optim.Optimizer) -> list[str]:
    """The layer-group name of each torch param group (lrlab tags them), else its index."""
    return [str(g.get("group_name", i)) for i, g in enumerate(optimizer.param_groups)]


@dataclass
class _Curve:
    lrs: list[float]
    losses: list[float]
    val_losses: list[float] | None
    stop_reason: str
    seconds: float


class _DivergenceWatch:
    """fastai's running debiased EMA of the loss (`beta`) and its best value: stops the test once
    the EMA exceeds `div_factor` x the best, or a loss is NaN/inf."""

    def __init__(self, config: FinderConfig):
        self.beta, self.div_factor, self.enabled = config.beta, config.div_factor, config.stop_div
        self.avg, self.best, self.count = 0.0, math.inf, 0

    def extend(self, values: Sequence[float], losses: list[float]) -> str:
        """Append `values` to `losses` up to and including the first diverging one; returns the
        stop reason, or "completed" while the test may go on."""
        for value in values:
            losses.append(value)
            self.count += 1
            if math.isfinite(value):
                self.avg = self.beta * self.avg + (1 - self.beta) * value
                smooth = self.avg / (1 - self.beta**self.count)
            else:
                smooth = value
            self.best = min(self.best, smooth) if math.isfinite(smooth) else self.best
            if self.enabled and diverged(smooth, self.best, self.div_factor):
                return (
                    "non-finite loss"
                    if not math.isfinite(value)
                    else f"diverged (> {self.div_factor:g}x best)"
                )
        return "completed"


def _set_ramp_lr(
    optimizer: torch.optim.Optimizer,
    lr: float,
    sweep: Sequence[bool],
    ratios: Sequence[float],
    fixed: Sequence[float],
) -> None:
    for group, swept, ratio, keep in zip(optimizer.param_groups, sweep, ratios, fixed):
        group["lr"] = lr * ratio if swept else keep


def _run_curve(
    engine: Engine,
    optimizer: torch.optim.Optimizer,
    loader: Any,
    sweep: Sequence[bool],
    ratios: Sequence[float],
    config: FinderConfig,
    held_out: list[Any] | None,
    progress: bool,
    label: str,
) -> _Curve:
    """Ramp the swept groups' LRs over the schedule and record one loss per optimizer step, read
    back every `read_every` steps (every step with a GradScaler, whose skipped overflow steps do
    not advance the ramp, or with a held-out loss)."""
    schedule = lr_schedule(config.start_lr, config.end_lr, config.num_iter, config.mode)
    engine.train_mode()
    batches = _endless(loader)
    fixed = [g["lr"] for g in optimizer.param_groups]
    watch, pending = _DivergenceWatch(config), LossBuffer()
    lrs: list[float] = []
    losses: list[float] = []
    val_losses: list[float] | None = [] if held_out else None
    read_every = 1 if engine.scaler is not None or held_out else config.read_every
    bar = _progress_bar(progress, len(schedule), label)
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    reason, index, attempts = "completed", 0, 0
    while reason == "completed" and index < len(schedule) and attempts < 3 * len(schedule) + 100:
        attempts += 1
        lr = float(schedule[index])
        _set_ramp_lr(optimizer, lr, sweep, ratios, fixed)
        loss, stepped = engine.step(batches, optimizer, detect_overflow=True)
        if not stepped:
            continue
        engine.global_step += 1
        pending.add(loss)
        lrs.append(lr)
        index += 1
        if val_losses is not None:
            val_losses.append(engine.evaluate(held_out)["valid_loss"])
        if bar is not None:
            bar.update(1)
        if len(pending) >= read_every or index == len(schedule):
            reason = watch.extend(pending.read(), losses)
    if bar is not None:
        bar.close()
    if engine.device.type == "cuda":
        torch.cuda.synchronize(engine.device)
    n = len(losses)
    vals = val_losses[:n] if val_losses is not None else None
    return _Curve(lrs[:n], losses, vals, reason, time.perf_counter() - start)


def _progress_bar(enabled: bool, total: int, label: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=label, unit="step", leave=False)


def _result_from(curve: _Curve, config: FinderConfig, group: str) -> LRFinderResult:
    """Smooth a recorded curve both ways and apply every registered rule on its own curve."""
    lrs, losses = np.asarray(curve.lrs, dtype=np.float64), np.asarray(curve.losses, dtype=np.float64)
    curves = smoothed_curves(losses, curve.stop_reason != "completed", config)
    if len(losses):
        suggestions = suggest_on_curves(lrs, curves, config.rule_curve)
    else:
        suggestions = {r: math.nan for r in RULES}
    vals = np.asarray(curve.val_losses) if curve.val_losses is not None else None
    result = LRFinderResult(
        lrs,
        losses,
        curves[config.smoothing],
        suggestions,
        config.rule,
        group,
        config.smoothing,
        vals,
        curve.seconds,
        curve.stop_reason,
    )
    result.rule_curves, result.curves = rule_curves(config.rule_curve), curves
    result.flags = (
        {r: edge_flag(lrs, result.smoothed, lr) for r, lr in suggestions.items()} if len(losses) else {}
    )
    return result


def smoothed_curves(losses: np.ndarray, diverged_last: bool, config: FinderConfig) -> dict[str, np.ndarray]:
    """The raw losses smoothed by fastai's causal EMA, the zero-lag EMA and the smoothers of
    Lightning's tuner and torch-lr-finder (their rules read their own). The two-sided smoother
    leaves out a last point that tripped the divergence test (it would spread backwards)."""
    ema = ema_smooth(losses, config.beta)
    zero = np.full_like(losses, np.nan)
    n = len(losses) - (1 if diverged_last else 0)
    zero[:n] = zero_lag_smooth(losses[:n], config.zero_lag_beta)
    return {
        "ema": ema,
        "zero_lag": zero,
        "lightning": lightning_smooth(losses),
        "torch_lr_finder": torch_lr_finder_smooth(losses),
    }


def find_lr(
    model: nn.Module,
    train_loader: Any,
    optimizer: torch.optim.Optimizer | Callable[..., torch.optim.Optimizer],
    *,
    config: FinderConfig | None = None,
    val_loader: Any = None,
    engine: Engine | None = None,
    seed: int = 0,
    shared: SharedCurves | None = None,
    **overrides: Any,
) -> LRFinderResult | dict[str, LRFinderResult]:
    """Run the LR range test and restore every piece of state it touched.

    `config`: the test's settings (`FinderConfig`); keyword `overrides` replace single fields,
    e.g. `find_lr(model, loader, opt, num_iter=50)`. `optimizer`: built, or a factory called with
    `model.parameters()`. Steps run on `engine` (device, precision, loss, accumulation, progress;
    default: fp32 on the model's device); `seed` orders repeats' data; with `shared`, a ramp from a
    state seen before (same digest and context) reuses its stored curve. Returns one
    LRFinderResult, or with `per_group=True` one per layer group (keyed by name)."""
    config = _resolve_config(config, overrides)
    if engine is None:
        engine = Engine(model, next(model.parameters()).device)
    if not isinstance(optimizer, torch.optim.Optimizer):
        optimizer = optimizer(model.parameters())
    sweeps = _sweeps(optimizer, config)
    held_out = None
    if val_loader is not None and config.val_batches > 0:
        held_out = [b for _, b in zip(range(config.val_batches), val_loader)]
    snapshot = Snapshot(model, optimizer, engine, train_loader)
    curve_store, context = (shared.store, shared.context) if shared is not None else (None, "")
    start = snapshot.digest() if curve_store is not None else ""
    out: dict[str, LRFinderResult] = {}
    try:
        for name, sweep, group_ratios in sweeps:
            runs = []
            for r in range(config.repeats):
                snapshot.restore(model, optimizer, engine, train_loader)
                if config.repeats > 1:
                    _reseed(train_loader, seed + r)
                label = f"lr_find {name}" + (f" {r + 1}/{config.repeats}" if config.repeats > 1 else "")
                key = curve_key(start, config, context, name, group_ratios, r) if curve_store else ""
                run = (
                    engine,
                    optimizer,
                    train_loader,
                    sweep,
                    group_ratios,
                    config,
                    held_out,
                    engine.progress,
                )
                curve, cached = _recorded_curve(curve_store, key, (*run, label))
                runs.append(_result_from(curve, config, name))
                runs[-1].cached = cached
            out[name] = runs[0] if config.repeats == 1 else summarize_repeats(runs)
    finally:
        snapshot.restore(model, optimizer, engine, train_loader)
    return out if config.per_group else out["all"]


def _recorded_curve(store: CurveStore | None, key: str, run: tuple) -> tuple[_Curve, bool]:
    """The stored curve for `key` (True), or a freshly run one, then stored (False)."""
    stored = store.get(key) if store is not None else None
    if stored is not None:
        return _Curve(**stored), True
    curve = _run_curve(*run)
    if store is not None:
        store.put(key, asdict(curve))
    return curve, False


def _sweeps(
    optimizer: torch.optim.Optimizer, config: FinderConfig
) -> list[tuple[str, list[bool], list[float]]]:
    """(name, which torch param groups ramp, LR ratios) per test: one test ramping every group
    (keeping their LR ratios, or all equal), or with `per_group` one test per layer group."""
    keys = _group_keys(optimizer)
    if config.per_group:
        return [(name, [k == name for k in keys], [1.0] * len(keys)) for name in dict.fromkeys(keys)]
    current = [g["lr"] for g in optimizer.param_groups]
    reference = current[-1] if current[-1] > 0 else 1.0
    ratios = [lr / reference if reference else 1.0 for lr in current]
    if config.group_lrs == "equal":
        ratios = [1.0] * len(current)
    return [("all", [True] * len(keys), ratios)]


def _resolve_config(config: FinderConfig | None, overrides: dict[str, Any]) -> FinderConfig:
    """`config` (or the defaults) with keyword overrides applied, checked."""
    valid = {f.name for f in fields(FinderConfig)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise TypeError(
            f"find_lr got unknown settings {unknown}; FinderConfig fields are: {', '.join(sorted(valid))}"
        )
    return replace(config or FinderConfig(), **overrides).check()


def _reseed(loader: Any, seed: int) -> None:
    """Another data order for a repeated test: torch's global RNG and the loader's generator."""
    torch.manual_seed(seed)
    gen = loader_generator(loader)
    if gen is not None:
        gen.manual_seed(seed)
