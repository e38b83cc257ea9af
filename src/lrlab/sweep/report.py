"""The finder-vs-search report of a sweep: for each range-test rule, its suggested LRs, final
metrics, rank among the searched trials, regret and compute, against the best searched trial;
plus a plot of final error against LR with the finder's suggestions and the range-test curve.

Written by the sweeper when a sweep ends, and regenerated from a sweep directory or the MLflow
parent run id with `lrlab-report`.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState

from lrlab.sweep.storage import open_storage

REPORT_FILE = "finder_vs_search.md"
PLOT_FILE = "finder_vs_search.png"


@dataclass
class FinderRow:
    """One range-test rule's trial, measured against the searched trials."""

    rule: str
    trial: FrozenTrial
    value: float
    rank: int
    regret: float
    beaten_after: int | None
    seconds: float


def _source(trial: FrozenTrial) -> str:
    return str(trial.user_attrs.get("source", "search"))


def _seconds(trial: FrozenTrial) -> float:
    """Wall seconds a trial took (setup, range tests and training)."""
    if trial.datetime_start and trial.datetime_complete:
        return (trial.datetime_complete - trial.datetime_start).total_seconds()
    return 0.0


def lr_keys(study: optuna.Study) -> list[str]:
    keys = {k for t in study.trials for k in t.params if k.startswith("stages.") and k.endswith(".lr")}
    return sorted(keys, key=lambda k: int(k.split(".")[1]))


def stage_names(study: optuna.Study) -> dict[str, str]:
    """`stages.<i>.lr` -> the stage's name, from what trials recorded."""
    names: dict[str, str] = {}
    for trial in study.trials:
        for stage in trial.user_attrs.get("stages") or []:
            names.setdefault(f"stages.{stage['index']}.lr", stage["name"])
    return names


def analyse(study: optuna.Study) -> tuple[list[FinderRow], list[FrozenTrial], str]:
    """Finder rows and the searched trials (complete, in trial order), for the first objective."""
    minimize = study.directions[0] == optuna.study.StudyDirection.MINIMIZE
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    searched = [t for t in complete if _source(t) == "search"]
    metric = (study.user_attrs.get("lrlab.metric") or ["value"])[0]
    sign = 1.0 if minimize else -1.0
    best = min((sign * t.values[0] for t in searched), default=math.nan) * sign
    rows = []
    for trial in complete:
        source = _source(trial)
        if not source.startswith("lr_finder:"):
            continue
        value = trial.values[0]
        better = [t for t in searched if sign * t.values[0] < sign * value]
        beaten = next((i + 1 for i, t in enumerate(searched) if sign * t.values[0] < sign * value), None)
        rows.append(
            FinderRow(
                source.split(":", 1)[1],
                trial,
                value,
                len(better) + 1,
                sign * (value - best) if searched else math.nan,
                beaten,
                _seconds(trial),
            )
        )
    return rows, searched, metric


