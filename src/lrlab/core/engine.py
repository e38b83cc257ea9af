"""The train/eval loop: mixed precision, channels_last, optional torch.compile, gradient
accumulation and clipping, losses read back to the host only every `log_every` steps.

It knows nothing about Hydra or MLflow: it reports through `Callback` objects.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import torch
from torch import nn

from lrlab.core.compiling import compile_mode, compile_model, pad_rows
from lrlab.core.device import resolve_precision
from lrlab.core.ema import WeightAverage
from lrlab.core.loss_buffer import LossBuffer
from lrlab.core.lr_free import refresh_norm_statistics, set_optimizer_mode
from lrlab.core.mixing import BatchTransform
from lrlab.core.optim import gradient_norm, momentum_of
from lrlab.core.settings import TTA_FLIPS, TTA_MODES, StepOptions, precision_choice
from lrlab.core.types import Callback, EpochResult, StepRecord
from lrlab.errors import TrainingDiverged, check_choice


class Predictions(NamedTuple):
    """What `Engine.predict` returns: labels, targets (CPU int64), mean loss, optional probabilities."""

    predictions: torch.Tensor
    targets: torch.Tensor
    loss: float
    probabilities: torch.Tensor | None = None


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "16": torch.float16}


class Engine:
    """Trains and evaluates one model on one device; stages call `fit` once each. `options` (or
    keyword overrides of single fields: `Engine(model, grad_accum=4)`) say how steps run;
    `batch_transform` rewrites each training batch and its targets (Mixup, CutMix); with
    `average` (an EMA), evaluation and everything after an epoch see the averaged weights."""

    def __init__(
        self,
        model: nn.Module,
        device: torch.device | str = "cpu",
        precision: str = "32",
        loss_fn: nn.Module | None = None,
        callbacks: Sequence[Callback] = (),
        options: StepOptions | None = None,
        batch_transform: BatchTransform | None = None,
        average: WeightAverage | None = None,
        **overrides: Any,
    ):
        options = replace(options or StepOptions(), **overrides)
        self.device = torch.device(device)
        self.precision = resolve_precision(precision_choice(precision), self.device)
        self.model = model
        self.compile_mode = compile_mode(options.compile)
        self.forward_model = compile_model(model, self.compile_mode, self.device)
        self.loss_fn = (loss_fn or nn.CrossEntropyLoss()).to(self.device)  # buffers (soft targets) too
        self.batch_transform = batch_transform  # training batches only, e.g. Mixup (`lrlab.core.mixing`)
        self.average = average  # EMA of the weights, swapped in after each epoch's training
        self.grad_accum, self.grad_clip = int(options.grad_accum), options.grad_clip
        self.channels_last, self.log_every = options.channels_last, int(options.log_every)
        self.progress = options.progress
        self.callbacks = list(callbacks)
        self.tta = check_choice(options.tta, TTA_MODES, "tta")
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "16" else None
        self.global_step = 0
        self.global_epoch = 0
        self.images_seen = 0
        self.history: list[EpochResult] = []  # every epoch trained by this engine (restored on resume)
        self.fit_context: tuple[Any, Any, Any] | None = None  # the running fit's optimizer, scheduler, loader
        self.eval_modules: list[nn.Module] = []  # kept in eval mode while training (see hold_in_eval)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = (
                options.cudnn_benchmark and not torch.are_deterministic_algorithms_enabled()
            )

    def hold_in_eval(self, modules: Sequence[nn.Module]) -> None:
        """Keep `modules` in eval mode whenever the model trains (the norm layers of frozen layer
        groups when their statistics should not adapt); an empty list ends that."""
        self.eval_modules = list(modules)

    def train_mode(self) -> None:
        """model.train(), except `eval_modules` (norm layers of frozen groups) stay in eval mode."""
        self.model.train()
        for module in self.eval_modules:
            module.eval()

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of the configured precision (a no-op for fp32)."""
        dtype = AUTOCAST_DTYPES.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype) if dtype else contextlib.nullcontext()

    def _to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=True)

    def steps_per_epoch(self, loader: Any) -> int:
        """Optimizer steps in one pass over `loader` (a partial accumulation still steps)."""
        return math.ceil(len(loader) / self.grad_accum)

    def backward(self, x: torch.Tensor, y: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """Forward and backward of one micro-batch (through `batch_transform`, if any); returns the
        detached, unscaled loss."""
        x, y = self._to_device(x, y)
        if self.batch_transform is not None:
            x, y = self.batch_transform(x, y)
        with self.autocast():
            loss = self.loss_fn(self.forward_model(x), y)
        scaled = loss * scale
        (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        return loss.detach()

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Unscale, clip, step and clear gradients (skipped by the GradScaler on overflow), keeping
        the gradients' norm before clipping in `last_grad_norm` (a device tensor: no host sync)."""
        if self.scaler:
            self.scaler.unscale_(optimizer)
        params, clip = self.model.parameters(), self.grad_clip
        clipped = torch.nn.utils.clip_grad_norm_(params, clip) if clip else None
        self.last_grad_norm = clipped if clipped is not None else gradient_norm(params, self.device)
        if self.scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def step(
        self,
        batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
        optimizer: torch.optim.Optimizer,
        micro_batches: int | None = None,
        detect_overflow: bool = False,
    ) -> tuple[torch.Tensor, bool]:
        """One optimizer step, the primitive both training and the range test use: forward and
        backward over `micro_batches` batches drawn from `batches` (default `grad_accum`), each loss
        scaled by 1/count, then unscale, clip, step and clear gradients.

        Returns the step's mean loss as a device tensor (no host sync) and whether the optimizer
        stepped; with `detect_overflow` a GradScaler that skipped an overflowed step gives False
        (this reads the scale back to the host, so training leaves it off).
        """
        count = micro_batches or self.grad_accum
        losses = []
        for _ in range(count):
            x, y = next(batches)
            losses.append(self.backward(x, y, scale=1.0 / count))
            self.images_seen += len(y)
        scale_before = self.scaler.get_scale() if self.scaler is not None and detect_overflow else None
        self.optimizer_step(optimizer)
        stepped = scale_before is None or self.scaler.get_scale() >= scale_before
        return torch.stack(losses).mean(), stepped

    def _step_info(self, optimizer: torch.optim.Optimizer) -> tuple[dict[str, float], float | None]:
        lrs = {g.get("group_name", str(i)): float(g["lr"]) for i, g in enumerate(optimizer.param_groups)}
        return lrs, momentum_of(optimizer.param_groups[-1])

    def _flush(
        self, pending: LossBuffer, infos: list[tuple[int, dict[str, float], float | None]], norms: LossBuffer
    ) -> list[float]:
        """Read the buffered step losses and gradient norms back, hand them on, stop on NaN/inf."""
        values, grad_norms = pending.read(), norms.read()
        if not values:
            return []
        records = [
            StepRecord(step, loss, lrs, mom, norm)
            for (step, lrs, mom), loss, norm in zip(infos, values, grad_norms, strict=True)
        ]
        infos.clear()
        for cb in self.callbacks:
            cb.on_steps(self, records)
        bad = next((r for r in records if not math.isfinite(r.loss)), None)
        if bad is not None:
            raise TrainingDiverged(
                f"The training loss became {bad.loss} at step {bad.step} (lr {max(bad.lrs.values()):.3g}); "
                "lower the learning rate, or use precision=32 / train.grad_clip to rule out overflow."
            )
        return values

    def train_epoch(self, loader: Iterable, optimizer: torch.optim.Optimizer, scheduler: Any = None) -> float:
        """One pass over `loader`; returns the mean training loss over optimizer steps (a last,
        partial accumulation still steps, with its losses scaled by its own size)."""
        self.images_seen = 0
        if self.average is not None:
            self.average.swap_out(self.model)
        self.train_mode()
        set_optimizer_mode(optimizer, train=True)  # Schedule-Free: step on its training weights
        optimizer.zero_grad(set_to_none=True)
        pending, norms = LossBuffer(), LossBuffer()
        infos: list[tuple[int, dict[str, float], float | None]] = []
        losses: list[float] = []
        n_batches = len(loader)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(loader, total=n_batches, leave=False, desc=f"epoch {self.global_epoch}", unit="batch")
        batches = iter(bar if bar is not None else loader)
        for first in range(0, n_batches, self.grad_accum):
            info = self._step_info(optimizer)
            loss, _ = self.step(batches, optimizer, min(self.grad_accum, n_batches - first))
            if self.average is not None:
                self.average.update(self.model, self.global_step)
            if scheduler is not None:
                scheduler.step()
            pending.add(loss)
            norms.add(self.last_grad_norm)
            infos.append((self.global_step, *info))
            self.global_step += 1
            if len(pending) >= self.log_every:
                losses += self._flush(pending, infos, norms)
                if bar is not None:
                    bar.set_postfix(loss=f"{losses[-1]:.4f}")
        losses += self._flush(pending, infos, norms)
        if bar is not None:
            bar.close()
        return sum(losses) / max(1, len(losses))

    @torch.no_grad()
    def _eval_pass(
        self, loader: Iterable, probabilities: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """The model in eval mode over `loader`: summed cross-entropy, and predicted labels (or
        class probabilities) and targets per batch, all left on the device (no host sync)."""
        was_training = self.model.training
        self.model.eval()
        total_loss = torch.zeros((), device=self.device, dtype=torch.float64)
        predictions, targets = [], []
        if self.progress:
            from tqdm.auto import tqdm

            total = len(loader) if hasattr(loader, "__len__") else None
            loader = tqdm(loader, total=total, leave=False, desc="evaluate", unit="batch")
        try:
            rows = 0  # with compile, a partial last batch is padded to the first's rows (one shape)
            for x, y in loader:
                x, y = self._to_device(x, y)
                rows = max(rows, len(x))
                scores = self._eval_scores(pad_rows(x, rows) if self.compile_mode else x)[: len(x)]
                total_loss += self._eval_loss(scores, y).double()
                predictions.append(scores.softmax(1) if probabilities else scores.argmax(1))
                targets.append(y)
        finally:
            if was_training:
                self.train_mode()
        return total_loss, predictions, targets

    def _eval_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, or with a TTA (`hflip`, `flips`) the log of its views' mean probabilities."""
        with self.autocast():
            if self.tta == "none":
                return self.forward_model(x).float()
            views = [self.forward_model(x.flip(dims) if dims else x).float() for dims in TTA_FLIPS[self.tta]]
        stacked = torch.stack([view.log_softmax(1) for view in views])
        return torch.logsumexp(stacked, 0) - math.log(len(views))

    def _eval_loss(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.tta == "none":
            return nn.functional.cross_entropy(scores, y, reduction="sum")
        return nn.functional.nll_loss(scores, y, reduction="sum")

    def evaluate(self, loader: Iterable) -> dict[str, float]:
        """Mean loss, accuracy and error rate over `loader`, with one host sync at the end."""
        total_loss, predictions, targets = self._eval_pass(loader)
        count = sum(len(y) for y in targets)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        for p, y in zip(predictions, targets):
            correct += (p == y).sum()
        loss, acc = (total_loss / max(1, count)).item(), correct.item() / max(1, count)
        return {"valid_loss": loss, "accuracy": acc, "error_rate": 1.0 - acc}

    def predict(self, loader: Iterable, probabilities: bool = False) -> Predictions:
        """Predicted labels (argmax) and targets over `loader` as CPU int64 tensors, the mean
        cross-entropy and, with `probabilities`, the class probabilities, read back once at the end:
        `predictions, targets, loss, probs = engine.predict(test_loader, probabilities=True)`."""
        total_loss, outputs, targets = self._eval_pass(loader, probabilities)
        if not targets:
            empty = torch.zeros(0, dtype=torch.int64)
            return Predictions(empty, empty.clone(), float("nan"))
        probs = torch.cat(outputs).float().cpu() if probabilities else None
        predicted = probs.argmax(1) if probs is not None else torch.cat(outputs).cpu()
        target = torch.cat(targets).cpu()
        return Predictions(predicted, target, total_loss.item() / len(target), probs)

    def fit(
        self,
        train_loader: Any,
        valid_loader: Any,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        epochs: int,
        stage: str = "train",
        start_epoch: int = 0,
        replay: Sequence[EpochResult] = (),
    ) -> list[EpochResult]:
        """Train epochs `start_epoch`..`epochs - 1` (a resumed stage starts later), evaluating after
        each; callbacks see every step and epoch (first `replay`'s: epochs trained elsewhere, as an
        `lr=auto` race's winner), and one that sets `engine.stop_reason` ends the stage."""
        steps = self.steps_per_epoch(train_loader)
        self.stop_reason: str | None = None
        self.fit_context = (optimizer, scheduler, train_loader)
        for cb in self.callbacks:
            cb.on_fit_start(self, stage, epochs, steps)
        for cb, done in ((cb, result) for result in replay for cb in self.callbacks):
            cb.on_epoch_end(self, done)
        results: list[EpochResult] = []
        for stage_epoch in range(start_epoch, epochs):
            if self.stop_reason:  # a callback's, after an epoch or before any (a stopped stage resumed)
                break
            start = time.perf_counter()
            train_loss = self.train_epoch(train_loader, optimizer, scheduler)
            train_seconds = time.perf_counter() - start
            if set_optimizer_mode(optimizer, train=False):  # evaluate and save the averaged weights
                refresh_norm_statistics(self, train_loader)
            if self.average is not None:
                self.average.swap_in(self.model)
            metrics = self.evaluate(valid_loader)
            seconds = time.perf_counter() - start
            result = EpochResult(
                stage,
                self.global_epoch,
                stage_epoch,
                train_loss,
                seconds=seconds,
                train_images_per_s=self.images_seen / max(train_seconds, 1e-9),
                **metrics,
            )
            results.append(result)
            self.history.append(result)
            for cb in self.callbacks:
                cb.on_epoch_end(self, result)
            self.global_epoch += 1
        for cb in self.callbacks:
            cb.on_fit_end(self, stage, results)
        return results
