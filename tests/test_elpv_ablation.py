"""The ELPV ablation runner (benchmarks/elpv_ablation.py) and the log summary it reads
(benchmarks/collect_runs.py): every row composes and validates, resuming runs only the seeds
without a test block, and the table averages valid, test, balanced accuracy and per-class recall."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import collect_runs  # noqa: E402
import elpv_ablation  # noqa: E402


def _log(path: Path, valid: float, test: float, recalls: tuple[float, ...], wall: str = "06:10") -> None:
    """An lrlab.log as a finished ELPV run writes it (the lines collect_runs reads)."""
    names = ("p=0", "p=1/3", "p=2/3", "p=1")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "\n".join(
            [
                "[2026-12-06 00:00:00,000][lrlab][INFO] - stage finetune: 15 epoch(s)",
                "  lr 0.0101 = lrlab suggestion (x1)",
                f"done in {wall} (24.1 s/epoch, 65 train images/s): valid_loss 0.61, error_rate 0.2, "
                f"accuracy {valid:.4f}",
                "test: the final model on 525 held-out images (evaluated once, after training)",
                f"  accuracy {test:.4f}  balanced accuracy 0.5500  loss 0.6000",
                "  recall: " + ", ".join(f"{n} {r:.4f}" for n, r in zip(names, recalls)),
                "  2-class accuracy (functional vs defective): 0.8700",
            ]
        )
        + "\n"
    )


def test_a_log_gives_valid_test_and_every_class_recall(tmp_path: Path) -> None:
    _log(tmp_path / "lrlab.log", 0.78, 0.80, (0.95, 0.31, 0.0, 0.67))
    row = collect_runs.parse_log(tmp_path / "lrlab.log")
    assert row["valid_acc"] == 0.78 and row["test_acc"] == 0.80 and row["wall_s"] == 370
    assert row["recall p=2/3"] == 0.0 and row["recall p=1/3"] == 0.31 and row["lrs"] == "0.0101 (lrlab)"


def test_an_lr_auto_stage_is_listed_with_its_race_winner(tmp_path: Path) -> None:
    """A stage run with lr=auto logs its race winner instead of a suggestion line; both count."""
    _log(tmp_path / "lrlab.log", 0.78, 0.80, (0.95, 0.31, 0.0, 0.67))
    text = (
        (tmp_path / "lrlab.log")
        .read_text()
        .replace(
            "test: the final",
            "[t][lrlab][INFO] -   lr 0.00391 = lr=auto race winner (9 raced epochs, 221.0s) around the "
            "lrlab suggestion 0.0013: 0.0013 finished 0.3276, 0.00391 finished 0.2952\ntest: the final",
        )
    )
    (tmp_path / "lrlab.log").write_text(text)
    assert collect_runs.parse_log(tmp_path / "lrlab.log")["lrs"] == "0.0101 (lrlab) / 0.00391 (auto)"


def test_the_table_averages_each_row_over_its_finished_seeds(tmp_path: Path) -> None:
    _log(tmp_path / "default" / "seed_0" / "lrlab.log", 0.78, 0.80, (0.9, 0.3, 0.0, 0.7))
    _log(tmp_path / "default" / "seed_1" / "lrlab.log", 0.80, 0.82, (1.0, 0.5, 0.2, 0.9))
    (tmp_path / "default" / "seed_2").mkdir()
    (tmp_path / "default" / "seed_2" / "lrlab.log").write_text("stopped before the test block\n")
    (tmp_path / "logs").mkdir()  # the runner's own logs: not a recipe
    table = collect_runs.summarise(tmp_path)
    header, _, default = table.splitlines()
    assert "recall p=2/3" in header and "valid_acc" in header and "logs" not in table
    cells = [c.strip() for c in default.split("|")]
    columns = [c.strip() for c in header.split("|")]
    assert cells[columns.index("n")] == "2/3"
    assert cells[columns.index("test_acc")] == "0.81 ± 0.014"
    assert cells[columns.index("recall p=2/3")] == "0.1 ± 0.14"


def test_the_runner_resumes_only_the_seeds_without_a_test_block(tmp_path: Path) -> None:
    _log(tmp_path / "mixup-0.2" / "seed_1" / "lrlab.log", 0.78, 0.80, (0.9, 0.3, 0.1, 0.7))
    assert elpv_ablation.missing_seeds(tmp_path, "mixup-0.2", [0, 1, 2]) == [0, 2]


def test_each_seed_is_a_plain_run_in_its_seed_folder(tmp_path: Path) -> None:
    """No multirun: rerunning some seeds of a row must not meet an Optuna study over other seeds."""
    args = elpv_ablation.command(tmp_path, "mixup-0.2", 2)
    assert args[:3] == ["model.head=classify", "stages.1.lr=find", "train.mixup_alpha=0.2"]
    assert "-m" not in args and "seed=2" in args and "tracking=none" in args
    assert f"hydra.run.dir={(tmp_path / 'mixup-0.2' / 'seed_2').as_posix()}" in args


@pytest.mark.parametrize("row", list(elpv_ablation.ROWS))
def test_every_row_composes_and_validates(compose_cfg, row: str) -> None:
    """No row fails minutes into a run on a typo or a refused combination."""
    from lrlab.app.schema import validate

    overrides = elpv_ablation.row_overrides(row)
    cfg = validate(compose_cfg(*overrides, *elpv_ablation.QUIET, "seed=0"))
    keys = [override.split("=", 1)[0] for override in overrides]
    assert len(keys) == len(set(keys)) and {"model.head", "stages.1.lr"} <= set(keys)  # baseline pinned
    for override in overrides:
        key, value = override.split("=", 1)
        if key in ("model", "experiment"):  # group choices, not values
            continue
        node = cfg
        for part in key.split("."):
            node = node[int(part)] if part.isdigit() else getattr(node, part)
        assert node == _literal(value), (key, node)  # every override reached the validated config


def _literal(value: str) -> object:
    """An override's value as Hydra reads it: a number or list where it parses as one, else the text."""
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def test_an_interrupted_seed_is_cleared_before_its_rerun(tmp_path: Path) -> None:
    """lrlab appends to an existing log, so a rerun into an unfinished folder would mix two runs."""
    partial = tmp_path / "ema-0.998" / "seed_2"
    (partial / "checkpoints").mkdir(parents=True)
    (partial / "lrlab.log").write_text("[t][lrlab][INFO] - stage unfrozen: 15 epoch(s) x 49 steps\n")
    _log(tmp_path / "ema-0.998" / "seed_0" / "lrlab.log", 0.78, 0.80, (0.9, 0.3, 0.1, 0.7))
    seeds = elpv_ablation.missing_seeds(tmp_path, "ema-0.998", [0, 2])
    elpv_ablation.clear_unfinished(tmp_path, "ema-0.998", seeds)
    assert seeds == [2] and not partial.exists()
    assert (tmp_path / "ema-0.998" / "seed_0" / "lrlab.log").is_file()


def test_runs_are_listed_by_the_lr_their_unfrozen_stage_trained_with(tmp_path: Path) -> None:
    """The by-lr listing orders finished runs by the last stage's LR and skips unfinished ones."""
    for name, lr, valid in (("high", "0.0371", 0.72), ("low", "0.0013", 0.75), ("mid", "0.0069", 0.80)):
        log = tmp_path / name / "seed_0" / "lrlab.log"
        _log(log, valid, valid, (0.9, 0.4, 0.0, 0.7))
        peak = f"  peak lr per layer group: body0={float(lr) / 10:g}, head={lr}\n"
        log.write_text(peak.replace(lr, "0.0417") + peak + log.read_text())  # the last stage's counts
    (tmp_path / "cut" / "seed_0").mkdir(parents=True)
    (tmp_path / "cut" / "seed_0" / "lrlab.log").write_text("  peak lr per layer group: head=0.0001\n")
    table = elpv_ablation.runs_by_last_lr(tmp_path).splitlines()
    assert [line.split(" | ")[1] for line in table[2:]] == ["low", "mid", "high"]
    assert table[3] == "| 0.0069 | mid | 0 | 0.8000 | 0.8000 |"
