"""The report of the finder benchmark v2 (`finder_vs_grid.py analyse`): per configuration a
markdown table and a PNG (mean valid and test error against the graded stage's LR, each
contender's choices marked), a summary over the development configurations with bootstrap CIs,
the confirmation row on its own, and one CSV row per (configuration, seed, contender)."""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from finder_bench_configs import CONTENDERS, BenchConfig
from finder_bench_jobs import make_job
from finder_bench_scoring import CLASSES, BenchRun, bootstrap_ci, load_runs
from finder_grid_runs import settled_trials

GOOD_PT = 0.5  # a case is good within max(0.5 pt, 1 seed-SE) of the grid best
DEFAULTS = ("lrlab", "auto")  # the ways lrlab chooses an LR, compared against every other contender
CONSTANT = "constant"
REFERENCE_OFFSETS = (-0.5, -0.25, 0.25, 0.5)  # decades from the grid best: the noise-floor rows
# issue 21's Done-when, per default: mean test regret, share of good cases, compute vs the grid
TARGET_REGRET_PT, TARGET_GOOD = 0.5, 0.75
TARGET_COMPUTE = {"lrlab": 1 / 8, "auto": 1 / 4}
RIVALS = ("constant", "valley", "prodigy", "schedulefree")  # what the default must beat or name

DEFINITIONS = f"""\
Grid best: the LR of the grid (half-decade) and its refinement (quarter-decade around the best)
with the lowest mean *valid* error over seeds. Regret of a contender in a (configuration, seed)
case: its test error minus the same seed's test error at the grid best, in points (negative: it
tested better than valid's choice). A case is good when the regret is at most max({GOOD_PT} pt,
1 seed-SE), the seed-SE being the standard error over seeds of the test error at the grid best.
Every contender trained at its own choice (no interpolation). `constant`: the half-decade LR with
the lowest mean valid regret on the *other* development configurations of the same optimizer
(leave-one-configuration-out), read from this configuration's grid run at that LR. A diverged run
scores the error of guessing. Compute: a case's training in epochs (its stages' epochs, its range
tests' steps as epochs, an lr=auto race's extra epochs) over the 9 half-decade grid runs' epochs;
wall: its wall-clock seconds (with model build and evaluation) over the same seed's 9 grid runs.
95% CIs: percentile bootstrap over configurations, then seeds."""


@dataclass
class ConfigResult:
    """One configuration's grid and contender runs, and the scores of each contender."""

    config: BenchConfig
    grid: list[BenchRun]
    contenders: dict[str, list[BenchRun]] = field(default_factory=dict)

    def lrs(self) -> list[float]:
        return sorted({r.lr for r in self.grid})

    def mean(self, lr: float, attr: str) -> float:
        return float(np.mean([getattr(r, attr) for r in self.grid if r.lr == lr]))

    @property
    def best_lr(self) -> float:
        return min(self.lrs(), key=lambda lr: (self.mean(lr, "valid_error"), lr))

    def at(self, lr: float) -> dict[int, BenchRun]:
        return {r.seed: r for r in self.grid if math.isclose(r.lr, lr, rel_tol=1e-6)}

    @property
    def seed_se(self) -> float:
        errors = [r.test_error for r in self.at(self.best_lr).values()]
        return float(np.std(errors, ddof=1) / math.sqrt(len(errors))) if len(errors) > 1 else 0.0

    def half_decade(self) -> list[float]:
        low = self.config.grid[0]
        steps = [(math.log10(lr) - low) * 2 for lr in self.lrs()]
        return [lr for lr, x in zip(self.lrs(), steps) if abs(x - round(x)) < 1e-3]

    def valid_regret(self, lr: float) -> float:
        return self.mean(lr, "valid_error") - self.mean(self.best_lr, "valid_error")

    def grid_seconds(self, seed: int) -> float:
        return sum(r.seconds for r in self.grid if r.seed == seed and r.lr in self.half_decade())


def load_result(opts: argparse.Namespace, config: BenchConfig) -> ConfigResult | None:
    """The configuration's settled runs; None until its whole grid has settled (a partial grid's
    best LR, and the span and constants read from it, would be wrong)."""
    full = make_job(opts, config, "grid")
    if settled_trials(full.storage, full.study) < full.trials:
        return None
    classes = CLASSES[config.problem]
    grid = []
    for kind in ("grid", "refine"):
        job = make_job(opts, config, kind, [1.0])
        if settled_trials(job.storage, job.study):
            grid += load_runs(job.storage, job.study, config.stage, classes)
    if not grid:
        return None
    result = ConfigResult(config, grid)
    for kind in CONTENDERS:
        job = make_job(opts, config, kind)
        if settled_trials(job.storage, job.study):
            result.contenders[kind] = load_runs(job.storage, job.study, config.stage, classes)
    return result


