"""The range test's defaults are the winner of the finder-vs-grid benchmark's version 1: `find_lr`
with no rule or smoothing arguments uses the (rule, curve) pair with the lowest mean test regret in
experiments/finder_benchmark/summary.csv (lrlab's own one-parameter rules scored by their
leave-one-dataset-out rows), and those rules' parameters are the ones calibrated in v1-summary.md."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

from lrlab.finder import rules
from lrlab.finder.config import FinderConfig

BENCHMARK = Path(__file__).resolve().parent.parent / "experiments" / "finder_benchmark"
# Their fixed-parameter rows use constants calibrated on every problem: scored by their _lopo rows.
IN_SAMPLE = {"descent", "bottom", "lrlab"}


def _summary() -> list[dict[str, str]]:
    with (BENCHMARK / "summary.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_the_default_pair_has_the_lowest_mean_regret() -> None:
    rows = [r for r in _summary() if r["rule"] not in IN_SAMPLE and math.isfinite(float(r["mean_regret"]))]
    lowest = min(float(r["mean_regret"]) for r in rows)
    config = FinderConfig()
    curve = rules.rule_curves(config.rule_curve)[config.suggest]
    (row,) = [r for r in rows if r["rule"].removesuffix("_lopo") == config.suggest and r["curve"] == curve]
    assert float(row["mean_regret"]) == lowest, "scored on its leave-one-dataset-out rows"
    assert config.smoothing == curve, "the curve shown is the curve the default rule reads"


def test_one_parameter_rules_use_the_calibrated_values() -> None:
    text = (BENCHMARK / "v1-summary.md").read_text()
    calibrated = (
        ("descent", rules.DESCENT_FRACTION),
        ("bottom", rules.BOTTOM_FACTOR),
        ("lrlab", rules.SUGGESTION_SCALE),
    )
    for rule, value in calibrated:
        section = text[text.index(f"### `{rule}`") :]
        chosen = float(re.search(r"on all: ([0-9.e+-]+)\.", section).group(1))
        assert value == chosen, f"{rule}: library {value}, benchmark calibration {chosen}"
