"""What a resumed training may change: the checkpoint's recorded config against this run's. A
longer training (more epochs), other early-stopping, logging and tracking settings continue the
same run, recorded as `resume.changed.<key>` tags (MLflow refuses to rewrite a param); anything
else (the model, the data, the optimizer) would not be the same training, and is refused."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from pathlib import Path
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
    changed = differences(saved, current)
    refused = [k for k in changed if not resumable(k)]
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


def differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Flattened keys (but `resume`) whose value differs: key -> (saved, current), sorted."""
    before, after = flatten(dict(saved)), flatten(dict(current))
    return {
        key: (before.get(key), after.get(key))
        for key in sorted(set(before) | set(after))
        if key != "resume" and before.get(key) != after.get(key)
    }


def resumable(key: str) -> bool:
    """Whether a resumed training may change `key` (it matches a `RESUMABLE` pattern)."""
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in RESUMABLE)


def fresh_start_note(
    outputs: Path, candidates: Sequence[tuple[Path, Mapping[str, Any]]], current: Mapping[str, Any]
) -> str:
    """What `resume=auto` says when no `last.pt` under `outputs` is this config's: it starts a new
    training, and how the nearest of the `candidates` ((last.pt, its config), newest first) differs,
    so a user who meant to continue it sees why it was not and how to."""
    note = (
        f"resume=auto: no checkpoints/last.pt under {outputs} comes from a run with this config; "
        "starting a new training (the same command continues it after an interruption)."
    )
    if not candidates:
        return note
    nearest, changed = min(
        ((path, differences(saved, current)) for path, saved in candidates), key=lambda found: len(found[1])
    )
    shown = ", ".join(f"{k} ({changed[k][0]!r} -> {changed[k][1]!r})" for k in list(changed)[:4])
    more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
    if all(resumable(k) for k in changed):
        advice = f"to continue that training with these changes, pass resume={nearest}"
    else:
        advice = "it is another training"
    return f"{note} The nearest one, {nearest}, differs in {shown}{more}: {advice}."