def choose_constants(results: Sequence[ConfigResult]) -> dict[str, float]:
    """Per configuration, the leave-one-configuration-out constant: among the half-decade LRs every
    other development configuration of the same optimizer has, the lowest mean valid regret."""
    out = {}
    for mine in results:
        others = [r for r in results if r is not mine and r.config.optimizer == mine.config.optimizer]
        others = [r for r in others if not r.config.confirmation]
        if not others:
            continue
        shared = set(mine.half_decade()).intersection(*(set(r.half_decade()) for r in others))
        if shared:
            out[mine.config.name] = min(
                sorted(shared), key=lambda lr: float(np.mean([r.valid_regret(lr) for r in others]))
            )
    return out


def case_rows(result: ConfigResult, constant: float | None) -> list[dict[str, Any]]:
    """One row per (seed, contender): LR, test error, regret (points), good, compute ratio."""
    best, se = result.at(result.best_lr), result.seed_se
    contenders = dict(result.contenders)
    if constant is not None:
        contenders[CONSTANT] = list(result.at(constant).values())
    rows = []
    for name, runs in contenders.items():
        for run in runs:
            if run.seed not in best:
                continue
            regret = 100 * (run.test_error - best[run.seed].test_error)
            grid_seconds, epochs = result.grid_seconds(run.seed), result.config.train_epochs
            rows.append(
                {
                    "config": result.config.name,
                    "confirmation": result.config.confirmation,
                    "seed": run.seed,
                    "contender": name,
                    "lr": run.lr,
                    "best_lr": result.best_lr,
                    "decades": math.log10(run.lr / result.best_lr) if run.lr > 0 else math.nan,
                    "test_error": run.test_error,
                    "best_test_error": best[run.seed].test_error,
                    "regret_pt": regret,
                    "good": regret <= max(GOOD_PT, 100 * se),
                    "diverged": run.diverged,
                    "seconds": run.seconds,
                    "compute": (epochs + run.extra_epochs) / (9 * epochs) if epochs else math.nan,
                    "wall_compute": run.seconds / grid_seconds if grid_seconds else math.nan,
                }
            )
    return rows


def neighbour_rows(result: ConfigResult) -> list[dict[str, Any]]:
    """The grid's own runs a quarter and a half decade either side of its best, scored as if a
    contender had chosen them: the noise floor of the regret and `good` targets (how much a choice
    that misses the grid best by one refined grid step costs, on these seeds)."""
    lrs, best = result.lrs(), math.log10(result.best_lr)
    rows = []
    for offset in REFERENCE_OFFSETS:
        lr = next((x for x in lrs if math.isclose(math.log10(x) - best, offset, abs_tol=0.02)), None)
        if lr is not None:
            runs = {f"grid {offset:+g} dec": list(result.at(lr).values())}
            rows += case_rows(replace(result, contenders=runs), None)
    return rows


def rule_rows(result: ConfigResult) -> list[dict[str, Any]]:
    """Every rule's suggestion as the `lrlab` contender's range tests recorded it, per seed, in
    decades from the grid best (a diagnostic: only the contenders' own choices were trained)."""
    return [
        {
            "config": result.config.name,
            "seed": run.seed,
            "rule": rule,
            "lr": lr,
            "decades": math.log10(lr / result.best_lr) if lr > 0 and math.isfinite(lr) else math.nan,
        }
        for run in result.contenders.get("lrlab", [])
        for rule, lr in (run.suggestions or {}).items()
    ]


