"""The finder-vs-search report on a hand-built study: ranks, regrets, beaten-after counts, compute;
and the "Across seeds" section and seeds.csv of a seed grid, with and without finder trials."""

from __future__ import annotations

import datetime as dt
import math
import random
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from lrlab.sweep.analysis import analyse
from lrlab.sweep.report import markdown, write_report

LR = FloatDistribution(1e-5, 1e-1, log=True)
T0 = dt.datetime(2026, 1, 1)


def _trial(
    lr: float,
    error: float | None,
    source: str,
    seconds: float,
    state: TrialState = TrialState.COMPLETE,
    intermediate: dict[int, float] | None = None,
):
    return create_trial(
        state=state,
        value=error if state == TrialState.COMPLETE else None,
        params={"stages.0.lr": lr},
        distributions={"stages.0.lr": LR},
        intermediate_values=intermediate or {},
        user_attrs={
            "source": source,
            "metrics": {"valid_loss": (error or 0) * 2},
            "stages": [{"index": 0, "name": "full", "lr": lr}],
            "finder_seconds": 3.0 if source != "search" else 0.0,
        },
    )


def _study() -> optuna.Study:
    study = optuna.create_study(study_name="synthetic")
    study.set_user_attr("lrlab.metric", ["error_rate"])
    study.set_user_attr("lrlab.search_space", {"stages.0.lr": "float [1e-05, 0.1], log"})
    trials = [
        _trial(1e-3, 0.20, "lr_finder:valley", 10),
        _trial(5e-3, 0.08, "lr_finder:steep", 12),
        _trial(2e-2, 0.15, "search", 8),
        _trial(4e-3, 0.10, "search", 8),
        _trial(1e-5, None, "search", 2, TrialState.PRUNED, {0: 0.9}),
        _trial(6e-3, 0.05, "search", 8),
    ]
    start = T0
    for trial, seconds in zip(trials, [10, 12, 8, 8, 2, 8], strict=True):
        trial.datetime_start, trial.datetime_complete = start, start + dt.timedelta(seconds=seconds)
        start = trial.datetime_complete
        study.add_trial(trial)
    return study


def test_ranks_regrets_and_first_beating_trial() -> None:
    rows, searched, metric = analyse(_study())
    assert metric == "error_rate" and [t.values[0] for t in searched] == [0.15, 0.10, 0.05]
    valley, steep = rows
    assert (valley.rule, valley.rank, valley.beaten_after) == ("valley", 4, 1)
    assert valley.regret == pytest.approx(0.15)
    assert (steep.rank, steep.beaten_after) == (2, 3)
    assert steep.regret == pytest.approx(0.03)
    assert (valley.seconds, steep.seconds) == (10, 12)


def test_markdown_and_plot(tmp_path: Path) -> None:
    study = _study()
    text = markdown(study)
    assert "| valley | 0.001 | 0.2000 | 0.4000 | 4 of 4 | +0.1500 | 1 | 10 |" in text
    assert "| steep | 0.005 | 0.0800 | 0.1600 | 2 of 4 | +0.0300 | 3 | 12 |" in text
    assert "3 complete, 1 pruned, 0 failed" in text
    # 26 s of searching (8 + 8 + 2 + 8) against 11 s per finder trial on average.
    assert "26 s over 4 trials (2.4x one finder trial)" in text
    paths = write_report(study, tmp_path)
    assert [p.name for p in paths] == ["finder_vs_search.md", "finder_vs_search.png"]
    assert paths[1].stat().st_size > 10_000


