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

import csv
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from lrlab.engine import Engine
from lrlab.reproducibility import restore_rng_state, rng_state
from lrlab.suggest import RULES, ema_smooth, suggest, zero_lag_smooth

SMOOTHERS = {"ema": ema_smooth, "zero_lag": zero_lag_smooth}
MODES = ("exp", "linear")


@dataclass
class LRFinderResult:
    """One range-test curve (or the median of repeated ones) with its suggestions.

    `lrs` is the learning rate applied to the reference group (the head, i.e. the last
    parameter group, unless one group is swept on its own) at each recorded optimizer step.
    """

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    suggestions: dict[str, float]
    method: str = "valley"
    group: str = "all"
    smoothing: str = "zero_lag"
    val_losses: np.ndarray | None = None
    seconds: float = 0.0
    stop_reason: str = "completed"
    repeats: list["LRFinderResult"] = field(default_factory=list)
    spread: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def suggestion(self) -> float:
        """The suggestion of the configured rule."""
        return self.suggestions[self.method]

    def table(self) -> str:
        """A short text table of every rule's suggestion (with spread when repeated)."""
        lines = [f"{'rule':<8} {'lr':>10}" + ("   spread (log10 IQR, min..max)" if self.spread else "")]
        for rule, lr in self.suggestions.items():
            mark = " *" if rule == self.method else ""
            extra = ""
            if rule in self.spread:
                s = self.spread[rule]
                extra = f"   {s['log10_iqr']:.2f} dec, {s['min']:.2e}..{s['max']:.2e}"
            lines.append(f"{rule:<8} {lr:>10.2e}{extra}{mark}")
        return "\n".join(lines)

    def to_csv(self, path: str | Path) -> Path:
        """Write (lr, loss, smoothed_loss[, val_loss]) rows, one per recorded step."""
        path = Path(path)
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            header = ["step", "lr", "loss", "smoothed_loss"] + (["val_loss"] if self.val_losses is not None else [])
            writer.writerow(header)
            for i, (lr, loss, smooth) in enumerate(zip(self.lrs, self.losses, self.smoothed)):
                row = [i, repr(float(lr)), repr(float(loss)), repr(float(smooth))]
                if self.val_losses is not None:
                    row.append(repr(float(self.val_losses[i])))
                writer.writerow(row)
        return path

    def save(self, directory: str | Path, stem: str = "lr_find", title: str | None = None) -> tuple[Path, Path]:
        """Write `<stem>.png` and `<stem>.csv` into `directory`; returns both paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        png = directory / f"{stem}.png"
        figure = self.plot(png, title=title)
        import matplotlib.pyplot as plt

        plt.close(figure)
        return png, self.to_csv(directory / f"{stem}.csv")

    def plot(self, path: str | Path | None = None, ax: Any = None, title: str | None = None) -> Any:
        """Loss against LR on a log axis: raw and smoothed curves, every suggestion, the band of
        repeated curves. Saves a PNG when `path` is given; returns the matplotlib Figure."""
        import matplotlib

        if ax is None:
            matplotlib.use("Agg", force=False) if path is not None else None
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
        else:
            fig = ax.figure
        finite = np.isfinite(self.smoothed)
        if self.repeats:
            for rep in self.repeats:
                ax.plot(rep.lrs, rep.smoothed, color="tab:blue", alpha=0.25, lw=0.8)
            lo, hi = _band([r.smoothed for r in self.repeats], len(self.lrs))
            ax.fill_between(self.lrs, lo, hi, color="tab:blue", alpha=0.15, label=f"range of {len(self.repeats)} runs")
        else:
            ax.plot(self.lrs, self.losses, color="0.6", lw=0.8, alpha=0.7, label="loss (raw)")
        ax.plot(self.lrs, self.smoothed, color="tab:blue", lw=2, label=f"loss ({self.smoothing} smoothed)")
        if self.val_losses is not None:
            ax.plot(self.lrs, self.val_losses, color="tab:green", lw=1.2, label="held-out loss")
        markers = {"valley": "o", "steep": "^", "minimum": "v", "slide": "s"}
        colors = {"valley": "tab:red", "steep": "tab:orange", "minimum": "tab:purple", "slide": "tab:brown"}
        for rule, lr in self.suggestions.items():
            if not (np.isfinite(lr) and finite.any()):
                continue
            y = float(np.interp(np.log(lr), np.log(self.lrs[finite]), self.smoothed[finite]))
            band = ""
            if rule in self.spread:
                band = f" (IQR {self.spread[rule]['log10_iqr']:.2f} dec)"
            ax.plot([lr], [y], marker=markers.get(rule, "o"), color=colors.get(rule, "k"), ms=9, ls="none",
                    label=f"{rule}: {lr:.2e}{band}")
        ax.set_xscale("log")
        ax.set_xlabel(f"learning rate ({'head group' if self.group == 'all' else 'group ' + self.group})")
        ax.set_ylabel("training loss")
        shown = np.concatenate([self.smoothed[:-5], self.losses[:-5]]) if len(self.lrs) > 10 else self.smoothed
        shown = shown[np.isfinite(shown)]
        if shown.size:
            start = self.smoothed[np.isfinite(self.smoothed)][: max(1, len(self.lrs) // 4)]
            top = min(shown.max(), start.max() + 0.5 * abs(start.max())) if start.size else shown.max()
            span = max(top - shown.min(), 1e-12)
            ax.set_ylim(shown.min() - 0.05 * span, top + 0.1 * span)
        ax.set_title(title or f"LR range test ({self.stop_reason}, {len(self.lrs)} steps, {self.seconds:.1f}s)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path)
        return fig


def _band(curves: Sequence[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    stack = np.full((len(curves), n), np.nan)
    for i, c in enumerate(curves):
        stack[i, : min(n, len(c))] = c[:n]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # columns where every curve has stopped
        return np.nanmin(stack, axis=0), np.nanmax(stack, axis=0)


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

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer, engine: Engine, loader: Any) -> None:
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
        micro = [engine.backward(*next(batches), scale=1.0 / engine.grad_accum) for _ in range(engine.grad_accum)]
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
                    reason = "non-finite loss" if not math.isfinite(value) else f"diverged (> {div_factor:g}x best)"
                    break
            if reason != "completed":
                break
    if bar is not None:
        bar.close()
    if engine.device.type == "cuda":
        torch.cuda.synchronize(engine.device)
    n = len(losses)
    return _Curve(lrs[:n], losses, val_losses[:n] if val_losses is not None else None, reason, time.perf_counter() - start)


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
    return LRFinderResult(lrs, losses, smoothed, dict(suggestions), method, group, smoothing, vals, curve.seconds, curve.stop_reason)


def summarize_repeats(results: Sequence[LRFinderResult]) -> LRFinderResult:
    """Per rule: the median suggestion over repeats and its spread (log10 IQR, min, max); the
    curve shown is the point-wise median of the smoothed curves."""
    first = results[0]
    n = max(len(r.lrs) for r in results)
    longest = max(results, key=lambda r: len(r.lrs))
    stack = np.full((len(results), n), np.nan)
    raw = np.full((len(results), n), np.nan)
    for i, r in enumerate(results):
        stack[i, : len(r.smoothed)] = r.smoothed
        raw[i, : len(r.losses)] = r.losses
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        median_curve, median_raw = np.nanmedian(stack, axis=0), np.nanmedian(raw, axis=0)
    suggestions, spread = {}, {}
    for rule in first.suggestions:
        values = np.array([r.suggestions[rule] for r in results], dtype=np.float64)
        values = values[np.isfinite(values) & (values > 0)]
        if not len(values):
            suggestions[rule] = math.nan
            continue
        logs = np.log10(values)
        q25, q50, q75 = np.percentile(logs, [25, 50, 75])
        suggestions[rule] = float(10**q50)
        spread[rule] = {"median": float(10**q50), "q25": float(10**q25), "q75": float(10**q75),
                        "log10_iqr": float(q75 - q25), "min": float(values.min()), "max": float(values.max()),
                        "n": float(len(values))}
    return LRFinderResult(
        longest.lrs, median_raw, median_curve, suggestions, first.method, first.group, first.smoothing,
        None, sum(r.seconds for r in results), "; ".join(sorted({r.stop_reason for r in results})),
        list(results), spread,
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
                curve = _run_curve(engine, optimizer, train_loader, schedule, sweep, group_ratios, stop_div,
                                   div_factor, beta, read_every, held_out, progress, label)
                runs.append(_result_from(curve, smoothing, beta if smoothing == "ema" else zero_lag_beta, suggest, name))
            out[name] = runs[0] if repeats == 1 else summarize_repeats(runs)
    finally:
        snapshot.restore(model, optimizer, engine, train_loader)
    return out if per_group else out["all"]
