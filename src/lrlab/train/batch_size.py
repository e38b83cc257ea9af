"""The batch-size probe (Lightning's `BatchSizeFinder`, with two answers instead of one): real
training steps at doubling batch sizes, then a binary search below the first that does not fit, each
timed and (on CUDA) measured for peak memory. It reports the largest batch that fits with a memory
margin left (Lightning's answer, which later OOMs when evaluation or fragmentation needs more) and
the smallest batch within `tolerance` of the best throughput: beyond it a larger batch only costs
optimizer steps. Written here rather than reused because Lightning's needs its Trainer."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from lrlab.core.engine import Engine
from lrlab.errors import ConfigError
from lrlab.train.batch_config import BatchFinderConfig

OUT_OF_MEMORY = ("out of memory", "not enough memory", "can't allocate memory")
MAX_TIMED_STEPS = 50
TABLE_HEADER = "batch  fits  images/s  peak memory"


@dataclass(frozen=True)
class BatchProbe:
    """One batch size tried: whether it fits (no out-of-memory error and, on CUDA, peak memory
    within the margin), its training speed and its peak memory (CUDA only)."""

    batch_size: int
    fits: bool
    images_per_s: float | None = None
    peak_memory_bytes: int | None = None
    note: str = ""

    def row(self, total_memory_bytes: int | None = None) -> str:
        """This probe's line under `TABLE_HEADER` (its memory as a share of `total_memory_bytes`)."""
        speed = f"{self.images_per_s:8.0f}" if self.images_per_s else "       -"
        memory = _gib(self.peak_memory_bytes, total_memory_bytes)
        return f"{self.batch_size:<6} {'yes' if self.fits else 'no ':<5}{speed}  {memory}{self.note}"


@dataclass
class BatchSizeResult:
    """Every probe in the order run; `largest` fits, `suggested` is the smallest batch within
    `tolerance` of the fastest fitting one (None when none fits)."""

    probes: list[BatchProbe]
    tolerance: float
    total_memory_bytes: int | None = None
    seconds: float = 0.0

    @property
    def fitting(self) -> list[BatchProbe]:
        """The probes that fit, by batch size."""
        return sorted((p for p in self.probes if p.fits), key=lambda p: p.batch_size)

    @property
    def largest(self) -> int | None:
        return self.fitting[-1].batch_size if self.fitting else None

    @property
    def fastest(self) -> BatchProbe | None:
        return max(self.fitting, key=lambda p: p.images_per_s or 0.0, default=None)

    @property
    def suggested(self) -> int | None:
        fastest = self.fastest
        if fastest is None:
            return None
        bar = (1 - self.tolerance) * (fastest.images_per_s or 0.0)
        return next(p.batch_size for p in self.fitting if (p.images_per_s or 0.0) >= bar)

    def table(self) -> str:
        """The probes by batch size, as the console prints them."""
        probes = sorted(self.probes, key=lambda p: p.batch_size)
        return "\n".join([TABLE_HEADER, *(p.row(self.total_memory_bytes) for p in probes)])


def _gib(used: int | None, total: int | None) -> str:
    if used is None:
        return "-"
    share = f" ({used / total:.0%} of {total / 2**30:.1f})" if total else ""
    return f"{used / 2**30:.2f} GiB{share}"


def sample_pool(loader: Any, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to `count` training images and labels as the loader yields them (augmented, normalized),
    gathered once so every probe steps on the same real data."""
    images, labels, have = [], [], 0
    for x, y in loader:
        images.append(x)
        labels.append(y)
        have += len(y)
        if have >= count:
            break
    if not images:
        raise ConfigError("the batch-size probe needs training images: the train split is empty")
    return torch.cat(images)[:count], torch.cat(labels)[:count]


def _batches(
    images: torch.Tensor, labels: torch.Tensor, size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless batches of `size` rows from the pool, wrapping around (a pool smaller than the batch
    repeats its images)."""
    start = 0
    while True:
        index = torch.arange(start, start + size) % len(labels)
        start = (start + size) % len(labels)
        yield images[index], labels[index]


def device_memory(device: torch.device) -> int | None:
    """A CUDA device's total memory in bytes (None elsewhere: the probe measures no peak there)."""
    return torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None


def is_out_of_memory(error: BaseException) -> bool:
    """A CUDA or CPU allocation failure (torch raises RuntimeError subclasses for both)."""
    out_of_memory = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return isinstance(error, out_of_memory) or any(s in str(error) for s in OUT_OF_MEMORY)


def _probe(
    engine: Engine,
    optimizer: torch.optim.Optimizer,
    pool: tuple,
    size: int,
    config: BatchFinderConfig,
    total: int | None,
) -> BatchProbe:
    """One warm-up, then rounds of `config.steps` timed optimizer steps of `size` images each until
    `config.min_seconds` have passed (one host sync per round)."""
    cuda = engine.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(engine.device)
    batches = _batches(*pool, size)
    try:
        engine.step(batches, optimizer, micro_batches=1)
        if cuda:
            torch.cuda.synchronize(engine.device)
        start, steps, seconds = time.perf_counter(), 0, 0.0
        while steps == 0 or (seconds < config.min_seconds and steps < MAX_TIMED_STEPS):
            for _ in range(config.steps):  # one read-back per round: the device stays queued
                loss, _ = engine.step(batches, optimizer, micro_batches=1)
            float(loss)  # waits for the device
            steps, seconds = steps + config.steps, time.perf_counter() - start
    except RuntimeError as error:
        if not is_out_of_memory(error):
            raise
        optimizer.zero_grad(set_to_none=True)
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        return BatchProbe(size, False, note="  out of memory")
    speed = size * steps / max(seconds, 1e-9)
    peak = torch.cuda.max_memory_allocated(engine.device) if cuda else None
    if peak is not None and total and peak > (1 - config.margin) * total:
        return BatchProbe(size, False, speed, peak, f"  over the {config.margin:.0%} margin")
    return BatchProbe(size, True, speed, peak)


def find_batch_size(
    engine: Engine,
    optimizer: torch.optim.Optimizer,
    pool: tuple[torch.Tensor, torch.Tensor],
    config: BatchFinderConfig,
    limit: int | None = None,
    report: Callable[[BatchProbe, int | None], None] | None = None,
) -> BatchSizeResult:
    """Double the batch from `config.start` until one does not fit or `limit` (default
    `config.max_size`) is passed, then halve the gap to the failed size down to `config.multiple`.
    The model and optimizer are trained by the probes: snapshot and restore them around this call
    when training follows. `report` sees each probe as it ends, with the device's memory."""
    config.check()
    limit = min(limit or config.max_size, config.max_size)
    total = device_memory(engine.device)
    engine.train_mode()
    began, probes = time.perf_counter(), []

    def tried(size: int) -> BatchProbe:
        probe = _probe(engine, optimizer, pool, size, config, total)
        probes.append(probe)
        if report is not None:
            report(probe, total)
        return probe

    size, fitted, failed = config.start, None, None
    while size <= limit:
        if not tried(size).fits:
            failed = size
            break
        fitted, size = size, size * 2
    if fitted is not None and failed is not None:
        low, high = fitted, failed
        while high - low > config.multiple:
            middle = (low + high) // 2 // config.multiple * config.multiple
            if middle <= low:
                break
            low, high = (middle, high) if tried(middle).fits else (low, middle)
    optimizer.zero_grad(set_to_none=True)
    return BatchSizeResult(probes, config.tolerance, total, time.perf_counter() - began)
