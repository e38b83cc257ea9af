"""lrlab's Optuna sweeper (the body of the `lrlab_optuna` Hydra sweeper plugin): a thin Hydra
`Sweeper` that wires the sweep's parts together. Written on Optuna's ask/tell API because the
PyPI Hydra Optuna plugin pins optuna<3, cannot prune, cannot enqueue baselines and adds
`n_trials` on every resume instead of completing the study.

The parts: `settings` (the `hydra.sweeper` keys), `search_space`, `samplers`, `study`,
`recovery`, `baselines`, `session` (the ask/tell loop, which hands each batch of trials to this
sweeper's launcher), `parent` (the parent run in the `tracking.backend`, reached through
`lrlab.integrations.tracking`, so no backend is named here), `results` and `report`.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from lrlab.errors import ConfigError
from lrlab.integrations.tracking import Tracker, get_backend
from lrlab.sweep.baselines import FinderBaselines
from lrlab.sweep.parent import kill_orphaned_children, log_outcome, open_parent_run
from lrlab.sweep.report import write_report
from lrlab.sweep.results import write_results
from lrlab.sweep.search_space import parse_search_space
from lrlab.sweep.session import Outcome, SweepFailed, SweepSession
from lrlab.sweep.settings import SweepSettings
from lrlab.sweep.study import effective_settings

__all__ = ["OptunaSweep", "SweepFailed", "job_outcome"]

log = logging.getLogger("lrlab.sweep")


def job_outcome(ret: JobReturn) -> Outcome:
    """A Hydra job's outcome: its return value, or the exception that `return_value` re-raises
    for a failed job."""
    try:
        value = ret.return_value
    except Exception as exc:
        return Outcome(error=exc)
    if ret.status != JobStatus.COMPLETED:
        return Outcome(error=RuntimeError(f"the job ended {ret.status.name} without an error"))
    return Outcome(summary=value)


class OptunaSweep(Sweeper):
    """A Hydra sweeper that fills an Optuna study up to `n_trials` finished (complete or pruned) trials."""

    def __init__(self, **settings: Any):
        self.settings = SweepSettings.from_mapping(settings)
        self.launcher: Launcher | None = None
        self.config: DictConfig | None = None
        self.job_idx = 0
        self.returns: list[Any] = []

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def sweep(self, arguments: list[str]) -> list[Any]:
        """Run trials until the study holds `n_trials` finished ones; returns the batches' job returns."""
        assert self.config is not None and self.launcher is not None, "setup() must run first"
        config = self.config
        settings = self.settings.validate()
        if config.task != "train":
            raise ConfigError(f"a sweep needs task=train (its trials are trainings), not task={config.task}.")
        stages = OmegaConf.to_container(config.stages, resolve=True)
        space = parse_search_space(settings.params, arguments, stages)
        preset = config.hydra.runtime.choices.get("search") is not None
        settings = effective_settings(settings, space, preset=preset)
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        url = settings.storage or f"sqlite:///{(sweep_dir / 'optuna.db').as_posix()}"
        session = SweepSession.open(settings, space, url, self._study_name(settings), sweep_dir)
        parent = self._parent_run(session, sweep_dir)
        defaults = {k: OmegaConf.select(config, k, throw_on_resolution_failure=False) for k in space.params}
        finder = FinderBaselines.for_space(space, stages, defaults)
        extra = [f"tracking.parent_run_id={parent.run_id}"] if parent.run_id is not None else []
        status = "FAILED"
        _import_job_packages()
        try:
            session.run(self._run_batch, finder, extra)
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            self._finish(session, sweep_dir, parent, status)
        return self.returns

    def _study_name(self, settings: SweepSettings) -> str:
        if settings.study_name:
            return str(settings.study_name)
        choice = self.config.hydra.runtime.choices.get("search") or "search"
        return f"{self.config.name}-{choice}"

    def _run_batch(self, batch: list[list[str]]) -> list[Outcome]:
        """The session's `run_batch`: one launch of the configured Hydra launcher."""
        self.validate_batch_is_legal(batch)
        returns = self.launcher.launch(batch, initial_job_idx=self.job_idx)
        self.job_idx += len(batch)
        self.returns.append(returns)
        return [job_outcome(ret) for ret in returns]

    def _parent_run(self, session: SweepSession, sweep_dir: Path) -> Tracker:
        """The parent run in `tracking.backend` (the no-op Tracker, whose `run_id` is None, with
        tracking=none); ends orphaned children KILLED."""
        tracking = self.config.tracking
        backend = get_backend(tracking.backend)
        uri = backend.resolve_uri(tracking.uri, Path.cwd())
        parent = open_parent_run(
            backend, session.study, session.settings, session.space, uri, tracking.experiment, sweep_dir
        )
        if session.recovered:
            kill_orphaned_children(parent, session.recovered)
        return parent

    def _finish(self, session: SweepSession, sweep_dir: Path, parent: Tracker, status: str) -> None:
        """Write the results file and the report, attach them to the parent run and end it."""
        try:
            paths = [write_results(session.study, sweep_dir)]
            if session.settings.report:
                paths += write_report(session.study, sweep_dir)
            if parent.run_id is not None:
                log_outcome(parent, session.study, session.settings, paths)
            log.info(f"results: {paths[0]}" + (f"; report: {paths[1]}" if len(paths) > 1 else ""))
        finally:
            parent.finish(status)
            if parent.run_id is not None:
                log.info(f"parent run ({status}): {parent.describe()}")


JOB_PACKAGES = (
    "torch",
    "torchvision",
    "timm",
    "sklearn.model_selection",
    "matplotlib.figure",
    "mlflow.pyfunc",
)
"""The heavy packages every trial's job imports (its model, split, plots and MLflow model)."""


def _import_job_packages() -> None:
    """Import what the trials' jobs import, before the first trial's clock starts: the one-off ~5 s
    would otherwise be billed to whichever trial runs first (in-process launchers), skewing the
    report's compute between rules."""
    for name in JOB_PACKAGES:
        importlib.import_module(name)
