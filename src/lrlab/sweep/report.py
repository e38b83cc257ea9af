"""The finder-vs-search report of a sweep: for each range-test rule, its suggested LRs, final
metrics, rank among the searched trials, regret and compute, against the best searched trial;
plus a plot of final error against LR with the finder's suggestions and the range-test curve.
When two params or more were searched, which of them mattered (`lrlab.sweep.importance`). When
`seed` is a param with two values or more, an "Across seeds" section (`lrlab.sweep.seeds`:
mean ± std per recipe of the valid error and the test metrics) and `seeds.csv`; a seed grid
without finder trials gets that section and its trials instead of the finder tables.

Written by the sweeper when a sweep ends, and regenerated from a sweep directory or the MLflow
parent run id with `lrlab-report`. The numbers come from `lrlab.sweep.analysis`, the plot from
`lrlab.sweep.report_plot`; this module imports both and neither imports it.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState

from lrlab.integrations.optuna_storage import open_storage
from lrlab.sweep.analysis import (
    FinderRow,
    analyse,
    lr_keys,
    plotted_lr_keys,
    source_of,
    stage_names,
    trial_seconds,
)
from lrlab.sweep.baselines import finder_rule
from lrlab.sweep.importance import section as importance_section
from lrlab.sweep.markdown import param_cell, table_head, table_row
from lrlab.sweep.report_plot import plot
from lrlab.sweep.results import RESULTS_FILE
from lrlab.sweep.seeds import SEEDS_FILE, recipes_of, seed_values, trials_table, write_csv
from lrlab.sweep.seeds import section as seeds_section
from lrlab.sweep.study import FIXED_ATTR, MLFLOW_URI_ATTR, PARENT_ATTR, SEARCH_SOURCE, SPACE_ATTR

REPORT_FILE = "finder_vs_search.md"
PLOT_FILE = "finder_vs_search.png"


def _fmt(value: Any, spec: str = ".4f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec)


def markdown(study: optuna.Study) -> str:
    """The report as markdown: the finder tables, or for a seed grid without finder trials its
    trials; the "Across seeds" section when `seed` has two values or more; the compute."""
    rows, searched, metric = analyse(study)
    keys = lr_keys(study)
    names = stage_names(study)
    heads = [f"{names.get(k, k)} lr" for k in keys]
    trials = study.get_trials(deepcopy=False)
    all_searched = [t for t in trials if source_of(t) == SEARCH_SOURCE and t.state.is_finished()]
    direction = study.directions[0].name.lower()
    pruned = sum(t.state == TrialState.PRUNED for t in all_searched)
    failed = sum(t.state == TrialState.FAIL for t in all_searched)
    space = ", ".join(f"`{k}` {v}" for k, v in (study.user_attrs.get(SPACE_ATTR) or {}).items())
    recipes = recipes_of(trials)
    seeds = [] if recipes is None else seeds_section(recipes, seed_values(trials), _fixed(study))
    if recipes is not None and not any(finder_rule(source_of(t)) for t in trials):
        title = f"# Sweep `{study.study_name}`: across seeds"
        body = [*seeds, *trials_table(searched, metric, direction), *importance_section(study, searched)]
    else:
        title = f"# Range-test suggestions vs. searched learning rates: `{study.study_name}`"
        body = [
            *_finder_table(study, rows, searched, metric, keys, heads),
            *_best_table(searched, metric, keys, heads, direction),
            *importance_section(study, searched),
            *seeds,
        ]
    lines = [
        title,
        "",
        f"Objective: final `{metric}` ({direction}). Searched trials: {len(searched)} complete, "
        f"{pruned} pruned, {failed} failed. Search space: {space}.",
        "",
        *body,
        *_compute(rows, all_searched),
    ]
    if plotted_lr_keys(study):  # the plot is drawn only when an LR was searched
        lines.append(f"![final {metric} against learning rate]({PLOT_FILE})")
    return "\n".join(lines) + "\n"


def _fixed(study: optuna.Study) -> list[str]:
    return [str(o) for o in study.user_attrs.get(FIXED_ATTR) or []]


def _valid_loss(trial: FrozenTrial) -> Any:
    return (trial.user_attrs.get("metrics") or {}).get("valid_loss")


def _finder_table(
    study: optuna.Study,
    rows: list[FinderRow],
    searched: list[FrozenTrial],
    metric: str,
    keys: list[str],
    heads: list[str],
) -> list[str]:
    """Each finder rule's LRs, final metrics, rank, regret, trials-to-beat and compute; unfinished
    finder trials with their state and reason."""
    columns = ["rule", *heads, metric, "valid_loss", "rank among searched", "regret"]
    columns += ["searched trials to beat it", "compute as a lone run (s)"]
    lines = ["## Finder rules", "", *table_head(columns)]
    for r in rows:
        beaten = str(r.beaten_after) if r.beaten_after else f"not beaten in {len(searched)}"
        cells = [r.rule, *(_fmt(r.trial.params.get(k), ".3g") for k in keys), _fmt(r.value)]
        cells += [_fmt(_valid_loss(r.trial)), f"{r.rank} of {len(searched) + 1}", _fmt(r.regret, "+.4f")]
        lines.append(table_row([*cells, beaten, _in_seconds(r.seconds)], len(columns)))
    unfinished = [t for t in study.trials if finder_rule(source_of(t)) and t.state != TrialState.COMPLETE]
    for t in unfinished:
        reason = t.user_attrs.get("error") or t.user_attrs.get("pruned") or ""
        cells = [finder_rule(source_of(t)), *("n/a" for _ in keys), f"{t.state.name} {reason[:120]}".strip()]
        lines.append(table_row(cells, len(columns)))
    if not rows and not unfinished:
        hint = "(no finder trials: add `enqueue: [lr_finder]`, or use `search=lr_vs_finder`)"
        lines.append(table_row([hint], len(columns)))
    return [*lines, ""]


def _best_table(
    searched: list[FrozenTrial], metric: str, keys: list[str], heads: list[str], direction: str
) -> list[str]:
    """The five best searched trials, with every searched param: the stage LRs under their stage
    names (`heads`), then the others (`lr`, `optimizer`, ...) by their override keys."""
    others = sorted({k for t in searched for k in t.params} - set(keys))
    columns = ["trial", *heads, *others, metric, "valid_loss"]
    lines = ["## Best searched trials", "", *table_head(columns)]
    ordered = sorted(searched, key=lambda t: t.values[0], reverse=direction == "maximize")
    for t in ordered[:5]:
        cells = [str(t.number), *(_fmt(t.params.get(k), ".3g") for k in keys)]
        cells += [param_cell(t.params.get(k)) for k in others]
        lines.append(table_row([*cells, _fmt(t.values[0]), _fmt(_valid_loss(t))], len(columns)))
    return [*lines, ""]


def _compute(rows: list[FinderRow], all_searched: list[FrozenTrial]) -> list[str]:
    """One finder trial's cost as a lone `lr=find` run would pay it (wall clock, a range test it
    reused from an earlier trial counted in full) against the whole search."""
    search_seconds = sum(trial_seconds(t) for t in all_searched)
    search = f"- The search: {_seconds(search_seconds)} over {len(all_searched)} trials"
    if not rows:
        return ["## Compute", "", f"{search}.", ""]
    finder_seconds = sum(r.seconds for r in rows) / len(rows)
    range_test = sum(r.range_test_seconds for r in rows) / len(rows)
    together = sum(trial_seconds(r.trial) for r in rows)
    ratio = f"{search} ({search_seconds / finder_seconds:.1f}x one finder trial)." if finder_seconds else ""
    shared = ""
    if sum(r.seconds for r in rows) - together > 0.5:  # some trial reused a range test
        shared = (
            f" The {len(rows)} finder trials took {_seconds(together)} together here: trials whose range "
            "test started from the same state shared one curve."
        )
    return [
        "## Compute",
        "",
        "- One finder trial (range tests + one training, wall clock, as a lone `lr=find` run takes it): "
        f"{_seconds(finder_seconds)} on average, of which range tests {_seconds(range_test)}.{shared}",
        ratio,
        "",
    ]


def _in_seconds(value: float) -> str:
    """A number of seconds to read at a glance: whole seconds, tenths below 10."""
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def _seconds(value: float) -> str:
    return f"{_in_seconds(value)} s"


def write_report(study: optuna.Study, directory: str | Path) -> list[Path]:
    """Write the markdown report, its plot (when a stage LR was searched) and, for a seed grid,
    `seeds.csv` into `directory`; returns the files written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    report = directory / REPORT_FILE
    report.write_text(markdown(study))
    png = plot(study, directory / PLOT_FILE)
    paths = [report] + ([png] if png else [])
    recipes = recipes_of(study.get_trials(deepcopy=False))
    if recipes is not None:
        paths.append(write_csv(recipes, directory / SEEDS_FILE))
    return paths


