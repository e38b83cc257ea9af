"""Console output: the fastai-style epoch table (`epoch train_loss valid_loss error_rate time`, plus
training throughput), one compact line per epoch that stays readable in log files; the live
per-batch bars (running loss, speed) are the engine's, shown only on a terminal."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lrlab.core.metrics import class_keys
from lrlab.core.types import Callback, EpochResult
from lrlab.finder.flags import EDGE_FLAGS

log = logging.getLogger("lrlab")

COLUMNS = ("epoch", "train_loss", "valid_loss", "error_rate", "accuracy", "time", "img/s")


def format_time(seconds: float) -> str:
    """mm:ss (hh:mm:ss past an hour), as fastai prints epoch times."""
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def table_header() -> str:
    """The epoch table's column names, aligned with `table_row`."""
    return "  ".join(f"{c:<10}" if c != "epoch" else f"{c:<5}" for c in COLUMNS).rstrip()


def table_row(result: EpochResult) -> str:
    """One epoch's line of the console table (fastai's columns, plus training images/s)."""
    cells = (
        [f"{result.stage_epoch:<5d}"]
        + [f"{v:<10.6f}" for v in (result.train_loss, result.valid_loss, result.error_rate, result.accuracy)]
        + [f"{format_time(result.seconds):<10}", f"{result.train_images_per_s:.0f}"]
    )
    return "  ".join(cells)


def describe_stage(start: Any) -> list[str]:
    """Console lines for a stage's decisions: trainable groups, range test, chosen and per-group LRs."""
    stage = start.stage
    trainable = f"{', '.join(start.trainable_groups)} ({start.trainable_params:,d} params)"
    cleared = "; optimizer state cleared" if start.cleared_optimizer_state else ""
    lines = [f"stage {stage.name}: trainable {trainable}{cleared}"]
    if start.finder is not None:
        f = start.finder
        rules = ", ".join(
            f"{r} {v:.2e}{'*' if r == start.rule else ''}" + (f" [{f.flags[r]}]" if f.flags.get(r) else "")
            for r, v in f.suggestions.items()
        )
        spent = "reused (same starting state as an earlier run)" if f.cached else f"{f.seconds:.1f}s"
        lines.append(f"  range test: {len(f.lrs)} steps, {f.stop_reason}, {spent}: {rules}")
        if start.race is not None:
            race = start.race
            lines.append(
                f"  lr {start.lr:.3g} = lr=auto race winner ({race.epochs_trained} raced epochs, "
                f"{race.seconds:.1f}s) around the {start.rule} suggestion {race.suggestion:.3g}: "
                + ", ".join(f"{c.lr:.3g} {c.outcome} {c.value:.4g}" for c in race.candidates)
            )
        else:
            lines.append(f"  lr {start.lr:.3g} = {start.rule} suggestion x {stage.lr_scale:g}")
    else:
        lines.append(f"  lr {start.lr:.3g} (fixed)")
    lines.append(
        "  peak lr per layer group: " + ", ".join(f"{g}={v:.3g}" for g, v in start.layer_lrs.items())
    )
    return lines


MEMORISING_PASSES = 10  # range-test passes over the training images beyond which the console warns


def stage_warnings(start: Any) -> list[str]:
    """Warning lines about the range test a stage's LR came from: the suggestion it trains at is
    flagged (`lrlab.finder.flags`), or the test passed over the training images more than
    `MEMORISING_PASSES` times (its curve can then show them memorised more than learnt)."""
    if start.finder is None:
        return []
    warnings = []
    flag = start.finder.flags.get(start.rule) if start.rule else None
    if flag:
        warnings.append(
            f"  warning: the {start.rule} suggestion lies in the curve's {flag} ({EDGE_FLAGS[flag]}); "
            f"look at the plot, or set stages.{start.index}.lr"
        )
    steps = len(start.finder.lrs)
    passes = steps / start.steps_per_epoch if start.steps_per_epoch else 0.0
    if passes > MEMORISING_PASSES:
        warnings.append(
            f"  warning: the range test's {steps} steps passed over the training images {passes:.0f} "
            "times: on so few images its curve can show them memorised more than learnt; check the "
            "stage's valid loss (a smaller data.batch_size gives more steps per epoch)"
        )
    return warnings


def finder_file_stem(stage_name: str) -> str:
    """File name (without suffix) of a stage's range-test plot and curve in the run directory."""
    return f"lr_find_{stage_name}"


class ConsoleTable(Callback):
    """Prints each stage's decisions (saving its range-test plot in `directory`), a header when a
    stage starts fitting, one row per epoch and, when the stage stopped early, why."""

    def __init__(self, directory: str | Path | None = None):
        self.directory = Path(directory) if directory is not None else None

    def on_stage_start(self, engine: Any, start: Any) -> None:
        log.info("")
        for line in describe_stage(start):
            log.info(line)
        for warning in stage_warnings(start):
            log.warning(warning)
        if start.finder is not None and self.directory is not None:
            png, _ = start.finder.save(
                self.directory, finder_file_stem(start.stage.name), title=f"stage {start.stage.name}"
            )
            log.info(f"  plot: {png}")

    def on_fit_start(self, engine: Any, stage: str, epochs: int, steps_per_epoch: int) -> None:
        log.info("")
        log.info(f"stage {stage}: {epochs} epoch(s) x {steps_per_epoch} steps")
        log.info(table_header())

    def on_epoch_end(self, engine: Any, result: EpochResult) -> None:
        log.info(table_row(result))

    def on_fit_end(self, engine: Any, stage: str, results: list[EpochResult]) -> None:
        """Below the table: why it has fewer rows than the stage has epochs."""
        reason = getattr(engine, "stop_reason", None)
        if reason:
            log.info(f"early stopping: {reason}")


def format_test_report(
    report: dict[str, float],
    class_names: list[str],
    groups: dict[str, list[int]] | None,
    images: int,
    what: str | None = None,
) -> list[str]:
    """Console lines for the once-only test report of `what` (None: the final model of a
    training, which is evaluated after it)."""
    if what is None:
        title = f"test: the final model on {images} held-out images (evaluated once, after training)"
    else:
        title = f"test: {what}, {images} held-out images"
    lines = [
        "",
        title,
        f"  accuracy {report['accuracy']:.4f}  balanced accuracy {report['balanced_accuracy']:.4f}  "
        f"loss {report['loss']:.4f}"
        + (f"  calibration error {report['ece']:.4f}" if "ece" in report else ""),
    ]
    recalls = [(name, report.get(f"recall/{key}")) for name, key in zip(class_names, class_keys(class_names))]
    lines.append("  recall: " + ", ".join(f"{name} {r:.4f}" for name, r in recalls if r is not None))
    if groups and f"accuracy_{len(groups)}class" in report:
        coarse = report[f"accuracy_{len(groups)}class"]
        lines.append(f"  {len(groups)}-class accuracy ({' vs '.join(groups)}): {coarse:.4f}")
    return lines
