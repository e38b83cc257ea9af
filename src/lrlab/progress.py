"""Console output: the fastai-style epoch table (`epoch train_loss valid_loss error_rate time`)."""

from __future__ import annotations

import logging
from typing import Any

from lrlab.engine import Callback, EpochResult

log = logging.getLogger("lrlab")

COLUMNS = ("epoch", "train_loss", "valid_loss", "error_rate", "accuracy", "time")


def format_time(seconds: float) -> str:
    """mm:ss (hh:mm:ss past an hour), as fastai prints epoch times."""
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def table_header() -> str:
    return "  ".join(f"{c:<10}" if c != "epoch" else f"{c:<5}" for c in COLUMNS).rstrip()


def table_row(result: EpochResult) -> str:
    cells = [f"{result.stage_epoch:<5d}"] + [
        f"{v:<10.6f}" for v in (result.train_loss, result.valid_loss, result.error_rate, result.accuracy)
    ] + [format_time(result.seconds)]
    return "  ".join(cells)


class ConsoleTable(Callback):
    """Prints a header when a stage starts and one row per epoch."""

    def on_fit_start(self, engine: Any, stage: str, epochs: int, steps_per_epoch: int) -> None:
        log.info("")
        log.info(f"stage {stage}: {epochs} epoch(s) x {steps_per_epoch} steps")
        log.info(table_header())

    def on_epoch_end(self, engine: Any, result: EpochResult) -> None:
        log.info(table_row(result))