def rules_markdown(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Per rule: median and mean |decades| of its suggestion from the grid best, and how often it
    lands within a quarter decade (the refined grid's step)."""
    lines = ["", "## Every rule's suggestion against the grid best (not trained)", ""]
    lines += [
        "| rule | cases | median decades | mean abs decades | within 0.25 decades |",
        "|---|---:|---:|---:|---:|",
    ]
    for rule in sorted({r["rule"] for r in rows}):
        d = np.array([r["decades"] for r in rows if r["rule"] == rule and math.isfinite(r["decades"])])
        if len(d):
            lines.append(
                f"| {rule} | {len(d)} | {np.median(d):+.2f} | {np.abs(d).mean():.2f} | "
                f"{100 * np.mean(np.abs(d) <= 0.25 + 1e-9):.0f}% |"
            )
    return lines


def _by_config(rows: Sequence[dict[str, Any]], contender: str, key: str) -> list[list[float]]:
    groups: dict[str, list[float]] = {}
    for row in rows:
        if row["contender"] == contender:
            groups.setdefault(row["config"], []).append(float(row[key]))
    return list(groups.values())


def summary_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per contender over configurations and seeds: mean regret with CI, good fraction, compute."""
    out = []
    for name in sorted({r["contender"] for r in rows}):
        mine = [r for r in rows if r["contender"] == name]
        mean, low, high = bootstrap_ci(_by_config(rows, name, "regret_pt"))
        out.append(
            {
                "contender": name,
                "configs": len({r["config"] for r in mine}),
                "cases": len(mine),
                "mean_regret_pt": mean,
                "ci_low": low,
                "ci_high": high,
                "good": float(np.mean([r["good"] for r in mine])),
                "diverged": sum(r["diverged"] for r in mine),
                "compute": float(np.nanmean([r["compute"] for r in mine])),
                "wall_compute": float(np.nanmean([r["wall_compute"] for r in mine])),
            }
        )
    return sorted(out, key=lambda s: s["mean_regret_pt"])


def paired_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each default (lrlab, auto) against every other contender: the mean paired difference of
    regret over shared (configuration, seed) cases (negative: the default is better), its CI and
    how many cases the default wins."""
    table = {(r["config"], r["seed"], r["contender"]): r["regret_pt"] for r in rows}
    names = sorted({r["contender"] for r in rows})
    out = []
    for default in (d for d in DEFAULTS if d in names):
        for other in (n for n in names if n != default):
            diffs: dict[str, list[float]] = {}
            for (config, seed, name), regret in table.items():
                if name == default and (config, seed, other) in table:
                    diffs.setdefault(config, []).append(regret - table[(config, seed, other)])
            if not diffs:
                continue
            mean, low, high = bootstrap_ci(list(diffs.values()))
            flat = [d for ds in diffs.values() for d in ds]
            out.append(
                {
                    "default": default,
                    "versus": other,
                    "cases": len(flat),
                    "mean_diff_pt": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "wins": sum(d < 0 for d in flat),
                    "ties": sum(d == 0 for d in flat),
                }
            )
    return out


def _fmt(value: float, digits: int = 2) -> str:
    return "nan" if not math.isfinite(value) else f"{value:+.{digits}f}"


def config_markdown(result: ConfigResult, rows: Sequence[dict[str, Any]]) -> str:
    config = result.config
    lines = [
        f"# {config.name}{' (confirmation row)' if config.confirmation else ''}",
        "",
        config.description,
        "",
        f"Grid best LR {result.best_lr:.3g} (seed-SE of its test error {100 * result.seed_se:.2f} pt).",
        "",
        "| LR | seeds | mean valid error | mean test error |",
        "|---:|---:|---:|---:|",
    ]
    for lr in result.lrs():
        mark = " **best**" if lr == result.best_lr else ""
        valid, test = result.mean(lr, "valid_error"), result.mean(lr, "test_error")
        lines.append(f"| {lr:.3g}{mark} | {len(result.at(lr))} | {valid:.4f} | {test:.4f} |")
    lines += [
        "",
        "| contender | seed | LR | test error | regret (pt) | good | compute | wall |",
        "|---|---:|---:|---:|---:|:---:|---:|---:|",
    ]
    for row in sorted(rows, key=lambda r: (r["contender"], r["seed"])):
        lines.append(
            f"| {row['contender']} | {row['seed']} | {row['lr']:.3g} | {row['test_error']:.4f} | "
            f"{_fmt(row['regret_pt'])} | {'yes' if row['good'] else 'no'} | {row['compute']:.3f} | "
            f"{row['wall_compute']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def plot_config(result: ConfigResult, rows: Sequence[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lrs = result.lrs()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(lrs, [100 * result.mean(lr, "valid_error") for lr in lrs], "o-", label="grid, mean valid error")
    ax.plot(lrs, [100 * result.mean(lr, "test_error") for lr in lrs], "s--", label="grid, mean test error")
    ax.axvline(result.best_lr, color="grey", lw=0.8, ls=":")
    markers = "^v<>Dpx*"
    for i, name in enumerate(sorted({r["contender"] for r in rows})):
        mine = [r for r in rows if r["contender"] == name]
        ax.scatter(
            [r["lr"] for r in mine], [100 * r["test_error"] for r in mine], marker=markers[i % 8], label=name
        )
    ax.set(xscale="log", xlabel="LR of the graded stage", ylabel="error (%)", title=result.config.name)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_summary(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Each contender's mean test regret per development configuration (dots) and over them (bar,
    with its 95% CI): where a contender wins and where it loses, at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dev = [r for r in rows if not r["confirmation"]]
    summaries = summary_rows(dev)[::-1]  # the lowest regret on top
    configs = sorted({r["config"] for r in dev})
    fig, ax = plt.subplots(figsize=(11, 0.5 * len(summaries) + 1.5))
    for y, s in enumerate(summaries):
        name = s["contender"]
        ax.barh(y, s["mean_regret_pt"], color="lightsteelblue", height=0.6)
        ax.errorbar(
            s["mean_regret_pt"],
            y,
            xerr=[[s["mean_regret_pt"] - s["ci_low"]], [s["ci_high"] - s["mean_regret_pt"]]],
            color="black",
            capsize=3,
            lw=1,
        )
        for i, config in enumerate(configs):
            mine = [r["regret_pt"] for r in dev if r["contender"] == name and r["config"] == config]
            if mine:
                ax.scatter(
                    np.mean(mine),
                    y + 0.25 * (i / max(1, len(configs) - 1) - 0.5),
                    s=12,
                    color=f"C{i % 10}",
                    label=config if y == 0 else None,
                )
    ax.axvline(0, color="grey", lw=0.8)
    ax.axvline(TARGET_REGRET_PT, color="grey", lw=0.8, ls=":")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set(
        yticks=range(len(summaries)),
        yticklabels=[s["contender"] for s in summaries],
        xlabel="test regret vs the grid best (pt, symlog)",
        title="Finder benchmark v2: development configurations",
    )
    ax.legend(
        fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="configuration", title_fontsize=7
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary_markdown(results: Sequence[ConfigResult], rows: Sequence[dict[str, Any]]) -> str:
    dev = [r for r in rows if not r["confirmation"]]
    lines = ["# Finder benchmark v2", "", DEFINITIONS, "", "## Grid-best LR per configuration", ""]
    lines += ["| configuration | optimizer | grid best LR | seed-SE (pt) |", "|---|---|---:|---:|"]
    for result in results:
        tag = " (confirmation)" if result.config.confirmation else ""
        lines.append(
            f"| {result.config.name}{tag} | {result.config.optimizer} | {result.best_lr:.3g} | "
            f"{100 * result.seed_se:.2f} |"
        )
    spans = [math.log10(r.best_lr) for r in results if not r.config.confirmation]
    if spans:
        lines += ["", f"Development grid-best LRs span {max(spans) - min(spans):.2f} decades."]
        lines += ["", "![mean test regret per contender and configuration](summary.png)"]
    for title, subset in (
        ("Development configurations", dev),
        ("Confirmation row (run once)", [r for r in rows if r["confirmation"]]),
    ):
        if not subset:
            continue
        lines += [
            "",
            f"## {title}",
            "",
            "| contender | configs | cases | mean regret (pt) | 95% CI | good | diverged | compute | wall |",
        ]
        lines.append("|---|---:|---:|---:|---|---:|---:|---:|---:|")
        summaries, pairs = summary_rows(subset), paired_rows(subset)
        for s in summaries:
            lines.append(
                f"| {s['contender']} | {s['configs']} | {s['cases']} | {_fmt(s['mean_regret_pt'])} | "
                f"[{_fmt(s['ci_low'])}, {_fmt(s['ci_high'])}] | {100 * s['good']:.0f}% | {s['diverged']} | "
                f"{s['compute']:.3f} | {s['wall_compute']:.3f} |"
            )
        lines += [
            "",
            "| default | versus | cases | mean difference (pt) | 95% CI | wins | ties |",
            "|---|---|---:|---:|---|---:|---:|",
        ]
        for p in pairs:
            lines.append(
                f"| {p['default']} | {p['versus']} | {p['cases']} | {_fmt(p['mean_diff_pt'])} | "
                f"[{_fmt(p['ci_low'])}, {_fmt(p['ci_high'])}] | {p['wins']} | {p['ties']} |"
            )
        lines += targets_markdown(summaries, pairs)
    return "\n".join(lines) + "\n"


def _verdict(ci_low: float, ci_high: float) -> str:
    return "better" if ci_high < 0 else "worse" if ci_low > 0 else "not separated"


def targets_markdown(summaries: Sequence[dict[str, Any]], pairs: Sequence[dict[str, Any]]) -> list[str]:
    """The issue's targets for each way lrlab chooses an LR, met or not, from the tables above
    (`summary_rows`, `paired_rows`): mean regret, good share, compute, and the paired difference
    against each rival (`better` only when the 95% CI lies below 0)."""
    summary = {s["contender"]: s for s in summaries}
    paired = {(p["default"], p["versus"]): p for p in pairs}
    defaults = [d for d in DEFAULTS if d in summary]
    if not defaults:
        return []
    lines = ["", "| target | " + " | ".join(defaults) + " |", "|---|" + "---|" * len(defaults)]

    def row(label: str, cell) -> None:
        lines.append(f"| {label} | " + " | ".join(cell(d) for d in defaults) + " |")

    def met(ok: bool) -> str:
        return "met" if ok else "**not met**"

    row(
        f"mean test regret <= {TARGET_REGRET_PT} pt",
        lambda d: (
            f"{_fmt(summary[d]['mean_regret_pt'])}: {met(summary[d]['mean_regret_pt'] <= TARGET_REGRET_PT)}"
        ),
    )
    row(
        f"good in >= {100 * TARGET_GOOD:.0f}% of cases",
        lambda d: f"{100 * summary[d]['good']:.0f}%: {met(summary[d]['good'] >= TARGET_GOOD)}",
    )
    row(
        "compute vs the 9-point grid (lrlab <= 1/8, auto <= 1/4)",
        lambda d: f"{summary[d]['compute']:.3f}: {met(summary[d]['compute'] <= TARGET_COMPUTE[d])}",
    )
    for rival in RIVALS:

        def versus(d: str, rival: str = rival) -> str:
            p = paired.get((d, rival))
            if p is None:
                return "no cases"
            verdict = _verdict(p["ci_low"], p["ci_high"])
            return f"{_fmt(p['mean_diff_pt'])} [{_fmt(p['ci_low'])}, {_fmt(p['ci_high'])}]: {verdict}"

        row(f"against {rival} (paired, pt)", versus)
    return lines


def reference_markdown(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The noise-floor table: the grid's neighbours of its best, scored like contenders."""
    if not rows:
        return []
    lines = [
        "",
        "## Reference: the grid's own neighbours of its best (what missing by one step costs)",
        "",
        "A choice a quarter decade from the grid best is one refined grid step off; these rows score",
        "the grid's runs there exactly as the contenders are scored, so they bound what any way of",
        "choosing the LR with that precision can reach on these seeds.",
        "",
        "| reference | configs | cases | mean regret (pt) | 95% CI | good |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for s in sorted(summary_rows(rows), key=lambda s: float(s["contender"].split()[1])):
        lines.append(
            f"| {s['contender']} | {s['configs']} | {s['cases']} | {_fmt(s['mean_regret_pt'])} | "
            f"[{_fmt(s['ci_low'])}, {_fmt(s['ci_high'])}] | {100 * s['good']:.0f}% |"
        )
    return lines


def write_report(opts: argparse.Namespace, configs: Sequence[BenchConfig]) -> list[Path]:
    """Write summary.md, rows.csv and per-configuration tables and plots under `opts.out/v2`;
    the paths written, summary first ([] when no grid has run yet)."""
    results = [r for r in (load_result(opts, c) for c in configs) if r is not None]
    if not results:
        return []
    constants = choose_constants(results)
    out = Path(opts.out) / "v2"
    out.mkdir(parents=True, exist_ok=True)
    rows, paths = [], [out / "summary.md", out / "rows.csv"]
    for result in results:
        mine = case_rows(result, constants.get(result.config.name))
        rows += mine
        md, png = out / f"{result.config.name}.md", out / f"{result.config.name}.png"
        md.write_text(config_markdown(result, mine))
        plot_config(result, mine, png)
        paths += [md, png]
    rules = [row for r in results if not r.config.confirmation for row in rule_rows(r)]
    reference = [row for r in results if not r.config.confirmation for row in neighbour_rows(r)]
    paths[0].write_text(
        summary_markdown(results, rows)
        + "\n".join(reference_markdown(reference) + rules_markdown(rules))
        + "\n"
    )
    if any(not r["confirmation"] for r in rows):
        plot_summary(rows, out / "summary.png")
        paths.append(out / "summary.png")
    with paths[1].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["config"])
        writer.writeheader()
        writer.writerows(rows)
    return paths
