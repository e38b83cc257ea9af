"""Can one range-test curve say how far its suggestion would move on another run? Two ideas,
checked on saved curves (no training):

1. A residual bootstrap band: split the raw losses into lrlab's zero-lag curve plus residuals,
   redraw the residuals (sign flips, scaled for the smoother's leverage), re-smooth, re-apply the
   rule; the spread of the redrawn suggestions against the real spread over seeds.
2. The rise point (Smith's advice: an order of magnitude below where the loss starts to climb):
   how far the grid-best LR sits below the point where the EMA curve climbs clear of its start,
   and how much that distance varies, against the `lrlab` rule's distance from the grid best.

Curves: the finder benchmark v2's 100-step range tests of its single-stage development
configurations (3 seeds each, `v2/rangetests/<config>/n100-s<seed>/`) and the default ELPV run's
head and unfrozen stages (`v2/rangetests/elpv-default-<stage>/s<seed>/`, from
`lrlab tracking=none unfrozen_lr=find epochs=1 seed=S`); grid-best LRs from `v2/rows.csv`.

    python benchmarks/finder_curve_noise.py            # prints the tables, writes curve_noise.md
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lrlab.finder.config import FinderConfig
from lrlab.finder.flags import climb_start
from lrlab.finder.range_test import smoothed_curves
from lrlab.finder.rules import RULES, rule_curves, trim_for
from lrlab.finder.smoothing import zero_lag_smooth

ROOT = Path(__file__).resolve().parent.parent
V2 = ROOT / "experiments" / "finder_benchmark" / "v2"
CONFIG = FinderConfig()


def read_curve(path: Path) -> tuple[np.ndarray, np.ndarray, bool]:
    """(lrs, raw losses, whether the test stopped early) of a saved `lr_find*.csv`."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    lrs = np.array([float(r["lr"]) for r in rows])
    return lrs, np.array([float(r["loss"]) for r in rows]), len(rows) < CONFIG.num_iter


def suggestion(rule: str, lrs: np.ndarray, losses: np.ndarray, stopped: bool) -> float:
    """`rule`'s suggestion on raw losses smoothed as the range test smooths them."""
    curve = smoothed_curves(losses, stopped, CONFIG)[rule_curves(CONFIG.rule_curve)[rule]]
    try:
        return RULES[rule].function(*trim_for(rule, lrs, curve))
    except ValueError:
        return math.nan


def bootstrap_sd(
    rule: str, lrs: np.ndarray, losses: np.ndarray, stopped: bool, draws: int, seed: int
) -> float:
    """SD in decades of `rule`'s suggestion over `draws` redrawn curves: the zero-lag trend plus
    its residuals with random signs, each divided by sqrt(1 - the smoother's own weight)."""
    n = len(losses) - (1 if stopped else 0)
    beta = CONFIG.zero_lag_beta
    trend = zero_lag_smooth(losses[:n], beta)
    leverage = np.array([zero_lag_smooth(unit, beta)[i] for i, unit in enumerate(np.eye(n))])
    residuals = (losses[:n] - trend) / np.sqrt(1 - leverage)
    rng = np.random.default_rng(seed)
    logs = []
    for _ in range(draws):
        redrawn = losses.copy()
        redrawn[:n] = trend + rng.choice([-1.0, 1.0], n) * residuals
        value = suggestion(rule, lrs, redrawn, stopped)
        if math.isfinite(value) and value > 0:
            logs.append(math.log10(value))
    return float(np.std(logs))


def curve_sets() -> dict[str, list[Path]]:
    """Saved curves by configuration (the benchmark's, then the default ELPV run's stages)."""
    sets: dict[str, list[Path]] = {}
    for path in sorted((V2 / "rangetests").glob("*/n100-s*/lr_find.csv")):
        sets.setdefault(path.parent.parent.name, []).append(path)
    for path in sorted((V2 / "rangetests").glob("elpv-default-*/s*/lr_find.csv")):
        sets.setdefault(path.parent.parent.name, []).append(path)
    return sets


