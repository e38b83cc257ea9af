"""The `lrlab` command: a Hydra app over the packaged config tree.

Importing this module registers the config schemas in Hydra's ConfigStore (the config tree
extends them), so anything that composes lrlab's config, in or out of the CLI, imports it first.

Exit statuses: 0 success; 2 bad input or configuration (an LrlabError, or any error Hydra reports
before a job starts, e.g. an unknown config option), with one paragraph on stderr and the full
traceback in the job's log file only; 1 a failure during the work (a sweep stopped by
max_failure_rate included); 130 SIGINT (Ctrl-C) and 143 SIGTERM, with one line on stderr. In a
multirun a job's error is re-raised so the sweeper can record the failed trial.
"""

from __future__ import annotations

import difflib
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lrlab.app.composition import MORE_CONFIG_ARGS
from lrlab.app.data_overrides import data_key_problem
from lrlab.app.key_checks import misspelt_key
from lrlab.app.lr_free import complete_lr_free_args
from lrlab.app.schema import LrlabConfig, rank_suffix, register_schemas
from lrlab.app.stage_overrides import stage_override_problem
from lrlab.core.launch import launched_rank, launched_world_size
from lrlab.data.registry import registered_sources
from lrlab.errors import LrlabError, disk_full

register_schemas()
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")

log = logging.getLogger("lrlab")
trace_log = logging.getLogger("lrlab.trace")
_work_started = False  # set when the first job starts: later Hydra errors are failures, not bad input


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM during a run (the run is ended KILLED); `signum` says which."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(f"signal {signum}")
        self.signum = int(signum)


def run_task(cfg: DictConfig) -> dict[str, Any]:
    """Run the configured task inside a Hydra job; returns `RunResult.summary()` (final metrics,
    seconds, per-stage LRs), which the sweeper turns into the trial's objective values."""
    from lrlab.app.run import run_experiment
    from lrlab.core import distributed
    from lrlab.core.host_memory import hold_freed_memory

    global _work_started
    _work_started = True
    hydra_cfg = HydraConfig.get()
    signal.signal(signal.SIGTERM, _interrupt)
    hold_freed_memory()
    try:
        _quiet_other_ranks()
        result = run_experiment(
            cfg,
            output_dir=hydra_cfg.runtime.output_dir,
            launch_dir=hydra_cfg.runtime.cwd,
            overrides=list(hydra_cfg.overrides.task),
        )
        distributed.barrier()  # rank 0 may still be logging to MLflow: leave together
    except LrlabError as exc:
        trace_log.exception("lrlab stopped on bad input")
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise
        log_file = Path(hydra_cfg.runtime.output_dir) / f"{hydra_cfg.job.name}{rank_suffix()}.log"
        print(f"lrlab: error: {exc}\n(full trace in {log_file})", file=sys.stderr)
        sys.exit(exc.exit_status)
    except KeyboardInterrupt:
        trace_log.exception("lrlab interrupted")
        raise
    except Exception as exc:
        full = disk_full(exc)
        if full is None or hydra_cfg.mode == RunMode.MULTIRUN:
            raise
        logging.raiseExceptions = False  # the log file is on the full disk too, perhaps
        trace_log.exception("lrlab stopped: disk full")
        print(
            f"lrlab: error: the disk is full: {full.strerror} while writing "
            f"{full.filename or 'a file of the run'}. The run was ended FAILED; free some space "
            "(or point hydra.run.dir / tracking.uri at a disk with room) and start it again.",
            file=sys.stderr,
        )
        sys.exit(1)
    finally:
        distributed.teardown()
    return result.summary()


