"""What a resumed training may change: the checkpoint's recorded config against this run's. A
longer training (more epochs), other early-stopping, logging and tracking settings continue the
same run, recorded as `resume.changed.<key>` tags (MLflow refuses to rewrite a param); anything
else (the model, the data, the optimizer) would not be the same training, and is refused."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any

from lrlab.core.flat import flatten
from lrlab.errors import ConfigError

RESUMABLE = (
    "epochs",
    "freeze_epochs",
    "stages.*.epochs",
    "train.patience",
    "train.min_delta",
    "train.monitor",
    "train.mode",
    "train.save_top_k",
    "train.restore_best",
    "train.progress",
    "train.log_every",
    "data.preview",
    "tracking.*",
    "hydra.*",
    "device",
)
"""Keys a resumed training may change (patterns; `*` matches any part)."""


def resume_changes(
    saved: Mapping[str, Any], current: Mapping[str, Any], path: str
) -> dict[str, tuple[Any, Any]]:
    """Keys whose value differs between the checkpoint's config `saved` and this run's `current`
    (both resolved, without `resume`): key -> (saved, current). ConfigError naming every change
    that is not in `RESUMABLE`, both sides shown."""
    before, after = flatten(dict(saved)), flatten(dict(current))
    changed = {
        key: (before.get(key), after.get(key))
        for key in sorted(set(before) | set(after))
        if key != "resume" and before.get(key) != after.get(key)
    }
    refused = [k for k in changed if not any(fnmatch.fnmatchcase(k, p) for p in RESUMABLE)]
    if refused:
        shown = "; ".join(
            f"{k}: {changed[k][0]!r} in the checkpoint, {changed[k][1]!r} now" for k in refused[:6]
        )
        more = f" (and {len(refused) - 6} more)" if len(refused) > 6 else ""
        raise ConfigError(
            f"resume={path}: this run is not the checkpoint's training: {shown}{more}. A resumed "
            f"training may change only {', '.join(RESUMABLE)}; start a new run for anything else."
        )
    return changed
