"""`batch_finder.*`, the batch-size probe's settings (`task=batch_size`): a module without torch, so
the config check that validates them stays light."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BatchFinderConfig:
    """`batch_finder.*`: where the doubling starts and stops (`max_size`, and a batch that leaves the
    epoch fewer than `min_steps` optimizer steps is not tried), the optimizer steps timed per size
    in one round (after one untimed warm-up step; more rounds until `min_seconds` have passed), the
    throughput tolerance of the suggestion, the share of the device's memory left free, and the
    binary search's step."""

    start: int = 8
    max_size: int = 1024
    min_steps: int = 10
    steps: int = 3
    min_seconds: float = 0.5
    tolerance: float = 0.05
    margin: float = 0.1
    multiple: int = 8

    def check(self) -> None:
        if not 1 <= self.start <= self.max_size:
            raise ValueError(f"start={self.start} must be at least 1 and at most max_size={self.max_size}")
        if self.steps < 1 or self.multiple < 1 or self.min_steps < 1:
            raise ValueError("steps, min_steps and multiple must be at least 1")
        if self.min_seconds < 0:
            raise ValueError(f"min_seconds={self.min_seconds} must not be negative")
        if not (0 <= self.tolerance < 1 and 0 <= self.margin < 1):
            raise ValueError("tolerance and margin are fractions in [0, 1)")