def _quiet_other_ranks() -> None:
    """Under torchrun only rank 0 prints: the other ranks' consoles show warnings and errors, their
    log files (`lrlab-rank<R>.log`) everything."""
    if launched_rank() > 0:
        for handler in logging.getLogger().handlers:
            if type(handler) is logging.StreamHandler:
                handler.setLevel(logging.WARNING)


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (a scheduler's time limit, `kill`) ends the run like Ctrl-C: MLflow status KILLED."""
    raise Interrupted(signum)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _hydra_main(cfg: DictConfig) -> dict[str, Any]:
    return run_task(cfg)


def config_groups() -> list[str]:
    """The config groups of the packaged tree (`model`, `data`, ..., `experiment`, `search`)."""
    return sorted(p.name for p in Path(CONFIG_DIR).iterdir() if p.is_dir() and p.name != "hydra")


def deselect_null_groups(args: list[str]) -> list[str]:
    """Spell `GROUP=null` as Hydra's `~GROUP` (no option of that group): Hydra rejects a null group
    override with a traceback, and `experiment=null` is the natural way to ask for no preset."""
    nulls = {f"{group}=null": f"~{group}" for group in config_groups()}
    return [nulls.get(arg, arg) for arg in args]


_SWEEP_SYNTAX = ("choice(", "range(", "glob(", "interval(", "tag(", "sort(", "shuffle(")


def unknown_group_option(args: list[str]) -> str | None:
    """One paragraph for the first `group=option` naming an option the packaged tree lacks (Hydra's
    own report spans two paragraphs and its search path), with the valid options and close matches;
    None when every option exists, or when a config dir or search path may add options."""
    if any(arg.lstrip("+").startswith(MORE_CONFIG_ARGS) for arg in args):
        return None
    groups = set(config_groups())
    for arg in args:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+")
        if not sep or key not in groups or value.startswith(_SWEEP_SYNTAX):
            continue
        options = sorted(p.stem for p in (Path(CONFIG_DIR) / key).glob("*.yaml"))
        for option in (v.strip() for v in value.split(",")):
            if option and option != "null" and option not in options:
                close = difflib.get_close_matches(option, options, n=3, cutoff=0.5)
                hint = f" (closest: {', '.join(close)})" if close else ""
                return (
                    f"{key}={option} is not an option of the {key} group; choose one of: "
                    f"{', '.join(options)}{hint}. Add your own as DIR/{key}/<name>.yaml and pass "
                    "--config-dir DIR."
                )
    return None


def unwritable_output(args: list[str], launch_dir: Path) -> str | None:
    """One paragraph when the folder the run's outputs go to (`hydra.run.dir` / `hydra.sweep.dir`
    when given, else the launch folder's `outputs/`, `sweeps/` and `mlflow.db`) cannot be written,
    e.g. a read-only mount; None when it can. Checked before Hydra starts, which would report it
    with a traceback."""
    import os

    multirun = bool({"-m", "--multirun"} & set(args))
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    given = [a.partition("=")[2].strip("'\"") for a in args if a.lstrip("+").startswith(f"{key}=")]
    target = Path(given[-1]).expanduser() if given else launch_dir
    if not target.is_absolute():
        target = launch_dir / target
    existing = next((p for p in (target, *target.parents) if p.exists()), None)
    if existing is None or os.access(existing, os.W_OK):
        return None
    where = f"{key}={given[-1]}" if given else f"the launch folder {launch_dir}"
    return (
        f"cannot write the run's outputs: {existing} is not writable (a read-only mount or missing "
        f"permissions), and {where} puts them there. Start lrlab from a writable folder, or send the "
        f"outputs elsewhere with {key}=DIR (and tracking.uri=sqlite:////DIR/mlflow.db)."
    )


_MODES = {"-m": "--multirun", "-r": "--run", "-c": "--cfg", "-i": "--info", "-sc": "--shell-completion"}


def conflicting_modes(args: list[str]) -> str | None:
    """One paragraph when the command line asks for two of Hydra's modes (`-m --cfg job`), which
    Hydra refuses with a traceback; None otherwise."""
    modes = sorted({_MODES.get(arg, arg) for arg in args if arg in {*_MODES, *_MODES.values()}})
    if len(modes) < 2:
        return None
    return (
        f"{' and '.join(modes)} cannot be combined: choose one. To see the config of one job of a "
        "sweep, drop -m and give each key one value (--cfg job shows the composed config)."
    )


_VALUE_FLAGS = (  # Hydra's flags whose next argument is their value, not an override
    *("--cfg", "-c", "--package", "-p", "--info", "-i", "--experimental-rerun"),
    *("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd"),
)


def bare_word_problem(args: list[str]) -> str | None:
    """One paragraph for an argument that is neither a flag, a flag's value nor `key=value` (`lrlab
    train`, as git-style tools are called), which Hydra reports as a grammar error; None otherwise."""
    from lrlab.app.tasks import TASKS

    for previous, arg in zip(["", *args], args):
        if "=" in arg or arg.startswith(("-", "~")) or previous in _VALUE_FLAGS:
            continue
        if arg in TASKS:
            return (
                f"'{arg}' is not an override: lrlab takes key=value, so the task is task={arg} "
                f"(tasks: {', '.join(TASKS)}; train when none is given)."
            )
        return (
            f"'{arg}' is not an override: lrlab takes key=value (e.g. experiment=smoke, data.batch_size=64, "
            f"task=lr_find); `lrlab --help` lists the groups, keys and tasks."
        )
    return None


def command_line_problem(args: list[str], launch_dir: Path) -> str | None:
    """One paragraph for the first thing wrong with the command line that can be told before Hydra
    composes the config (modes, bare words, unknown options or keys, stage and data keys, an
    unwritable output folder, a sweep under torchrun); None when there is none."""
    sources = {name: source.config for name, source in registered_sources().items()}
    checks = (
        lambda: conflicting_modes(args) or bare_word_problem(args),
        lambda: unknown_group_option(args),
        lambda: misspelt_key(args, LrlabConfig, config_groups(), list(sources.values())),
        lambda: stage_override_problem(args, config_groups(), CONFIG_DIR),
        lambda: data_key_problem(args, config_groups(), CONFIG_DIR, sources),
        lambda: unwritable_output(args, launch_dir),
        lambda: _sweep_under_torchrun(args),
    )
    return next((problem for check in checks if (problem := check())), None)


def _sweep_under_torchrun(args: list[str]) -> str | None:
    if launched_world_size() > 1 and {"-m", "--multirun"} & set(args):
        return (
            "lrlab -m (a sweep) cannot run under torchrun: every process would run its own sweep. "
            "Sweep without torchrun, or launch one torchrun per configuration."
        )
    return None


def main() -> None:
    """Console-script entry point (`lrlab`, `python -m lrlab`)."""
    if sys.argv[1:] in (["--version"], ["-V"]):
        from lrlab import __version__

        print(f"lrlab {__version__}")
        return
    sys.argv[1:] = deselect_null_groups(sys.argv[1:])
    sys.argv[1:], added = complete_lr_free_args(sys.argv[1:])
    if added:
        optimizer = next(a for a in sys.argv[1:] if a.startswith("optimizer="))
        print(
            f"lrlab: {optimizer} runs with {' '.join(added)} (added; set any of them to choose otherwise)",
            file=sys.stderr,
        )
    problem = command_line_problem(sys.argv[1:], Path.cwd())
    if problem:
        print(f"lrlab: error: {problem}", file=sys.stderr)
        sys.exit(2)
    try:
        _hydra_main()
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        name = signal.Signals(signum).name
        trace = f"lrlab{rank_suffix()}.log"
        print(f"lrlab: interrupted by {name}; the run was ended KILLED (trace in {trace})", file=sys.stderr)
        sys.exit(128 + signum)
    except SystemExit as exc:
        if exc.code == 1 and not _work_started:
            sys.exit(2)  # Hydra reports a bad override or config option with status 1
        raise


if __name__ == "__main__":
    main()
