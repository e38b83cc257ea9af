"""The few lines a run shows at the top of its page in the tracker's UI (MLflow's run description):
for a training, what was trained on what, each stage's LR and how it was chosen, the final valid and
the test figures; for a range test, what it tested and every rule's suggestion; and the command."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lrlab.app.build import Setup
from lrlab.app.tasks import override_key
from lrlab.finder.result import LRFinderResult

SHOWN_FINAL = ("error_rate", "accuracy", "valid_loss")
BOOKKEEPING = ("trial.", "tracking.parent_run_id")  # what a sweep adds to a trial's command line


def command(overrides: Sequence[str]) -> str:
    """The `lrlab ...` line that repeats the run on its own (a sweep's bookkeeping left out)."""
    kept = [o for o in overrides if not override_key(o).startswith(BOOKKEEPING)]
    return f"`lrlab {' '.join(kept)}`"


def _chosen_by(stage: Mapping[str, Any]) -> str:
    if stage.get("race"):
        return f"lr=auto: race around {stage['race']['suggestion']:.3g}, winner kept"
    if not stage.get("rule"):
        return "fixed"
    flag = f" (flagged: {stage['flag']})" if stage.get("flag") else ""
    return f"range test, `{stage['rule']}` rule{flag}"


def headline(setup: Setup) -> str:
    """The first line of every run's description: experiment, model, data and splits, device, seed."""
    cfg = setup.cfg
    sizes = " / ".join(f"{count:,} {split}" for split, count in setup.split_sizes.items())
    return (
        f"**{cfg.name}**: `{cfg.model.name}` on `{cfg.data.name}` ({sizes}), {setup.device}, seed {cfg.seed}"
    )


def run_description(
    setup: Setup,
    stages: Sequence[Mapping[str, Any]],
    final: Mapping[str, float],
    test: Mapping[str, float],
    overrides: Sequence[str],
    final_model: str | None = None,
) -> str:
    """Markdown: model, data and split sizes, device and seed; a row per stage (its LR and what
    chose it) and why a stage stopped early; which epoch the final model is, when not the last
    (`final_model`); the final valid metrics; the test metrics (per-class ones left to the metrics
    tab); the command line."""
    lines = [headline(setup)]
    if stages:
        lines += ["", "| stage | lr | chosen by |", "|---|---|---|"]
        lines += [f"| {s['name']} | {s['lr']:.3g} | {_chosen_by(s)} |" for s in stages]
        stops = [f"early stopping: {s['stopped_early']}" for s in stages if s.get("stopped_early")]
        lines += ["", *stops] if stops else []
    lines += ["", f"final model: {final_model}"] if final_model else []
    lines += ["", "valid (final): " + ", ".join(f"{k} {final[k]:.4f}" for k in SHOWN_FINAL if k in final)]
    overall = {k: v for k, v in test.items() if "/" not in k}
    if overall:
        lines.append("test (once, after training): " + ", ".join(f"{k} {v:.4f}" for k, v in overall.items()))
    lines += ["", command(overrides)]
    return "\n".join(lines)


def range_test_description(
    setup: Setup, tested: str, results: Mapping[str, LRFinderResult], overrides: Sequence[str]
) -> str:
    """Markdown: model and data, what the range test ramped (`tested`), and per curve (one, or one
    per layer group) its length, stop reason and every rule's suggestion with its flag."""
    lines = [headline(setup), "", tested]
    for name, result in results.items():
        label = "" if name == "all" else f", layer group {name}"
        lines += [
            "",
            f"{len(result.lrs)} steps{label}, {result.stop_reason}:",
            "",
            "| rule | lr | flag |",
            "|---|---|---|",
        ]
        for rule, lr in result.suggestions.items():
            mark = f"**{rule}** (in use)" if rule == result.method else rule
            lines.append(f"| {mark} | {lr:.3g} | {result.flags.get(rule) or ''} |")
    lines += ["", command(overrides)]
    return "\n".join(lines)
