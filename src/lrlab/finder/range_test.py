"""The learning-rate range test (Smith 2015; fastai's `lr_find`), done so that it can be trusted.

Differences from fastai / Lightning / torch-lr-finder, each deliberate:
- the curve is smoothed without phase lag by default (`zero_lag`), so `steep` is not pushed up;
- NaN/inf losses stop the test and are excluded from every rule; the divergence test also
  works for losses <= 0;
- model, optimizer, GradScaler, loader and every RNG are restored afterwards (one CPU snapshot),
  so training after the test is bit-identical to training without it;
- with a GradScaler, overflowed steps do not advance the ramp; with gradient accumulation the
  ramp advances once per optimizer step;
- parameter groups are ramped together keeping their LR ratios, or swept one at a time;
- `repeats` re-runs the test with other data orders and reports each rule's median and spread.
The loop is written here rather than taken from a library because none of them does the above.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from lrlab.core.engine import Engine
from lrlab.core.reproducibility import restore_rng_state, rng_state
from lrlab.finder.result import LRFinderResult, summarize_repeats
from lrlab.finder.rules import RULES, suggest
from lrlab.finder.smoothing import ema_smooth, zero_lag_smooth

SMOOTHERS = {"ema": ema_smooth, "zero_lag": zero_lag_smooth}
MODES = ("exp", "linear")


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


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _loader_generator(loader: Any) -> torch.Generator | None:
    gen = getattr(loader, "generator", None)
    return gen if isinstance(gen, torch.Generator) else None


class _Snapshot:
    """Everything the range test changes, held once on the CPU and put back afterwards."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, engine: Engine, loader: Any):
        self.model_state = _to_cpu(model.state_dict())
        self.optimizer_state = _to_cpu(optimizer.state_dict())
        self.scaler_state = _to_cpu(engine.scaler.state_dict()) if engine.scaler else None
        self.rng = rng_state()
        gen = _loader_generator(loader)
        self.loader_state = gen.get_state() if gen is not None else None
        self.training = model.training
        self.global_step = engine.global_step

    def restore(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, engine: Engine, loader: Any
    ) -> None:
        model.load_state_dict(self.model_state)
        optimizer.load_state_dict(self.optimizer_state)
        optimizer.zero_grad(set_to_none=True)
        if engine.scaler and self.scaler_state is not None:
            engine.scaler.load_state_dict(self.scaler_state)
        restore_rng_state(self.rng)
        gen = _loader_generator(loader)
        if gen is not None and self.loader_state is not None:
            gen.set_state(self.loader_state)
        model.train(self.training)
        if self.training:
            engine.train_mode()
        engine.global_step = self.global_step


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


def _run_curve(
    engine: Engine,
    optimizer: torch.optim.Optimizer,
    loader: Any,
    schedule: np.ndarray,
    sweep: Sequence[bool],
    ratios: Sequence[float],
    stop_div: bool,
    div_factor: float,
    beta: float,
    read_every: int,
    val_batches: list[Any] | None,
    progress: bool,
    label: str,
) -> _Curve:
    """Ramp the swept groups' LRs over `schedule` and record one loss per optimizer step."""
    engine.train_mode()
    batches = _endless(loader)
    fixed = [g["lr"] for g in optimizer.param_groups]
    lrs: list[float] = []
    pending: list[torch.Tensor] = []
    losses: list[float] = []
    val_losses: list[float] | None = [] if val_batches else None
    avg, best, count, reason = 0.0, math.inf, 0, "completed"
    sync_each_step = engine.scaler is not None or val_batches is not None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(schedule), desc=label, unit="step", leave=False)
    start = time.perf_counter()
    index, attempts = 0, 0
    optimizer.zero_grad(set_to_none=True)
    while index < len(schedule) and attempts < 3 * len(schedule) + 100:
        attempts += 1
        lr = float(schedule[index])
        for group, swept, ratio, keep in zip(optimizer.param_groups, sweep, ratios, fixed):
            group["lr"] = lr * ratio if swept else keep
        micro = [
            engine.backward(*next(batches), scale=1.0 / engine.grad_accum) for _ in range(engine.grad_accum)
        ]
        scale_before = engine.scaler.get_scale() if engine.scaler else None
        engine.optimizer_step(optimizer)
        if engine.scaler is not None and engine.scaler.get_scale() < scale_before:
            continue  # overflow: the step was skipped, the ramp does not advance
        engine.global_step += 1
        pending.append(torch.stack(micro).mean())
        lrs.append(lr)
        index += 1
        if val_batches is not None and val_losses is not None:
            val_losses.append(_held_out_loss(engine, val_batches))
        if bar is not None:
            bar.update(1)
        if len(pending) >= (1 if sync_each_step else read_every) or index == len(schedule):
            values = torch.stack(pending).float().tolist()
            pending.clear()
            for value in values:
                losses.append(value)
                count += 1
                if math.isfinite(value):
                    avg = beta * avg + (1 - beta) * value
                    smooth = avg / (1 - beta**count)
                else:
                    smooth = value
                best = min(best, smooth) if math.isfinite(smooth) else best
                if stop_div and diverged(smooth, best, div_factor):
                    reason = (
                        "non-finite loss"
                        if not math.isfinite(value)
                        else f"diverged (> {div_factor:g}x best)"
                    )
                    break
            if reason != "completed":
                break
    if bar is not None:
        bar.close()
    if engine.device.type == "cuda":
        torch.cuda.synchronize(engine.device)
    n = len(losses)
    return _Curve(
        lrs[:n],
        losses,
        val_losses[:n] if val_losses is not None else None,
        reason,
        time.perf_counter() - start,
    )


