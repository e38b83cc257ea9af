"""`task=batch_size`: the batch-size probe (`lrlab.train.batch_size`) on the model, data, precision
and compile mode the config builds, training what its widest stage trains (the most memory). Prints
each probe as it ends and the two answers, saves `batch_size.png` and `batch_size.csv` in the run
directory and records them (answers as params, each probe as metrics at step = batch size)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from omegaconf import OmegaConf

from lrlab.app.job import Job, RunResult
from lrlab.app.lifecycle import TrackedRun, tracked_run
from lrlab.app.run_description import command, headline
from lrlab.core.distributed import world_size
from lrlab.errors import ConfigError
from lrlab.finder.snapshot import Snapshot
from lrlab.train.batch_config import BatchFinderConfig
from lrlab.train.batch_size import TABLE_HEADER, BatchProbe, BatchSizeResult, find_batch_size, sample_pool
from lrlab.train.stages import enter_stage, trainable_count, widest_stage

log = logging.getLogger("lrlab")


def run(job: Job) -> RunResult:
    return tracked_run(job, batch_size)


def batch_size(run: TrackedRun) -> RunResult:
    """Probe, then put the model and optimizer back as built; returns the answers as `final`."""
    setup, cfg = run.setup, run.setup.cfg
    if world_size() > 1:
        raise ConfigError(
            "task=batch_size probes one device: run it without torchrun (data.batch_size is global)"
        )
    config = BatchFinderConfig(**OmegaConf.to_container(cfg.batch_finder, resolve=True))
    widest = widest_stage(setup.stages, len(setup.groups))
    snapshot = Snapshot(setup.model, setup.optimizer, run.engine, setup.train_loader)
    if widest is not None:
        enter_stage(run.engine, setup.groups, widest)
    images = setup.split_sizes.get("train", 0)
    limit = max(config.start, min(config.max_size, images // config.min_steps))
    pool = sample_pool(setup.train_loader, limit)
    where = f"stage {widest.name}'s " if widest is not None else ""
    log.info(
        f"batch-size probe: {where}{trainable_count(setup.model):,} trainable params; rounds of "
        f"{config.steps} timed steps for {config.min_seconds:g} s per size from {config.start} up to {limit} "
        f"(batch_finder.max_size {config.max_size}; {images:,} train images / batch_finder.min_steps "
        f"{config.min_steps})"
    )
    log.info(TABLE_HEADER)
    result = find_batch_size(
        run.engine,
        setup.optimizer,
        pool,
        config,
        limit,
        report=lambda probe, total: log.info(probe.row(total)),
    )
    snapshot.restore(setup.model, setup.optimizer, run.engine, setup.train_loader)
    return _report(run, result, limit, config)


def _answer(result: BatchSizeResult, limit: int, config: BatchFinderConfig) -> list[str]:
    if result.suggested is None:
        return [f"no batch size fits: not even batch_finder.start={config.start}"]
    fastest = result.fastest
    capped = all(p.fits for p in result.probes)
    return [
        f"suggested: data.batch_size={result.suggested} (the smallest within {config.tolerance:.0%} of the "
        f"fastest, {fastest.images_per_s:,.0f} images/s at {fastest.batch_size})",
        f"largest that fits: {result.largest}"
        + (f" (the probe's limit {limit}: none larger was tried)" if capped else "")
        + (
            f", with {config.margin:.0%} of the device's memory left free"
            if result.total_memory_bytes
            else ""
        ),
    ]


def _report(run: TrackedRun, result: BatchSizeResult, limit: int, config: BatchFinderConfig) -> RunResult:
    """Print the answers, write the plot and CSV, record everything on the run."""
    setup, tracker = run.setup, run.tracker
    answer = _answer(result, limit, config)
    if setup.cfg.train.grad_accum > 1:
        answer.append(f"(per micro-batch: train.grad_accum={setup.cfg.train.grad_accum} multiplies it)")
    for line in ["", *answer, f"probed in {result.seconds:.1f}s"]:
        log.info(line)
    directory = run.job.output_dir
    directory.mkdir(parents=True, exist_ok=True)
    files = (_write_csv(result, directory / "batch_size.csv"), _plot(result, directory / "batch_size.png"))
    log.info(f"plot: {files[1]}")
    for path in files:
        tracker.log_artifact(path, "batch_size")
    for probe in result.probes:
        if probe.images_per_s:
            tracker.log_metric("batch_size/images_per_s", probe.images_per_s, step=probe.batch_size)
        if probe.peak_memory_bytes:
            tracker.log_metric(
                "batch_size/peak_memory_gib", probe.peak_memory_bytes / 2**30, step=probe.batch_size
            )
    final = {
        f"batch_size/{k}": float(v)
        for k, v in (("suggested", result.suggested), ("largest", result.largest))
        if v
    }
    tracker.log_params({"batch_size.suggested": result.suggested, "batch_size.largest": result.largest})
    lines = [headline(setup), "", "```", result.table(), "```", "", *answer, "", command(run.job.overrides)]
    tracker.set_description("\n".join(lines))
    tracker.flush()
    return RunResult([], final, extra={"batch_size": result})


def _write_csv(result: BatchSizeResult, path: Path) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["batch_size", "fits", "images_per_s", "peak_memory_bytes", "note"])
        for p in result.probes:
            writer.writerow(
                [p.batch_size, p.fits, p.images_per_s or "", p.peak_memory_bytes or "", p.note.strip()]
            )
    return path


def _plot(result: BatchSizeResult, path: Path) -> Path:
    """Images/s per batch size (fitting sizes filled, the others hollow), the peak memory beside it
    on CUDA, and both answers marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2))
    fig.subplots_adjust(left=0.12, right=0.88, top=0.88, bottom=0.13)
    ax = fig.subplots()
    timed = sorted((p for p in result.probes if p.images_per_s), key=lambda p: p.batch_size)
    ax.plot([p.batch_size for p in timed], [p.images_per_s for p in timed], "-", color="tab:blue", lw=1)
    for fits in (True, False):
        chosen: list[BatchProbe] = [p for p in timed if p.fits is fits]
        if chosen:
            ax.plot(
                [p.batch_size for p in chosen],
                [p.images_per_s for p in chosen],
                "o",
                color="tab:blue",
                mfc="tab:blue" if fits else "white",
                label="fits" if fits else "over the memory margin",
            )
    failed = [p.batch_size for p in result.probes if not p.images_per_s]
    if failed:
        ax.plot(failed, [0.0] * len(failed), "x", color="tab:red", ms=8, clip_on=False, label="out of memory")
    if result.total_memory_bytes and timed:
        memory = ax.twinx()
        memory.plot(
            [p.batch_size for p in timed],
            [(p.peak_memory_bytes or 0) / 2**30 for p in timed],
            "s--",
            color="tab:red",
            ms=4,
        )
        memory.axhline(result.total_memory_bytes / 2**30, color="tab:red", lw=0.8, ls=":")
        memory.set_ylabel("peak memory (GiB)", color="tab:red")
    for value, label, colour, style in (
        (result.largest, "largest", "grey", "--"),
        (result.suggested, "suggested", "tab:green", ":"),
    ):
        if value:
            ax.axvline(value, color=colour, ls=style, lw=1.5, label=f"{label}: {value}")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter("{x:.0f}")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("batch size")
    ax.set_ylabel("training images/s")
    ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("batch-size probe: training speed (and peak memory) per batch size", fontsize=10)
    fig.savefig(path, dpi=100)
    return path