def test_a_shared_range_test_counts_in_full_for_every_finder_trial() -> None:
    """Two finder trials shared one 3 s curve: the second spent nothing on it, yet as a lone
    `lr=find` run it would pay it, so its compute and the per-trial average count it in full."""
    study = optuna.create_study(study_name="shared")
    study.set_user_attr("lrlab.metric", ["error_rate"])
    for source, lr, error, spent, wall in [
        ("lr_finder:valley", 1e-3, 0.20, 3.0, 10),
        ("lr_finder:steep", 5e-3, 0.08, 0.0, 6),
        ("search", 4e-3, 0.10, 0.0, 8),
    ]:
        stage = {"index": 0, "name": "full", "lr": lr, "finder_seconds": spent}
        if source != "search":
            stage["finder_curve_seconds"] = 3.0
        trial = create_trial(
            value=error,
            params={"stages.0.lr": lr},
            distributions={"stages.0.lr": LR},
            user_attrs={"source": source, "stages": [stage], "finder_seconds": spent},
        )
        trial.datetime_start, trial.datetime_complete = T0, T0 + dt.timedelta(seconds=wall)
        study.add_trial(trial)
    valley, steep = analyse(study)[0]
    assert (valley.seconds, valley.range_test_seconds) == (10, 3.0)
    assert (steep.seconds, steep.range_test_seconds) == (9, 3.0)
    text = markdown(study)
    assert "| steep | 0.005 | 0.0800 | n/a | 1 of 2 | -0.0200 | not beaten in 1 | 9.0 |" in text
    assert "as a lone `lr=find` run takes it): 9.5 s on average, of which range tests 3.0 s." in text
    assert "The 2 finder trials took 16 s together here" in text
    assert "8.0 s over 1 trials (0.8x one finder trial)" in text


def test_every_rule_has_its_own_colour_and_marker_in_the_plot(tmp_path: Path, monkeypatch) -> None:
    """Ten finder rules and the searched points: no two legend entries look alike (the plot used
    to cycle ten colours, so the tenth rule took the first's)."""
    import matplotlib.pyplot as plt

    from lrlab.finder.rules import RULES
    from lrlab.sweep.report_plot import plot

    study = optuna.create_study(study_name="styles")
    study.set_user_attr("lrlab.metric", ["error_rate"])
    for i, rule in enumerate([*RULES, None, None]):
        source = f"lr_finder:{rule}" if rule else "search"
        study.add_trial(_trial(10 ** (-4 + i / 5), 0.1 + i / 100, source, 1.0))
    figures, close = [], plt.close
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to read its legend
    assert plot(study, tmp_path / "plot.png") is not None
    handles, labels = figures[0].axes[0].get_legend_handles_labels()
    close(figures[0])  # no figure left open for later tests in this process
    styles = []
    for handle in handles:
        if hasattr(handle, "get_marker"):
            styles.append((handle.get_marker(), handle.get_color()))
        else:  # the searched points' scatter
            styles.append(("o", tuple(handle.get_facecolor()[0])))
    assert len(labels) == len(RULES) + 1 and len(set(styles)) == len(styles), styles


def _seed_trial(seed: int, lr: float, error: float, source: str = "search"):
    return create_trial(
        value=error,
        params={"seed": seed, "stages.0.lr": lr},
        distributions={"seed": CategoricalDistribution([0, 1]), "stages.0.lr": LR},
        user_attrs={
            "source": source,
            "metrics": {"error_rate": error, "valid_loss": 2 * error},
            "test": {"accuracy": 1 - error, "loss": error},
            "stages": [{"index": 0, "name": "full", "lr": lr}],
        },
    )


def _seed_study(*trials) -> optuna.Study:
    study = optuna.create_study(study_name="seeds")
    study.set_user_attr("lrlab.metric", ["error_rate"])
    study.set_user_attr("lrlab.fixed_overrides", ["experiment=smoke"])
    for trial in trials:
        study.add_trial(trial)
    return study


def test_a_seed_grid_without_finder_trials_reports_across_seeds(tmp_path: Path) -> None:
    study = _seed_study(
        *(_seed_trial(s, lr, e) for s, lr, e in [(0, 1e-3, 0.1), (1, 1e-3, 0.3), (0, 1e-2, 0.2)])
    )
    text = markdown(study)
    assert text.startswith("# Sweep `seeds`: across seeds") and "## Finder rules" not in text
    assert "| stages.0.lr | n | seeds | error_rate | test/accuracy | test/loss |" in text
    assert "| 0.001 | 2 | 0, 1 | 0.2000 ± 0.1414 | 0.8000 ± 0.1414 | 0.2000 ± 0.1414 |" in text
    assert "| 0.01 | 1 | 0 | 0.2000 ± - | 0.8000 ± - | 0.2000 ± - |" in text
    assert "## Trials, best first" in text and "| 0 | 0 | 0.001 | 0.1000 | 0.2000 | 0.9000 |" in text
    paths = write_report(study, tmp_path)
    assert [p.name for p in paths] == ["finder_vs_search.md", "finder_vs_search.png", "seeds.csv"]
    assert len((tmp_path / "seeds.csv").read_text().splitlines()) == 3  # header + two recipes


