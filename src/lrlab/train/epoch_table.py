"""`epochs.csv`: one row per epoch trained (stage, epochs, losses, error rate, accuracy, seconds,
training images/s), rewritten in the run directory after every epoch, as fastai's and Lightning's
CSV loggers do, so a running or killed run has its table too, with or without a tracker."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import astuple, fields
from pathlib import Path
from typing import Any

from lrlab.core.types import Callback, EpochResult

EPOCH_COLUMNS = tuple(f.name for f in fields(EpochResult))


def write_epoch_table(rows: Sequence[EpochResult], path: Path) -> Path:
    """Write `rows` to `path` as CSV (`EPOCH_COLUMNS`), replacing it whole: a reader never sees
    half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(EPOCH_COLUMNS)
        writer.writerows(astuple(row) for row in rows)
    os.replace(partial, path)
    return path


class EpochTable(Callback):
    """Keeps `path` equal to the engine's epoch history (every epoch of the training, those before a
    resume included; an `lr=auto` race's losers are left out once its winner continues)."""

    def __init__(self, path: Path):
        self.path = path

    def on_epoch_end(self, engine: Any, result: EpochResult) -> None:
        write_epoch_table(engine.history, self.path)
