"""`task=lr_find`: the range test alone, with every rule's suggestion printed, its plot and curve
saved in the run directory and recorded (suggestions as params and metrics, stop reason as a tag)."""

from __future__ import annotations

import logging

from lrlab.app.job import Job, RunResult
from lrlab.app.lifecycle import TrackedRun, tracked_run
from lrlab.app.run_description import range_test_description
from lrlab.core.distributed import is_main
from lrlab.core.optim import group_lrs, set_lrs
from lrlab.finder.range_test import find_lr
from lrlab.finder.result import LRFinderResult
from lrlab.integrations.tracking import Tracker
from lrlab.train.stages import enter_stage, first_training_stage, trainable_count

log = logging.getLogger("lrlab")


def run(job: Job) -> RunResult:
    return tracked_run(job, lr_find)


def lr_find(run: TrackedRun) -> RunResult:
    """One range test (or, with `lr_finder.per_group`, one per layer group) from the built state,
    on what the first training stage trains (so its suggestion is the one that stage's `lr=find`
    would take), as fastai's `lr_find` on a freshly built learner tests its frozen body."""
    setup, cfg = run.setup, run.setup.cfg
    first = first_training_stage(setup.stages)
    tested = "range test of the model as built (no stage trains)"
    if first is not None:
        index, stage = first
        trainable, ratios = enter_stage(run.engine, setup.groups, stage)
        # The stage's LR ratios at the ramp's start: with per_group, the groups not swept keep it.
        start = [ratio * setup.finder.start_lr for ratio in ratios]
        set_lrs(setup.optimizer, group_lrs(setup.optimizer, start))
        names = ", ".join(setup.groups[i].name for i in trainable)
        tested = (
            f"range test of stage {index} ({stage.name}), as its lr=find runs it: trainable {names} "
            f"({trainable_count(setup.model):,} params), lr_spread {stage.lr_spread:g}"
        )
        log.info(tested)
        run.tracker.set_tags({"lr_find.stage": stage.name})
    found = find_lr(
        setup.model,
        setup.train_loader,
        setup.optimizer,
        engine=run.engine,
        config=setup.finder,
        seed=cfg.seed,
        val_loader=setup.valid_loader,
    )
    results = found if isinstance(found, dict) else {"all": found}
    if not is_main():  # every rank has the same curves; rank 0 writes them
        return RunResult([], {}, extra={"lr_finder": results})
    run.job.output_dir.mkdir(parents=True, exist_ok=True)
    final: dict[str, float] = {}
    for name, res in results.items():
        final.update(_report(run, name, res))
    for key, value in final.items():
        run.tracker.log_metric(key, value)
    run.tracker.set_description(range_test_description(setup, tested, results, run.job.overrides))
    run.tracker.flush()
    return RunResult([], final, extra={"lr_finder": results})


def _report(run: TrackedRun, name: str, res: LRFinderResult) -> dict[str, float]:
    """Print one curve's suggestions, save its plot and CSV, record them; returns its metrics."""
    cfg, tracker = run.setup.cfg, run.tracker
    label = "" if name == "all" else f" (layer group {name})"
    log.info(f"\nLR range test{label}: {len(res.lrs)} steps, {res.stop_reason}, {res.seconds:.1f}s")
    log.info(res.table())
    suffix = "" if name == "all" else f"_{name}"
    named = "" if cfg.name == cfg.data.name else f"{cfg.name}: "  # the experiment's name when it says more
    title = f"{named}{cfg.model.name} on {cfg.data.name}{label}"
    png, csv_path = res.save(run.job.output_dir, f"lr_find{suffix}", title=title)
    log.info(f"plot: {png}")
    prefix = "lr_find" if name == "all" else f"lr_find/{name}"
    metrics: dict[str, float] = {}
    for rule, lr in res.suggestions.items():
        metrics[f"{prefix}/suggested_{rule}"] = lr
        if rule in res.spread:
            metrics[f"{prefix}/log10_iqr_{rule}"] = res.spread[rule]["log10_iqr"]
    metrics[f"{prefix}/seconds"] = res.seconds
    _record(tracker, prefix, res, (png, csv_path))
    return metrics


def _record(tracker: Tracker, prefix: str, res: LRFinderResult, files: tuple) -> None:
    for path in files:
        tracker.log_artifact(path, "lr_finder")
    tracker.log_params({f"{prefix}.suggestion.{rule}": f"{lr:.6g}" for rule, lr in res.suggestions.items()})
    tracker.set_tags({f"{prefix}.stop_reason": res.stop_reason})
