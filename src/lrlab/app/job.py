"""What a task is given and what it returns: the `Job` (the validated config and where it runs)
and the `RunResult` a sweeper or notebook reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lrlab.core.types import EpochResult


@dataclass
class Job:
    """One task to run: its config, the run directory, the folder `lrlab` was launched from (where
    the default stores live), the command-line overrides and, in a sweep, the parent run's id."""

    cfg: DictConfig
    output_dir: Path
    launch_dir: Path
    overrides: list[str] = field(default_factory=list)
    parent_run_id: str | None = None


@dataclass
class RunResult:
    """What a finished run returns: per-epoch results, the final metrics and where things went."""

    epochs: list[EpochResult]
    final: dict[str, float]
    run_id: str | None = None
    output_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    stages: list[dict[str, Any]] = field(default_factory=list)
    test: dict[str, float] = field(default_factory=dict)  # the final model on the test split, once

    def summary(self) -> dict[str, Any]:
        """Plain data for a sweeper (picklable, YAML-able): final metrics (on valid: what sweeps
        optimise), seconds spent training and in range tests, each stage's chosen LR, rule and
        range-test curve file, and, apart, the test metrics (`test`, empty without a test split),
        which nothing should choose by."""
        train_seconds = sum(r.seconds for r in self.epochs)
        finder_seconds = sum(s.get("finder_seconds", 0.0) for s in self.stages)
        return {
            "metrics": {k: float(v) for k, v in self.final.items()},
            "train_seconds": train_seconds,
            "finder_seconds": finder_seconds,
            "stages": self.stages,
            "test": {k: float(v) for k, v in self.test.items()},
            "run_id": self.run_id,
            "output_dir": str(self.output_dir) if self.output_dir else None,
        }
