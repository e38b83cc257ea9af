"""Range-test curves shared between runs: a run whose range test would start from exactly the same
state as an earlier one (same weights, optimizer, RNGs, data order, settings) reuses its raw curve
instead of recomputing it. A sweep's finder trials differ only in the rule applied to the curve,
so one curve per stage serves all of them; the rules are re-applied to the cached raw losses.

The key is content-addressed (a digest of the snapshot the test starts from plus the caller's
`context`: data, model, loss and finder settings), so a stale entry is never used for another
state; a store is any object with `get(key) -> dict | None` and `put(key, dict)`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from lrlab.finder.config import FinderConfig

FORMAT = 1  # bump when the stored curve's meaning changes


class CurveStore(Protocol):
    """Where cached raw curves live (a folder, an Optuna study's attributes, ...)."""

    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, value: dict[str, Any]) -> None: ...


class DirectoryCurveStore:
    """One JSON file per curve in `directory` (written atomically, safe for concurrent workers)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def get(self, key: str) -> dict[str, Any] | None:
        path = self.directory / f"{key}.json"
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def put(self, key: str, value: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(value, handle)
        os.replace(tmp, self.directory / f"{key}.json")


@dataclass(frozen=True)
class SharedCurves:
    """A curve store plus the context that, with the starting state's digest, identifies a curve:
    whatever shapes the losses but is not in the model or optimizer (data, augmentation, loss,
    precision, model options such as dropout)."""

    store: CurveStore
    context: str


def curve_key(
    start_digest: str, config: FinderConfig, context: str, sweep: str, ratios: Any, repeat: int
) -> str:
    """The cache key of one ramp: the starting state's digest, the finder settings that shape the
    ramp (not the rule, which is applied afterwards), the caller's context, the swept groups."""
    ramp = asdict(replace(config, suggest="all", smoothing="ema", rule_curve="calibrated", share_curves=""))
    text = json.dumps([FORMAT, start_digest, ramp, context, sweep, list(map(float, ratios)), repeat])
    return hashlib.sha256(text.encode()).hexdigest()[:32]
