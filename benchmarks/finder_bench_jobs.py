"""The finder benchmark's lrlab multiruns: one Optuna study per configuration and kind (grid,
refine or a contender), with its overrides, storage and sweep directory. Shared by the runner
(`finder_vs_grid.py`), the report and the race replay."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finder_bench_configs import CONTENDERS, BenchConfig


@dataclass(frozen=True)
class Job:
    """One lrlab multirun: a study of one configuration and kind over the seeds."""

    config: str
    kind: str
    args: tuple[str, ...]
    storage: str
    study: str
    trials: int


def grid_lrs(config: BenchConfig, step: float = 0.5) -> list[float]:
    """The configuration's grid, `step` decades apart, to 3 significant digits."""
    low, high = config.grid
    return [float(f"{10**x:.3g}") for x in np.arange(low, high + 1e-9, step)]


def storage_url(bench: Path, config: str) -> str:
    return f"sqlite:///{(bench / 'studies' / f'{config}.db').as_posix()}"


def lr_list(lrs: Sequence[float]) -> str:
    return ",".join(f"{x:.3g}" for x in lrs)


def merged(*groups: Sequence[str]) -> list[str]:
    """Overrides in order, a later value of the same key replacing the earlier one in its place
    (Hydra refuses two values for one config group, e.g. optimizer=sgd optimizer=prodigy); a group
    chosen again drops the earlier group's keys (optimizer.momentum=0 does not apply to prodigy)."""
    out: dict[str, str] = {}
    for override in (o for group in groups for o in group):
        key = override.split("=", 1)[0]
        if key in out and "." not in key:
            out = {k: v for k, v in out.items() if not k.startswith(f"{key}.")}
        out[key] = override
    return list(out.values())


def make_job(opts: argparse.Namespace, config: BenchConfig, kind: str, lrs: Sequence[float] = ()) -> Job:
    """The lrlab multirun of one study: every override, the study's name, storage and sweep dir."""
    name, storage = f"{config.name}-{kind}", storage_url(opts.bench_dir, config.name)
    if kind in ("grid", "refine"):
        lrs = lrs or (opts.grid_lrs if opts.grid_lrs and kind == "grid" else grid_lrs(config))
        choice: tuple[str, ...] = (f"stages.{config.stage}.lr={lr_list(lrs)}",)
    else:
        choice = CONTENDERS[kind](config)
    args = (
        "-m",
        f"experiment=bench_{config.problem}",
        *merged(config.overrides, choice),
        f"seed={','.join(str(s) for s in opts.seeds)}",
        f"hydra.sweeper.study_name={name}",
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweep.dir={(opts.bench_dir / 'runs' / config.name / kind).as_posix()}",
        "hydra.sweep.subdir=trial_${trial.number}",
        *opts.set,
    )
    trials = len(opts.seeds) * (len(lrs) if kind in ("grid", "refine") else 1)
    return Job(config.name, kind, args, storage, name, trials)