@torch.no_grad()
def _held_out_loss(engine: Engine, batches: list[Any]) -> float:
    engine.model.eval()
    total, count = 0.0, 0
    for x, y in batches:
        x, y = engine._to_device(x, y)
        with engine.autocast():
            out = engine.forward_model(x)
        total += float(nn.functional.cross_entropy(out.float(), y, reduction="sum"))
        count += len(y)
    engine.train_mode()
    return total / max(1, count)


def _result_from(curve: _Curve, smoothing: str, beta: float, method: str, group: str) -> LRFinderResult:
    lrs, losses = np.asarray(curve.lrs, dtype=np.float64), np.asarray(curve.losses, dtype=np.float64)
    smoothed = np.full_like(losses, np.nan)
    # A two-sided smoother must not spread the point that tripped the divergence test backwards.
    n = len(losses) - (1 if curve.stop_reason != "completed" and smoothing == "zero_lag" else 0)
    smoothed[:n] = SMOOTHERS[smoothing](losses[:n], beta)
    suggestions = suggest(lrs, smoothed, "all") if len(losses) else {r: math.nan for r in RULES}
    vals = np.asarray(curve.val_losses) if curve.val_losses is not None else None
    return LRFinderResult(
        lrs,
        losses,
        smoothed,
        dict(suggestions),
        method,
        group,
        smoothing,
        vals,
        curve.seconds,
        curve.stop_reason,
    )


def find_lr(
    model: nn.Module,
    train_loader: Any,
    optimizer: torch.optim.Optimizer | Callable[..., torch.optim.Optimizer],
    loss_fn: nn.Module | None = None,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_iter: int = 100,
    mode: str = "exp",
    smoothing: str = "zero_lag",
    beta: float = 0.98,
    zero_lag_beta: float = 0.8,
    stop_div: bool = True,
    div_factor: float = 4.0,
    suggest: str = "valley",
    repeats: int = 1,
    seed: int = 0,
    per_group: bool = False,
    val_loader: Any = None,
    val_batches: int = 0,
    engine: Engine | None = None,
    device: torch.device | str | None = None,
    precision: str = "32",
    grad_accum: int = 1,
    read_every: int = 10,
    progress: bool = False,
) -> LRFinderResult | dict[str, LRFinderResult]:
    """Run the LR range test and restore every piece of state it touched.

    `optimizer` is a built optimizer or a factory called as `factory(model.parameters())`.
    `beta` is the causal EMA's (fastai's 0.98: the `ema` smoothing and the divergence test);
    `zero_lag_beta` is the per-pass coefficient of the default `zero_lag` smoothing.
    Returns one LRFinderResult, or with `per_group=True` one per layer group (keyed by name).
    Pass an `engine` to reuse its device, precision, GradScaler and accumulation settings.
    """
    if smoothing not in SMOOTHERS:
        raise ValueError(f"smoothing={smoothing!r} is not valid; choose one of {', '.join(SMOOTHERS)}")
    if suggest not in RULES:
        raise ValueError(f"suggest={suggest!r} is not valid; choose one of {', '.join(RULES)}")
    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be at least 1")
    if engine is None:
        dev = torch.device(device) if device is not None else next(model.parameters()).device
        engine = Engine(model, dev, precision, loss_fn=loss_fn, grad_accum=grad_accum)
    if not isinstance(optimizer, torch.optim.Optimizer):
        optimizer = optimizer(model.parameters())
    schedule = lr_schedule(start_lr, end_lr, num_iter, mode)
    keys = _group_keys(optimizer)
    current = [g["lr"] for g in optimizer.param_groups]
    reference = current[-1] if current[-1] > 0 else 1.0
    ratios = [lr / reference if reference else 1.0 for lr in current]
    held_out = None
    if val_loader is not None and val_batches > 0:
        held_out = [b for _, b in zip(range(val_batches), val_loader)]
    sweeps: list[tuple[str, list[bool]]]
    if per_group:
        names = list(dict.fromkeys(keys))
        sweeps = [(name, [k == name for k in keys]) for name in names]
    else:
        sweeps = [("all", [True] * len(keys))]

    snapshot = _Snapshot(model, optimizer, engine, train_loader)
    gen = _loader_generator(train_loader)
    out: dict[str, LRFinderResult] = {}
    try:
        for name, sweep in sweeps:
            group_ratios = ratios if name == "all" else [1.0] * len(keys)
            runs = []
            for r in range(repeats):
                snapshot.restore(model, optimizer, engine, train_loader)
                if repeats > 1:
                    torch.manual_seed(seed + r)
                    if gen is not None:
                        gen.manual_seed(seed + r)
                label = f"lr_find {name}" + (f" {r + 1}/{repeats}" if repeats > 1 else "")
                curve = _run_curve(
                    engine,
                    optimizer,
                    train_loader,
                    schedule,
                    sweep,
                    group_ratios,
                    stop_div,
                    div_factor,
                    beta,
                    read_every,
                    held_out,
                    progress,
                    label,
                )
                runs.append(
                    _result_from(
                        curve, smoothing, beta if smoothing == "ema" else zero_lag_beta, suggest, name
                    )
                )
            out[name] = runs[0] if repeats == 1 else summarize_repeats(runs)
    finally:
        snapshot.restore(model, optimizer, engine, train_loader)
    return out if per_group else out["all"]
