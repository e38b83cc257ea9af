"""The run description a training leaves on its MLflow page, from fabricated stages."""

from __future__ import annotations

from types import SimpleNamespace

from omegaconf import OmegaConf

from lrlab.app.run_description import run_description


def test_each_stage_says_what_chose_its_lr() -> None:
    cfg = OmegaConf.create({"name": "elpv", "seed": 3, "model": {"name": "lite0"}, "data": {"name": "elpv"}})
    setup = SimpleNamespace(cfg=cfg, split_sizes={"train": 1574, "valid": 525, "test": 525}, device="cuda:0")
    stages = [
        {"name": "head", "lr": 0.0123, "rule": "lrlab", "flag": None},
        {"name": "unfrozen", "lr": 2e-3, "rule": "lrlab", "flag": "diverged tail"},
        {"name": "more", "lr": 6e-3, "rule": "lrlab", "race": {"suggestion": 2e-3}},
        {"name": "fixed", "lr": 1e-4, "rule": None},
    ]
    text = run_description(
        setup, stages, {"error_rate": 0.2, "accuracy": 0.8}, {"accuracy": 0.79, "recall/0": 1.0}, ["seed=3"]
    )
    assert (
        text.splitlines()[0]
        == "**elpv**: `lite0` on `elpv` (1,574 train / 525 valid / 525 test), cuda:0, seed 3"
    )
    assert "| head | 0.0123 | range test, `lrlab` rule |" in text
    assert "| unfrozen | 0.002 | range test, `lrlab` rule (flagged: diverged tail) |" in text
    assert (
        "| more | 0.006 | lr=auto: race around 0.002, winner kept |" in text
        and "| fixed | 0.0001 | fixed |" in text
    )
    assert "valid (final): error_rate 0.2000, accuracy 0.8000" in text
    assert "test (once, after training): accuracy 0.7900" in text and "recall" not in text
    assert text.endswith("`lrlab seed=3`") and "early stopping" not in text and "final model" not in text
    stages[1]["stopped_early"] = (
        "valid_loss did not improve on 0.3 for 2 epoch(s); stage unfrozen stopped after epoch 5"
    )
    restored = "epoch 3 (unfrozen), the best by valid_loss (train.restore_best)"
    text = run_description(setup, stages, {"error_rate": 0.2}, {}, ["seed=3"], restored)
    assert (
        "\n\nearly stopping: valid_loss did not improve on 0.3 for 2 epoch(s); stage unfrozen stopped" in text
    )
    assert f"\n\nfinal model: {restored}\n\nvalid (final): error_rate 0.2000" in text
    in_a_sweep = ["seed=3", "trial.study=s", "trial.number=4", "tracking.parent_run_id=abc"]
    assert run_description(setup, [], {}, {}, in_a_sweep).endswith("\n`lrlab seed=3`")


def test_a_long_report_is_cut_at_a_line_for_the_sweeps_page() -> None:
    from lrlab.sweep.parent import DESCRIPTION_CHARS, report_headline

    report = (
        "# Sweep\n"
        + "".join(f"| row {i} | {'x' * 50} |\n" for i in range(400))
        + "## Trials, best first\n| 1 |"
    )
    text = report_headline(report, "r.md")
    assert len(text) < DESCRIPTION_CHARS + 100 and "(cut short)" in text and "## Trials" not in text
    assert all(line.endswith("|") for line in text.split("\n\n(cut short)")[0].splitlines()[1:])