def _fmt(value: Any, spec: str = ".4f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec)


def markdown(study: optuna.Study) -> str:
    """The report as markdown."""
    rows, searched, metric = analyse(study)
    keys = lr_keys(study)
    names = stage_names(study)
    heads = [f"{names.get(k, k)} lr" for k in keys]
    all_searched = [t for t in study.trials if _source(t) == "search" and t.state.is_finished()]
    pruned = sum(t.state == TrialState.PRUNED for t in all_searched)
    failed = sum(t.state == TrialState.FAIL for t in all_searched)
    search_seconds = sum(_seconds(t) for t in all_searched)
    direction = study.directions[0].name.lower()
    lines = [
        f"# Range-test suggestions vs. searched learning rates: `{study.study_name}`",
        "",
        f"Objective: final `{metric}` ({direction}). Searched trials: {len(searched)} complete, {pruned} pruned, "
        f"{failed} failed. Search space: "
        + ", ".join(f"`{k}` {v}" for k, v in (study.user_attrs.get("lrlab.search_space") or {}).items())
        + ".",
        "",
    ]
    lines += ["## Finder rules", ""]
    lines.append(
        "| rule | " + " | ".join(heads) + f" | {metric} | valid_loss | rank among searched | regret | "
        "searched trials to beat it | compute (s) |"
    )
    lines.append("|---" * (len(heads) + 7) + "|")
    for r in rows:
        lrs = [_fmt(r.trial.params.get(k), ".3g") for k in keys]
        valid = (r.trial.user_attrs.get("metrics") or {}).get("valid_loss")
        beaten = str(r.beaten_after) if r.beaten_after else f"not beaten in {len(searched)}"
        lines.append(
            f"| {r.rule} | " + " | ".join(lrs) + f" | {_fmt(r.value)} | {_fmt(valid)} | "
            f"{r.rank} of {len(searched) + 1} | {_fmt(r.regret, '+.4f')} | {beaten} | {r.seconds:.0f} |"
        )
    unfinished = [
        t for t in study.trials if _source(t).startswith("lr_finder:") and t.state != TrialState.COMPLETE
    ]
    for t in unfinished:
        reason = t.user_attrs.get("error") or t.user_attrs.get("pruned") or ""
        lines.append(
            f"| {_source(t).split(':', 1)[1]} | "
            + " | ".join("n/a" for _ in keys)
            + f" | {t.state.name} {reason[:120]} |"
            + " |" * 6
        )
    if not rows and not unfinished:
        lines.append(
            "| (no finder trials: add `enqueue: [lr_finder]`, or use `search=lr_vs_finder`) |"
            + " |" * (len(heads) + 6)
        )
    lines.append("")
    lines += ["## Best searched trials", ""]
    lines.append("| trial | " + " | ".join(heads) + f" | {metric} | valid_loss |")
    lines.append("|---" * (len(heads) + 3) + "|")
    ordered = sorted(searched, key=lambda t: t.values[0], reverse=direction == "maximize")
    for t in ordered[:5]:
        valid = (t.user_attrs.get("metrics") or {}).get("valid_loss")
        lines.append(
            f"| {t.number} | "
            + " | ".join(_fmt(t.params.get(k), ".3g") for k in keys)
            + f" | {_fmt(t.values[0])} | {_fmt(valid)} |"
        )
    lines.append("")
    lines += ["## Compute", ""]
    if rows:
        finder_seconds = sum(r.seconds for r in rows) / len(rows)
        range_test = sum(float(r.trial.user_attrs.get("finder_seconds") or 0.0) for r in rows) / len(rows)
        lines.append(
            f"- One finder trial (range tests + one training, wall clock): {finder_seconds:.0f} s on average, "
            f"of which range tests {range_test:.0f} s."
        )
        lines.append(
            f"- The search: {search_seconds:.0f} s over {len(all_searched)} trials "
            f"({search_seconds / finder_seconds:.1f}x one finder trial)."
            if finder_seconds
            else ""
        )
    else:
        lines.append(f"- The search: {search_seconds:.0f} s over {len(all_searched)} trials.")
    lines.append("")
    lines.append(f"![final {metric} against learning rate]({PLOT_FILE})")
    return "\n".join(lines) + "\n"


def _read_curve(path: str | None) -> tuple[list[float], list[float]] | None:
    if not path or not Path(path).is_file():
        return None
    lrs, losses = [], []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            lrs.append(float(row["lr"]))
            losses.append(float(row["smoothed_loss"]))
    return lrs, losses


def plot(study: optuna.Study, path: Path) -> Path | None:
    """Final metric against each stage's LR (log axis): searched trials as points, pruned ones
    hollow at their last report, finder suggestions as vertical lines, over the range-test curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, searched, metric = analyse(study)
    keys = lr_keys(study)
    if not keys:
        return None
    names = stage_names(study)
    pruned = [
        t
        for t in study.trials
        if t.state == TrialState.PRUNED and _source(t) == "search" and t.intermediate_values
    ]
    fig, axes = plt.subplots(1, len(keys), figsize=(6.5 * len(keys), 4.6), squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, key in zip(axes[0], keys, strict=True):
        ax.set_xscale("log")
        curve_trial = rows[0].trial if rows else None
        index = int(key.split(".")[1])
        curve, twin = None, None
        if curve_trial is not None:
            stage = next((s for s in curve_trial.user_attrs.get("stages") or [] if s["index"] == index), None)
            curve = _read_curve(stage.get("curve") if stage else None)
        if curve is not None:
            twin = ax.twinx()
            twin.plot(curve[0], curve[1], color="0.75", lw=1.5, label=f"range test ({rows[0].rule} trial)")
            twin.set_ylabel("range-test loss (smoothed)", color="0.5")
            twin.tick_params(axis="y", colors="0.5")
            ax.set_zorder(twin.get_zorder() + 1)
            ax.patch.set_visible(False)
        xs = [t.params[key] for t in searched if key in t.params]
        ys = [t.values[0] for t in searched if key in t.params]
        ax.scatter(xs, ys, color="C0", s=28, label=f"searched ({len(xs)})", zorder=3)
        if pruned:
            px = [t.params[key] for t in pruned if key in t.params]
            py = [t.intermediate_values[max(t.intermediate_values)] for t in pruned if key in t.params]
            ax.scatter(
                px,
                py,
                facecolors="none",
                edgecolors="C0",
                s=28,
                label=f"pruned ({len(px)}), last report",
                zorder=3,
            )
        for i, r in enumerate(rows):
            if key in r.trial.params:
                lr = r.trial.params[key]
                ax.axvline(
                    lr, color=colors(i + 1), ls="--", lw=1.4, label=f"{r.rule}: {lr:.2g} -> {r.value:.3f}"
                )
                ax.scatter(
                    [lr],
                    [r.value],
                    marker="*",
                    s=110,
                    color=colors(i + 1),
                    edgecolors="k",
                    linewidths=0.5,
                    zorder=4,
                )
        ax.set_xlabel(f"{names.get(key, key)} learning rate ({key})")
        ax.set_ylabel(f"final {metric}")
        ax.grid(True, which="major", alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if twin is not None:
            extra = twin.get_legend_handles_labels()
            handles, labels = handles + extra[0], labels + extra[1]
        ax.legend(handles, labels, fontsize=7, loc="best")
    fig.suptitle(f"{study.study_name}: range-test suggestions vs. searched LRs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(study: optuna.Study, directory: str | Path) -> list[Path]:
    """Write the markdown report and its plot into `directory`; returns the files written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    report = directory / REPORT_FILE
    report.write_text(markdown(study))
    png = plot(study, directory / PLOT_FILE)
    return [report] + ([png] if png else [])


def _study_from_dir(directory: Path) -> optuna.Study:
    results = directory / "optimization_results.yaml"
    if not results.is_file():
        raise SystemExit(
            f"lrlab-report: {directory} has no optimization_results.yaml; is it a sweep directory?"
        )
    data = OmegaConf.load(results)
    return optuna.load_study(study_name=str(data.name), storage=open_storage(str(data.storage)))


def main(argv: list[str] | None = None) -> int:
    """`lrlab-report <sweep dir | MLflow parent run id>`: regenerate a sweep's report."""
    parser = argparse.ArgumentParser(prog="lrlab-report", description=main.__doc__)
    parser.add_argument("target", help="a sweep directory, or the MLflow run id of a sweep's parent run")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: sqlite:///<current dir>/mlflow.db)",
    )
    parser.add_argument("--out", default=None, help="where to write (default: the sweep directory)")
    args = parser.parse_args(argv)
    target = Path(args.target)
    run_id, client = None, None
    if target.is_dir():
        study = _study_from_dir(target)
        out = Path(args.out) if args.out else target
        run_id = study.user_attrs.get("lrlab.mlflow_parent_run")
        uri = args.tracking_uri or study.user_attrs.get("lrlab.mlflow_uri")
    elif not re.fullmatch(r"[0-9a-f]{32}", args.target):
        raise SystemExit(f"lrlab-report: {args.target} is neither a sweep directory nor an MLflow run id")
    else:
        from lrlab.integrations.mlflow import default_tracking_uri

        uri = args.tracking_uri or default_tracking_uri(Path.cwd())
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        try:
            run = client.get_run(args.target)
        except Exception as exc:
            raise SystemExit(
                f"lrlab-report: {args.target} is neither a directory nor a run in {uri}: {exc}"
            ) from None
        params = run.data.params
        if "study_name" not in params:
            raise SystemExit(
                f"lrlab-report: run {args.target} is not a sweep's parent run (no study_name param)"
            )

        study = optuna.load_study(study_name=params["study_name"], storage=open_storage(params["storage"]))
        run_id = args.target
        out = Path(args.out or run.data.tags.get("sweep_dir") or Path.cwd())
    paths = write_report(study, out)
    if run_id and uri:
        from mlflow.tracking import MlflowClient

        client = client or MlflowClient(tracking_uri=uri)
        for path in paths:
            client.log_artifact(run_id, str(path))
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