def test_finder_trials_keep_their_tables_and_the_seed_section_follows() -> None:
    study = _seed_study(
        _seed_trial(0, 5e-3, 0.15, "lr_finder:valley"), _seed_trial(0, 1e-3, 0.1), _seed_trial(1, 1e-3, 0.2)
    )
    text = markdown(study)
    assert text.startswith("# Range-test suggestions") and "| valley | 0.005 | 0.1500 |" in text
    assert text.index("## Best searched trials") < text.index("## Across seeds") < text.index("## Compute")
    assert "| 0.001 | 2 | 0, 1 | 0.1500 ± 0.0707 |" in text  # the finder trial is not grouped


def test_one_seed_value_adds_no_seed_section(tmp_path: Path) -> None:
    study = _seed_study(_seed_trial(0, 1e-3, 0.1), _seed_trial(0, 1e-2, 0.2))
    assert "Across seeds" not in markdown(study)
    assert "seeds.csv" not in [p.name for p in write_report(study, tmp_path)]


def test_unfinished_finder_trials_fill_exactly_the_table_columns() -> None:
    """A WAITING baseline (enqueued, never run) and a failed one are rows of the finder table with
    as many cells as its header, naming their state and reason."""
    study = _study()
    study.enqueue_trial({"stages.0.lr": 2e-3}, user_attrs={"source": "lr_finder:lrlab"})
    failed = _trial(3e-3, None, "lr_finder:minimum", 4, TrialState.FAIL)
    failed.set_user_attr("error", "TrainingDiverged: loss became nan")
    study.add_trial(failed)
    text = markdown(study)
    table = text.split("## Finder rules")[1].split("\n\n")[1].splitlines()
    widths = {line.count("|") for line in table}
    assert widths == {table[0].count("|")}, table
    assert any(line.startswith("| lrlab | n/a | WAITING |") for line in table)
    assert any("| minimum | n/a | FAIL TrainingDiverged: loss became nan |" in line for line in table)


def _tables(text: str) -> list[list[str]]:
    """Every markdown table of `text`, as its lines."""
    return [block.splitlines() for block in text.split("\n\n") if block.startswith("|")]


def test_a_sweep_over_other_params_shows_them_and_keeps_every_table_well_formed(tmp_path: Path) -> None:
    """`lrlab -m lr=1e-3,1e-2 optimizer=adamw,sgd` searches no `stages.N.lr`: the tables get no empty
    LR column, each has as many delimiter cells as header cells (else markdown shows no table), the
    best trials name their `lr` and `optimizer`, and the plot shows the error against `lr`."""
    space = {
        "lr": CategoricalDistribution([1e-3, 1e-2]),
        "optimizer": CategoricalDistribution(["adamw", "sgd"]),
    }
    study = optuna.create_study(study_name="grid")
    study.set_user_attr("lrlab.metric", ["error_rate"])
    for (lr, optimizer), error in zip([(1e-2, "adamw"), (1e-2, "sgd"), (1e-3, "adamw")], [0.06, 0.45, 0.23]):
        study.add_trial(
            create_trial(
                value=error,
                params={"lr": lr, "optimizer": optimizer},
                distributions=space,
                user_attrs={"source": "search", "metrics": {"valid_loss": 2 * error}},
            )
        )
    text = markdown(study)
    tables = _tables(text)
    assert len(tables) == 2  # the finder table (with its hint) and the best trials
    for table in tables:
        assert {line.count("|") for line in table} == {table[0].count("|")}, table
        assert table[1] == "|" + "---|" * (table[0].count("|") - 1)
    assert tables[1][0] == "| trial | lr | optimizer | error_rate | valid_loss |"
    assert tables[1][2:] == [
        "| 0 | 0.01 | adamw | 0.0600 | 0.1200 |",
        "| 2 | 0.001 | adamw | 0.2300 | 0.4600 |",
        "| 1 | 0.01 | sgd | 0.4500 | 0.9000 |",
    ]
    assert "![final error_rate against learning rate](finder_vs_search.png)" in text
    paths = write_report(study, tmp_path)
    assert [p.name for p in paths] == ["finder_vs_search.md", "finder_vs_search.png"]
    assert paths[1].stat().st_size > 10_000


