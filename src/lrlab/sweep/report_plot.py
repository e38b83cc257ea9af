"""The report's plot: final metric against each searched stage LR on a log axis, with searched
trials as points (pruned ones hollow, at their last report), each finder rule's suggestion as a
vertical line and a marker in the rule's own colour and shape (those of the range-test plot), over
the range-test curve of the first finder trial. matplotlib is
imported only when a plot is drawn. Its numbers come from `lrlab.sweep.analysis`, like the report's
tables; `lrlab.sweep.report` imports this module, never the other way."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from lrlab.finder.plot import rule_style
from lrlab.sweep.analysis import (
    ALL_STAGES_LR,
    FinderRow,
    analyse,
    is_number,
    plotted_lr_keys,
    source_of,
    stage_names,
)
from lrlab.sweep.study import SEARCH_SOURCE


def plot(study: optuna.Study, path: Path) -> Path | None:
    """Draw the plot into `path`; None when no LR was searched (`plotted_lr_keys`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, searched, metric = analyse(study)
    keys = plotted_lr_keys(study)
    if not keys:
        return None
    names = stage_names(study)
    pruned = [
        t
        for t in study.trials
        if t.state == TrialState.PRUNED and source_of(t) == SEARCH_SOURCE and t.intermediate_values
    ]
    fig, axes = plt.subplots(1, len(keys), figsize=(6.5 * len(keys), 4.6), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        twin = _range_test_curve(ax, key, rows)
        _trials(ax, key, searched, pruned)
        _suggestions(ax, key, rows)
        ax.set_xlabel(f"{names.get(key, key)} learning rate ({key})")
        ax.set_ylabel(f"final {metric}")
        ax.grid(True, which="major", alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if twin is not None:
            extra = twin.get_legend_handles_labels()
            handles, labels = handles + extra[0], labels + extra[1]
        ax.legend(handles, labels, fontsize=7, loc="best")
    what = "range-test suggestions vs. searched LRs" if rows else f"final {metric} against the searched LRs"
    fig.suptitle(f"{study.study_name}: {what}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _read_curve(path: str | None) -> tuple[list[float], list[float]] | None:
    """A range-test CSV's LRs and smoothed losses; None if the file is gone."""
    if not path or not Path(path).is_file():
        return None
    lrs, losses = [], []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            lrs.append(float(row["lr"]))
            losses.append(float(row["smoothed_loss"]))
    return lrs, losses


def _range_test_curve(ax: Any, key: str, rows: list[FinderRow]) -> Any:
    """The first finder trial's range-test curve of this stage, on a twin axis (returned)."""
    ax.set_xscale("log")
    if not rows or key == ALL_STAGES_LR:  # finder trials set each stage's LR, never the shorthand
        return None
    index = int(key.split(".")[1])
    stage = next((s for s in rows[0].trial.user_attrs.get("stages") or [] if s["index"] == index), None)
    curve = _read_curve(stage.get("curve") if stage else None)
    if curve is None:
        return None
    twin = ax.twinx()
    twin.plot(curve[0], curve[1], color="0.75", lw=1.5, label=f"range test ({rows[0].rule} trial)")
    twin.set_ylabel("range-test loss (smoothed)", color="0.5")
    twin.tick_params(axis="y", colors="0.5")
    ax.set_zorder(twin.get_zorder() + 1)
    ax.patch.set_visible(False)
    return twin


def _trials(ax: Any, key: str, searched: list[FrozenTrial], pruned: list[FrozenTrial]) -> None:
    """Searched trials as points; pruned ones hollow, at their last reported value."""
    searched = [t for t in searched if is_number(t.params.get(key))]
    pruned = [t for t in pruned if is_number(t.params.get(key))]
    xs = [t.params[key] for t in searched]
    ys = [t.values[0] for t in searched]
    ax.scatter(xs, ys, color="C0", s=28, label=f"searched ({len(xs)})", zorder=3)
    if pruned:
        px = [t.params[key] for t in pruned]
        py = [t.intermediate_values[max(t.intermediate_values)] for t in pruned]
        label = f"pruned ({len(px)}), last report"
        ax.scatter(px, py, facecolors="none", edgecolors="C0", s=28, label=label, zorder=3)


def _suggestions(ax: Any, key: str, rows: list[FinderRow]) -> None:
    """Each finder rule's LR as a dashed vertical line, and its final value as a marker, both in
    the rule's style (distinct for every registered rule, as in the range-test plot)."""
    for r in rows:
        if key not in r.trial.params:
            continue
        lr = r.trial.params[key]
        marker, colour = rule_style(r.rule)
        label = f"{r.rule}: {lr:.2g} -> {r.value:.3f}"
        ax.axvline(lr, color=colour, ls="--", lw=1.4)
        ax.scatter(
            [lr], [r.value], marker=marker, s=80, color=colour, edgecolors="k", linewidths=0.5, zorder=4
        )
        ax.plot(
            [],
            [],
            ls="--",
            marker=marker,
            color=colour,
            markeredgecolor="k",
            markeredgewidth=0.5,
            label=label,
        )
