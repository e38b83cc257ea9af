"""The Hydra sweeper in-process: lrlab's config composed as `lrlab -m` composes it, Hydra's config
loader checking every batch, and a fake launcher returning Hydra `JobReturn`s instead of training."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import optuna
import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, RunMode
from omegaconf import OmegaConf
from optuna.trial import TrialState

from hydra_plugins.lrlab_optuna_sweeper.lrlab_optuna_sweeper import LrlabOptunaSweeper
from lrlab.app.cli import CONFIG_DIR
from lrlab.errors import LrlabError
from lrlab.finder.rules import RULES
from lrlab.integrations.optuna_storage import open_storage
from lrlab.sweep.study import PARENT_ATTR
from lrlab.sweep.sweeper import job_outcome

optuna.logging.set_verbosity(optuna.logging.ERROR)
pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.filterwarnings("ignore:Heartbeat of storage"),
]


class FakeLauncher:
    """Hydra's launcher, minus the training: error_rate from the job's LR; chosen trial numbers fail."""

    def __init__(self, fail: Collection[int] = ()):
        self.fail = set(fail)
        self.batches: list[list[list[str]]] = []

    def launch(self, job_overrides: list[list[str]], initial_job_idx: int) -> list[JobReturn]:
        self.batches.append([list(o) for o in job_overrides])
        return [self._job(list(o)) for o in job_overrides]

    def _job(self, overrides: list[str]) -> JobReturn:
        values = dict(o.lstrip("+").split("=", 1) for o in overrides)
        ret = JobReturn(overrides=overrides)
        if int(values["trial.number"]) in self.fail:
            ret.status, ret.return_value = JobStatus.FAILED, LrlabError("training diverged at step 3")
            return ret
        lr = values.get("stages.0.lr", values.get("lr"))
        lr = 1e-2 if lr == "find" else float(lr)
        ret.status = JobStatus.COMPLETED
        ret.return_value = {
            "metrics": {"error_rate": abs(math.log10(lr) + 2) / 10, "valid_loss": 0.3},
            "train_seconds": 1.0,
            "finder_seconds": 0.5,
            "stages": [{"index": 0, "name": "full", "lr": lr, "rule": values.get("stages.0.lr_rule")}],
            "run_id": None,
            "output_dir": None,
        }
        return ret


@pytest.fixture
def hydra_sweeper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """`make(*overrides, fail=())` -> (sweeper, arguments, launcher), set up as `lrlab -m` would."""
    monkeypatch.chdir(tmp_path)

    def make(
        *overrides: str, fail: Collection[int] = ()
    ) -> tuple[LrlabOptunaSweeper, list[str], FakeLauncher]:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            hydra = GlobalHydra.instance().hydra
            config = hydra.compose_config("config", list(overrides), run_mode=RunMode.MULTIRUN)
            context = HydraContext(config_loader=hydra.config_loader, callbacks=None)
        settings = {k: v for k, v in config.hydra.sweeper.items() if k != "_target_"}
        sweeper = LrlabOptunaSweeper(**settings)
        sweeper.setup(hydra_context=context, task_function=lambda cfg: None, config=config)
        launcher = FakeLauncher(fail)
        sweeper.sweep_impl.launcher = launcher
        return sweeper, list(config.hydra.overrides.task), launcher

    return make


def test_a_finder_vs_search_sweep_writes_results_and_the_report(hydra_sweeper, tmp_path: Path) -> None:
    journal = f"journal://{tmp_path / 'study.log'}"
    sweeper, arguments, launcher = hydra_sweeper(
        "experiment=smoke", "search=lr_vs_finder", "tracking=none",
        f"hydra.sweeper.n_trials={2 * len(RULES)}", f"hydra.sweeper.storage={journal}",
    )  # fmt: skip
    returns = sweeper.sweep(arguments)
    assert [len(batch) for batch in returns] == [1] * (2 * len(RULES))
    study = optuna.load_study(study_name="smoke-lr_vs_finder", storage=open_storage(journal))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * (2 * len(RULES))
    sources = [t.user_attrs["source"] for t in study.trials]
    ordered = ["lrlab", *(r for r in RULES if r != "lrlab")]  # the default rule's baseline first
    assert sources == [f"lr_finder:{rule}" for rule in ordered] + ["search"] * len(RULES)
    # tracking=none: the parent is the no-op Tracker, so no job is told of a parent run and none is recorded
    assert not any("tracking.parent_run_id" in o for batch in launcher.batches for o in batch)
    assert PARENT_ATTR not in study.user_attrs and not (tmp_path / "mlflow.db").exists()
    assert study.trials[0].params == {"stages.0.lr": 1e-2}
    valley = launcher.batches[ordered.index("valley")][0]
    assert {"experiment=smoke", "stages.0.lr=find", "++stages.0.lr_rule=valley", "trial.number=1"} <= set(
        valley
    )
    sweep_dir = tmp_path / "sweeps" / "smoke-lr_vs_finder"
    results = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert results.best_value == pytest.approx(study.best_value) and results.storage == journal
    report = (sweep_dir / "finder_vs_search.md").read_text()
    assert all(f"| {rule} |" in report for rule in RULES)
    assert (sweep_dir / "finder_vs_search.png").is_file()


def test_baselines_keep_half_the_trials_for_the_search_and_name_the_rest(
    hydra_sweeper, tmp_path: Path, caplog
) -> None:
    journal = f"journal://{tmp_path / 'study.log'}"
    sweeper, arguments, _ = hydra_sweeper(
        "experiment=smoke", "search=lr_vs_finder", "tracking=none", "hydra.sweeper.n_trials=4",
        f"hydra.sweeper.storage={journal}",
    )  # fmt: skip
    sweeper.sweep(arguments)
    study = optuna.load_study(study_name="smoke-lr_vs_finder", storage=open_storage(journal))
    sources = [t.user_attrs["source"] for t in study.trials]
    assert sources == ["lr_finder:lrlab", "lr_finder:valley", "search", "search"]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)  # nothing left WAITING
    assert study.metric_names == study.user_attrs["lrlab.metric"]  # the dashboard's axis name
    assert (
        f"2 baseline(s) run and these do not: {', '.join(r for r in RULES if r not in ('lrlab', 'valley'))}"
        in caplog.text
    )
    assert f"Raise n_trials to {2 * len(RULES)}" in caplog.text


def test_a_plain_multirun_is_a_grid_and_the_settings_stay_as_configured(
    hydra_sweeper, tmp_path: Path
) -> None:
    journal = f"journal://{tmp_path / 'grid.log'}"
    sweeper, arguments, _ = hydra_sweeper(
        "experiment=smoke", "lr=1e-3,1e-2", "optimizer=adamw,sgd", "tracking=none",
        f"hydra.sweeper.storage={journal}",
    )  # fmt: skip
    sweeper.sweep(arguments)
    study = optuna.load_study(study_name="smoke-search", storage=open_storage(journal))
    assert sorted((t.params["lr"], t.params["optimizer"]) for t in study.trials) == [
        (1e-3, "adamw"), (1e-3, "sgd"), (1e-2, "adamw"), (1e-2, "sgd"),
    ]  # fmt: skip
    assert (sweeper.sweep_impl.settings.sampler, sweeper.sweep_impl.settings.n_trials) == ("tpe", 20)


def test_bad_input_exits_with_status_2_and_one_line(hydra_sweeper, capsys: pytest.CaptureFixture) -> None:
    for overrides, message in [
        (("task=lr_find",), "lrlab: error: a sweep needs task=train"),
        (("hydra.sweeper.sampler=bogus",), "hydra.sweeper.sampler='bogus' is not valid; choose one of: tpe,"),
        (("hydra.sweeper.pruner=early",), "hydra.sweeper.pruner='early' is not valid; choose one of: none,"),
    ]:
        sweeper, arguments, _ = hydra_sweeper("experiment=smoke", "search=lr", "tracking=none", *overrides)
        with pytest.raises(SystemExit) as stopped:
            sweeper.sweep(arguments)
        assert stopped.value.code == 2
        assert message in capsys.readouterr().err


def test_too_many_failures_stop_the_sweep_naming_the_error(hydra_sweeper, tmp_path, capsys) -> None:
    journal = f"journal://{tmp_path / 'fail.log'}"
    sweeper, arguments, _ = hydra_sweeper(
        "experiment=smoke", "search=lr", "tracking=none", "hydra.sweeper.n_trials=2",
        "hydra.sweeper.max_failure_rate=0", f"hydra.sweeper.storage={journal}", fail={0},
    )  # fmt: skip
    with pytest.raises(SystemExit) as stopped:
        sweeper.sweep(arguments)
    assert stopped.value.code == 1  # a failure during the work, not bad input
    err = capsys.readouterr().err
    assert (
        "\nlrlab: sweep stopped:" in f"\n{err}"
        and "max_failure_rate=0" in err
        and "(trial 0): LrlabError: training diverged at step 3" in err
    )
    study = optuna.load_study(study_name="smoke-lr", storage=open_storage(journal))
    assert [t.state for t in study.trials] == [TrialState.FAIL]
    assert (tmp_path / "sweeps" / "smoke-lr" / "optimization_results.yaml").is_file()


def test_the_mlflow_parent_run_holds_settings_best_metric_and_files(hydra_sweeper, store: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{store / 'mlflow.db'}"
    sweeper, arguments, launcher = hydra_sweeper(
        "experiment=smoke", "search=lr", "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage=journal://{store}/j.log",
        f"tracking.uri='{uri}'",
    )  # fmt: skip
    sweeper.sweep(arguments)
    client = MlflowClient(tracking_uri=uri)
    [parent] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert parent.info.status == "FINISHED" and parent.data.tags["lrlab.sweep"] == "parent"
    assert parent.data.params["sampler"] == "tpe" and parent.data.params["study_name"] == "smoke-lr"
    assert parent.data.tags["finished_trials"] == "2" and "best_error_rate" in parent.data.metrics
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"optimization_results.yaml", "finder_vs_search.md"} <= artifacts
    assert all(f"tracking.parent_run_id={parent.info.run_id}" in o for b in launcher.batches for o in b)


def test_job_outcome_reads_hydra_job_returns_through_their_public_api() -> None:
    done = JobReturn(status=JobStatus.COMPLETED)
    done.return_value = {"metrics": {"error_rate": 0.1}}
    assert job_outcome(done).summary == {"metrics": {"error_rate": 0.1}}
    error = optuna.TrialPruned("pruned after epoch 2")
    failed = JobReturn(overrides=["a=1"], status=JobStatus.FAILED)
    failed.return_value = error
    outcome = job_outcome(failed)
    assert outcome.error is error and outcome.summary is None