def test_an_lr_grid_holding_find_plots_only_its_numbers(tmp_path: Path) -> None:
    """`lrlab -m lr=find,1e-3,1e-2`: the plot places the two numeric trials; `find` has no x."""
    space = {"lr": CategoricalDistribution(["find", 1e-3, 1e-2])}
    study = optuna.create_study(study_name="mixed")
    study.set_user_attr("lrlab.metric", ["error_rate"])
    for lr, error in (("find", 0.1), (1e-3, 0.2), (1e-2, 0.15)):
        study.add_trial(create_trial(value=error, params={"lr": lr}, distributions=space))
    assert [p.name for p in write_report(study, tmp_path)] == ["finder_vs_search.md", "finder_vs_search.png"]
    only_find = optuna.create_study(study_name="find-only")
    only_find.add_trial(create_trial(value=0.1, params={"lr": "find"}, distributions=space))
    assert [p.name for p in write_report(only_find, tmp_path / "find")] == ["finder_vs_search.md"]


def _two_param_study(n: int, matters: str = "body") -> optuna.Study:
    """`n` searched trials over a head and a body LR (and a seed): the error depends on the body LR
    alone (or on the seed alone, or on nothing: 0.9 everywhere), so fANOVA must give it the
    largest share."""
    study = optuna.create_study(study_name="two")
    study.set_user_attr("lrlab.metric", ["error_rate"])
    seeds = CategoricalDistribution([0, 1, 2])
    distributions = {"stages.0.lr": LR, "stages.1.lr": LR, "seed": seeds}
    rng = random.Random(0)
    for _ in range(n):
        params = {"stages.0.lr": 10 ** rng.uniform(-5, -1), "stages.1.lr": 10 ** rng.uniform(-5, -1)}
        params["seed"] = rng.choice([0, 1, 2])
        error = {
            "body": abs(math.log10(params["stages.1.lr"]) + 3) / 10,
            "seed": 0.1 * params["seed"],
            "nothing": 0.9,
        }[matters]
        study.add_trial(
            create_trial(
                value=error, params=params, distributions=distributions, user_attrs={"source": "search"}
            )
        )
    return study


def test_the_report_says_which_searched_parameter_mattered() -> None:
    text = markdown(_two_param_study(24))
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert rows[0].startswith("| `stages.1.lr` | 0.") and float(rows[0].split("|")[2]) > 0.7
    assert {r.split("`")[1] for r in rows} == {"stages.0.lr", "stages.1.lr", "seed"}
    assert "fANOVA over the 24 complete searched trials" in text
    noise = markdown(_two_param_study(24, matters="seed"))
    first = next(line for line in noise.splitlines() if line.startswith("| `"))
    assert first.startswith("| `seed` |") and float(first.split("|")[2]) > 0.7


def test_too_few_trials_or_one_searched_parameter_get_no_importance() -> None:
    few = markdown(_two_param_study(6))
    assert (
        "Not estimated: 6 complete searched trials with a finite objective, and the estimate needs 10" in few
    )
    flat = markdown(_two_param_study(12, matters="nothing"))
    assert "Not estimated: every complete searched trial scored 0.9, so nothing is explained." in flat
    assert "Which parameters mattered" not in markdown(_study())  # one searched param


def test_a_failing_importance_estimate_is_a_line_not_a_failed_report(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise RuntimeError("Encountered zero total variance in all trees.")

    monkeypatch.setattr("lrlab.sweep.importance.importances", fail)
    text = markdown(_two_param_study(12))
    assert "Not estimated: Optuna's fANOVA failed (RuntimeError: Encountered zero total variance" in text
    assert "## Compute" in text