def _study_from_dir(directory: Path) -> optuna.Study:
    results = directory / RESULTS_FILE
    if not results.is_file():
        raise SystemExit(f"lrlab-report: {directory} has no {RESULTS_FILE}; is it a sweep directory?")
    data = OmegaConf.load(results)
    return optuna.load_study(study_name=str(data.name), storage=open_storage(str(data.storage)))


def _study_from_run(run_id: str, uri: str) -> tuple[optuna.Study, Path]:
    """The study of a sweep's MLflow parent run, and the sweep directory the run names."""
    from mlflow.tracking import MlflowClient

    try:
        run = MlflowClient(tracking_uri=uri).get_run(run_id)
    except Exception as exc:
        raise SystemExit(f"lrlab-report: {run_id} is neither a directory nor a run in {uri}: {exc}") from None
    params = run.data.params
    if "study_name" not in params:
        raise SystemExit(f"lrlab-report: run {run_id} is not a sweep's parent run (no study_name param)")
    study = optuna.load_study(study_name=params["study_name"], storage=open_storage(params["storage"]))
    return study, Path(run.data.tags.get("sweep_dir") or Path.cwd())


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
    if Path(args.target).is_dir():
        out = Path(args.target)
        study = _study_from_dir(out)
        run_id = study.user_attrs.get(PARENT_ATTR)
        uri = args.tracking_uri or study.user_attrs.get(MLFLOW_URI_ATTR)
    elif re.fullmatch(r"[0-9a-f]{32}", args.target):
        from lrlab.integrations.mlflow_store import default_tracking_uri

        run_id, uri = args.target, args.tracking_uri or default_tracking_uri(Path.cwd())
        study, out = _study_from_run(run_id, uri)
    else:
        raise SystemExit(f"lrlab-report: {args.target} is neither a sweep directory nor an MLflow run id")
    paths = write_report(study, Path(args.out) if args.out else out)
    if run_id and uri:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        for path in paths:
            client.log_artifact(run_id, str(path))
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
