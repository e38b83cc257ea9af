"""`benchmarks/tta_views.py`: a run's final model scored on its own valid and test splits under
each TTA, the plain scores equal to what the engine reports for that model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lrlab import Engine, load_model
from lrlab.app.build import build
from lrlab.core.types import EpochResult
from lrlab.train.checkpoints import CheckpointCallback

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import tta_views


class _Trained:
    def __init__(self, model):
        self.model, self.history = model, []


def test_each_tta_is_scored_on_valid_and_test(compose_cfg, tmp_path: Path, capsys) -> None:
    setup = build(compose_cfg("experiment=smoke", "tracking=none"))
    callback = CheckpointCallback(tmp_path / "run" / "checkpoints", setup.model_description())
    callback.on_epoch_end(_Trained(setup.model), EpochResult("full", 0, 0, 1.0, 0.5, 0.1, 0.9, 1.0))
    callback.save_final()
    rows = tta_views.score(tmp_path / "run", ["none", "flips"])
    assert [r["tta"] for r in rows] == ["none", "flips"]
    assert all(len(r["test_recall"]) == 10 and 0 <= r["valid_acc"] <= 1 for r in rows)
    assert rows[0]["valid_loss"] != pytest.approx(rows[1]["valid_loss"])  # the views change the scores
    loaded = load_model(tmp_path / "run" / "checkpoints" / "final.pt")
    plain = Engine(loaded.model, progress=False).evaluate(setup.valid_loader)
    assert rows[0]["valid_acc"] == pytest.approx(plain["accuracy"]) and rows[0][
        "valid_loss"
    ] == pytest.approx(plain["valid_loss"], rel=1e-5)
    tta_views.summary(rows, ["none", "flips"])
    assert "flips   1" in capsys.readouterr().out
