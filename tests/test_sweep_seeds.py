"""Across seeds: grouping complete trials by every param but `seed`, mean and sample std of the valid
error and the test metrics, on hand-built trials; then a real seed grid and `lrlab-report`."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from conftest import run_lrlab_report
from lrlab.integrations.optuna_storage import open_storage
from lrlab.sweep.seeds import (
    Stat,
    aggregate,
    csv_rows,
    has_seed_grid,
    metric_names,
    section,
    summarize,
    trial_metrics,
    write_csv,
)

SEEDS = CategoricalDistribution([0, 1, 2])
LRS = CategoricalDistribution([1e-3, 1e-2])


def _trial(
    seed: int,
    lr: float | None,
    error: float,
    test: dict[str, float] | None,
    source: str = "search",
    state: TrialState = TrialState.COMPLETE,
) -> optuna.trial.FrozenTrial:
    return create_trial(
        state=state,
        value=error if state == TrialState.COMPLETE else None,
        params={"seed": seed} if lr is None else {"seed": seed, "lr": lr},
        distributions={"seed": SEEDS} if lr is None else {"seed": SEEDS, "lr": LRS},
        user_attrs={
            "source": source,
            "metrics": {"error_rate": error, "valid_loss": 2 * error},
            "test": test,
        },
    )


def _trials() -> list[optuna.trial.FrozenTrial]:
    """lr=1e-3 on seeds 2, 0, 1 (the test split missing on seed 1); lr=1e-2 on seed 0 only; a pruned
    trial and a finder trial, neither grouped."""
    trials = [
        _trial(2, 1e-3, 0.30, {"accuracy": 0.70, "loss": 0.9}),
        _trial(0, 1e-3, 0.10, {"test/accuracy": 0.80, "test/loss": 0.5}),  # prefixed keys work too
        _trial(0, 1e-2, 0.05, {"accuracy": 0.95, "loss": 0.2, "recall/a": 1.0}),
        _trial(1, 1e-3, 0.20, None),
        _trial(1, 1e-2, 0.50, None, state=TrialState.PRUNED),
        _trial(0, 1e-3, 0.01, {"accuracy": 0.99}, source="lr_finder:valley"),
    ]
    for number, trial in enumerate(trials):
        trial.number = number
    return trials


def test_summarize_is_mean_and_sample_std_nan_for_one_value() -> None:
    stat = summarize([0.1, 0.2, 0.3])
    assert (stat.n, stat.mean) == (3, pytest.approx(0.2))
    assert stat.std == pytest.approx(statistics.stdev([0.1, 0.2, 0.3]))
    one = summarize([0.25])
    assert (one.n, one.mean) == (1, 0.25) and math.isnan(one.std)
    assert one.text() == "0.2500 ± -" and stat.text() == "0.2000 ± 0.1000"
    assert summarize([]).n == 0 and summarize([]).text() == "n/a"


def test_trial_metrics_are_valid_error_and_prefixed_test_metrics() -> None:
    trials = _trials()
    assert trial_metrics(trials[0]) == {"error_rate": 0.30, "test/accuracy": 0.70, "test/loss": 0.9}
    assert trial_metrics(trials[1]) == {"error_rate": 0.10, "test/accuracy": 0.80, "test/loss": 0.5}
    assert trial_metrics(trials[3]) == {"error_rate": 0.20}  # test is None: no test metrics


def test_two_recipes_one_seed_and_a_missing_test_split() -> None:
    trials = _trials()
    assert has_seed_grid(trials) and not has_seed_grid(trials[1:3])  # seed 0 twice
    best, other = aggregate(trials)  # best mean valid error_rate first
    assert (best.params, best.seeds, best.trials, best.n) == ({"lr": 1e-2}, [0], [2], 1)
    assert best.stat("error_rate") == Stat(1, 0.05, best.stat("error_rate").std)
    assert math.isnan(best.stat("error_rate").std) and best.stat("test/recall/a").mean == 1.0
    # lr=1e-3: seeds sorted with their trial numbers; the pruned and the finder trials are left out.
    assert (other.params, other.seeds, other.trials, other.n) == ({"lr": 1e-3}, [0, 1, 2], [1, 3, 0], 3)
    error = other.stat("error_rate")
    assert (error.n, error.mean, error.std) == (3, pytest.approx(0.2), pytest.approx(0.1))
    accuracy = other.stat("test/accuracy")  # seed 1 has no test split: two values
    assert (accuracy.n, accuracy.mean) == (2, pytest.approx(0.75))
    assert accuracy.std == pytest.approx(statistics.stdev([0.7, 0.8]))
    assert other.stat("test/recall/a").n == 0
    assert metric_names([best, other]) == ["error_rate", "test/accuracy", "test/loss", "test/recall/a"]


def test_section_tables_and_csv(tmp_path: Path) -> None:
    recipes = aggregate(_trials())
    text = "\n".join(section(recipes, [0, 1, 2], ["experiment=smoke"]))
    assert text.startswith("## Across seeds") and "Fixed overrides: `experiment=smoke`" in text
    assert "| lr | n | seeds | error_rate | test/accuracy | test/loss |" in text
    assert "| 0.01 | 1 | 0 | 0.0500 ± - | 0.9500 ± - | 0.2000 ± - |" in text
    assert "| 0.001 | 3 | 0, 1, 2 | 0.2000 ± 0.1000 | 0.7500 ± 0.0707 (n=2) | 0.7000 ± 0.2828 (n=2) |" in text
    assert "Test recall per class:" in text and "| 0.001 | 3 | 0, 1, 2 | n/a |" in text
    columns, _ = csv_rows(recipes)
    assert columns[:6] == ["lr", "n", "seeds", "trials", "error_rate_mean", "error_rate_std"]
    with open(write_csv(recipes, tmp_path / "seeds.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["lr"], r["n"], r["seeds"], r["trials"]) for r in rows] == [
        ("0.01", "1", "0", "2"),
        ("0.001", "3", "0 1 2", "1 3 0"),
    ]
    assert math.isnan(float(rows[0]["error_rate_std"])) and float(rows[1]["error_rate_std"]) == pytest.approx(
        0.1
    )
    assert rows[1]["test/recall/a_mean"] == "" and float(rows[0]["test/recall/a_mean"]) == 1.0


def test_a_pure_seed_grid_is_one_recipe_named_all() -> None:
    trials = [_trial(s, None, e, {"accuracy": 1 - e}) for s, e in [(0, 0.1), (1, 0.3)]]
    (recipe,) = aggregate(trials)
    assert recipe.params == {} and recipe.n == 2
    assert "| all | 2 | 0, 1 | 0.2000 ± 0.1414 | 0.8000 ± 0.1414 |" in "\n".join(section([recipe], [0, 1]))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_seed_grid_reports_mean_and_std_across_seeds(run_cli, tmp_path: Path) -> None:
    """`lrlab -m experiment=smoke seed=0,1`, then `lrlab-report <sweep dir>`: the report has the
    "Across seeds" section with n=2 and test/accuracy's mean ± std, and seeds.csv one row."""
    proc = run_cli("-m", "experiment=smoke", "seed=0,1", "epochs=1", "train.checkpoints=false", timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (results,) = tmp_path.glob("multirun/**/optimization_results.yaml")
    sweep_dir = results.parent
    assert (sweep_dir / "seeds.csv").is_file()  # the sweeper's own report at the end of the sweep
    (sweep_dir / "seeds.csv").unlink()
    (sweep_dir / "finder_vs_search.md").unlink()
    regen = run_lrlab_report(str(sweep_dir), tmp_path)
    assert regen.returncode == 0, regen.stderr[-3000:]
    study = optuna.load_study(
        study_name="smoke-search", storage=open_storage(f"sqlite:///{sweep_dir / 'optuna.db'}")
    )
    accuracy = [_test_accuracy(t.user_attrs["test"]) for t in study.trials]
    expected = f"{statistics.mean(accuracy):.4f} ± {statistics.stdev(accuracy):.4f}"
    report = (sweep_dir / "finder_vs_search.md").read_text()
    assert "## Across seeds" in report
    row = next(line for line in report.splitlines() if line.startswith("| all | 2 | 0, 1 |"))
    header = report.splitlines()[report.splitlines().index(row) - 2]
    assert row.split(" | ")[header.split(" | ").index("test/accuracy")] == expected
    with open(sweep_dir / "seeds.csv", newline="") as handle:
        (line,) = list(csv.DictReader(handle))
    assert line["n"] == "2" and float(line["test/accuracy_mean"]) == pytest.approx(statistics.mean(accuracy))
    assert float(line["test/accuracy_std"]) == pytest.approx(statistics.stdev(accuracy))


def _test_accuracy(test: dict[str, Any]) -> float:
    return float(test.get("test/accuracy", test.get("accuracy")))