def grid_best() -> dict[str, float]:
    with (V2 / "rows.csv").open(newline="") as handle:
        return {row["config"]: float(row["best_lr"]) for row in csv.DictReader(handle)}


def band_table(sets: dict[str, list[Path]], rule: str, draws: int) -> list[str]:
    lines = [
        f"| configuration | curves | seed SD of `{rule}` (dec) | bootstrap SD, mean (dec) | per curve |",
        "|---|---:|---:|---:|---|",
    ]
    for name, paths in sets.items():
        logs, boots = [], []
        for i, path in enumerate(paths):
            lrs, losses, stopped = read_curve(path)
            logs.append(math.log10(suggestion(rule, lrs, losses, stopped)))
            boots.append(bootstrap_sd(rule, lrs, losses, stopped, draws, seed=i))
        each = " ".join(f"{b:.2f}" for b in boots)
        lines.append(
            f"| {name} | {len(paths)} | {np.std(logs, ddof=1):.2f} | {np.mean(boots):.2f} | {each} |"
        )
    return lines


def rise_table(sets: dict[str, list[Path]], best: dict[str, float]) -> tuple[list[str], np.ndarray]:
    lines = [
        "| configuration | grid best | log10(best / climb start) per seed | log10(lrlab / best) per seed |",
        "|---|---:|---|---|",
    ]
    pairs = []  # (log10(best / climb start), log10(lrlab / best), configuration index)
    for index, (name, paths) in enumerate(sets.items()):
        climbs, rule = [], []
        for path in paths:
            lrs, losses, stopped = read_curve(path)
            climbs.append(climb_start(lrs, smoothed_curves(losses, stopped, CONFIG)["ema"]))
            rule.append(suggestion("lrlab", lrs, losses, stopped))
        if name not in best:
            lines.append(
                f"| {name} | no grid | climb start per seed: {' '.join(f'{c:.2g}' for c in climbs)} | |"
            )
            continue
        rise = [math.log10(best[name] / c) if math.isfinite(c) else math.nan for c in climbs]
        rule = [math.log10(lr / best[name]) for lr in rule]
        pairs += [(r, d, index) for r, d in zip(rise, rule) if math.isfinite(r)]
        lines.append(
            f"| {name} | {best[name]:.3g} | {' '.join(f'{v:+.2f}' for v in rise)} | "
            f"{' '.join(f'{v:+.2f}' for v in rule)} |"
        )
    return lines, np.array(pairs)


def loco_error(pairs: np.ndarray) -> float:
    """Mean |log10(best / climb start) - c| with c the mean over the other configurations' curves."""
    errors = [abs(x - pairs[pairs[:, 2] != group, 0].mean()) for x, _, group in pairs]
    return float(np.mean(errors))


def main(argv: Sequence[str] | None = None) -> int:
    top = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    top.add_argument("--draws", type=int, default=200)
    top.add_argument("--out", type=Path, default=V2 / "curve_noise.md")
    opts = top.parse_args(argv)
    sets = curve_sets()
    rise_lines, pairs = rise_table(sets, grid_best())
    lines = [
        "# Can one range-test curve say how far its suggestion would move?",
        "",
        "Written by `benchmarks/finder_curve_noise.py` from saved curves (no training).",
        "",
        "## 1. Residual bootstrap band against the spread over seeds",
        "",
        *band_table(sets, "lrlab", opts.draws),
        "",
        *band_table(sets, "valley", opts.draws),
        "",
        "## 2. The climb start (where the EMA climbs clear of its start) as an anchor",
        "",
        *rise_lines,
        "",
        f"Over the {len(pairs)} curves: a rule 'climb start x 10^c' would be off by "
        f"{np.abs(pairs[:, 0] - pairs[:, 0].mean()).mean():.2f} decades on average with c fitted on "
        f"these same curves (c = {pairs[:, 0].mean():+.2f}), {loco_error(pairs):.2f} with c fitted "
        f"leaving out each curve's configuration; the `lrlab` rule (its scale chosen on benchmark v1) "
        f"by {np.abs(pairs[:, 1]).mean():.2f}.",
    ]
    text = "\n".join(lines) + "\n"
    opts.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
