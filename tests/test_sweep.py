"""End-to-end sweeps through `lrlab -m` with lrlab's Optuna sweeper: real Optuna SQLite storages,
real MLflow SQLite stores, the smoke experiment (digits + a tiny timm model), real training.

Only what needs real jobs and processes is here: a finder-vs-search study with its report and
resume, pruning reported from inside the jobs, a killed sweep, two workers. The loop itself
(totals, resume, recovery, baselines, failures, grids, journal storage, batches) is tested
in-process with fake jobs in test_sweep_session.py and test_sweep_hydra.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from optuna.trial import TrialState

from conftest import run_lrlab_report, spawn_lrlab

optuna.logging.set_verbosity(optuna.logging.WARNING)

VS_FINDER = ("-m", "experiment=smoke", "search=lr_vs_finder", "train.checkpoints=false")
CHOSEN = ("lrlab", "valley")  # two rules' baselines keep the real sweep short
CHOSEN_RULES = f"hydra.sweeper.finder_rules=[{','.join(CHOSEN)}]"


def _study(directory: Path, name: str) -> optuna.Study:
    db = directory / "sweeps" / name / "optuna.db"
    assert db.is_file(), f"no study storage at {db}"
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")


def _runs(directory: Path) -> tuple[MlflowClient, list]:
    client = MlflowClient(tracking_uri=f"sqlite:///{directory / 'mlflow.db'}")
    experiments = client.search_experiments()
    return client, client.search_runs([e.experiment_id for e in experiments], max_results=1000)


def _parent_and_children(directory: Path):
    _, runs = _runs(directory)
    parents = [r for r in runs if r.data.tags.get("lrlab.sweep") == "parent"]
    assert len(parents) == 1, [r.data.tags for r in runs]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], children


def _states(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


@pytest.mark.slow
def test_lr_vs_finder_sweep_finishes_resumes_and_reports(run_cli, tmp_path: Path) -> None:
    rules = [f"lr_finder:{rule}" for rule in CHOSEN]  # one baseline trial per chosen rule
    total = 2 * len(rules)  # as many searched trials: baselines take at most half of n_trials
    proc = run_cli(*VS_FINDER, CHOSEN_RULES, f"hydra.sweeper.n_trials={total}", timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    study = _study(tmp_path, "smoke-lr_vs_finder")
    assert _states(study) == {"COMPLETE": total}
    # The finder trials ran first, and their params are the LRs their range tests chose.
    assert [t.user_attrs["source"] for t in study.trials] == [*rules, *["search"] * len(rules)]
    for trial in study.trials[: len(rules)]:
        stage = trial.user_attrs["stages"][0]
        assert stage["rule"] == trial.user_attrs["source"].split(":")[1]
        assert trial.params["stages.0.lr"] == pytest.approx(stage["lr"])
        assert stage["suggestions"][stage["rule"]] == pytest.approx(stage["lr"])
    # One range test for the stage, shared by every finder trial (its curve is kept in the study);
    # the others spent nothing on it, but each records what it cost, which a lone run would pay.
    assert len([k for k in study.user_attrs if k.startswith("lr_find_curve:")]) == 1
    seconds = [t.user_attrs["stages"][0]["finder_seconds"] for t in study.trials[: len(rules)]]
    assert seconds[0] > 0 and seconds[1:] == [0.0] * (len(rules) - 1)
    cost = [t.user_attrs["stages"][0]["finder_curve_seconds"] for t in study.trials[: len(rules)]]
    assert cost == [seconds[0]] * len(rules)
    searched = [t for t in study.trials if t.user_attrs["source"] == "search"]
    assert all(1e-5 <= t.params["stages.0.lr"] <= 1e-1 for t in searched)
    assert len({t.params["stages.0.lr"] for t in searched}) == len(rules)

    parent, children = _parent_and_children(tmp_path)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["study_name"] == "smoke-lr_vs_finder" and parent.data.params["sampler"] == "tpe"
    assert parent.data.params["search.stages.0.lr"] == "float [1e-05, 0.1], log"
    assert len(children) == total and all(r.info.status == "FINISHED" for r in children)
    by_number = {int(r.data.tags["trial.number"]): r for r in children}
    assert sorted(by_number) == list(range(total))
    for trial in study.trials:
        run = by_number[trial.number]
        assert run.data.tags["trial.source"] == trial.user_attrs["source"]
        assert run.data.tags["trial.state"] == "COMPLETE"
        assert float(run.data.metrics["final_error_rate"]) == pytest.approx(trial.value)
        assert run.info.run_name == f"trial-{trial.number}-{trial.user_attrs['source'].replace(':', '-')}"
    best = study.best_trial
    assert parent.data.tags["best.trial"] == str(best.number)
    assert parent.data.tags["best.child_run_id"] == by_number[best.number].info.run_id
    assert float(parent.data.tags["best.error_rate"]) == pytest.approx(best.value)
    assert float(parent.data.tags["best.params.stages.0.lr"]) == pytest.approx(best.params["stages.0.lr"])
    assert parent.data.tags["mlflow.user"] and parent.data.tags["mlflow.source.type"] == "LOCAL"
    # the parent's page opens with the report's answer, not its trial list
    described = parent.data.tags["mlflow.note.content"]
    assert described.startswith("# Range-test suggestions vs. searched learning rates: `smoke-lr_vs_finder`")
    assert "regret" in described and "![" not in described
    assert "## Trials" not in described and described.endswith(
        "`finder_vs_search.md` in this run's artifacts."
    )

    sweep_dir = tmp_path / "sweeps" / "smoke-lr_vs_finder"
    results = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert results.best_value == pytest.approx(study.best_value)
    assert dict(results.best_params) == pytest.approx(study.best_params)
    report = (sweep_dir / "finder_vs_search.md").read_text()
    for rule in CHOSEN:
        assert f"| {rule} |" in report
    assert "regret" in report
    assert (sweep_dir / "finder_vs_search.png").stat().st_size > 10_000
    client, _ = _runs(tmp_path)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"optimization_results.yaml", "finder_vs_search.md", "finder_vs_search.png"} <= artifacts

    # The same command again: the study is complete, nothing is added.
    again = run_cli(*VS_FINDER, CHOSEN_RULES, f"hydra.sweeper.n_trials={total}", timeout=600)
    assert again.returncode == 0, again.stderr[-4000:]
    assert len(_study(tmp_path, "smoke-lr_vs_finder").trials) == total
    # Raising n_trials by two adds exactly two searched trials, new points, under the same parent run.
    more = run_cli(*VS_FINDER, CHOSEN_RULES, f"hydra.sweeper.n_trials={total + 2}", timeout=600)
    assert more.returncode == 0, more.stderr[-4000:]
    study = _study(tmp_path, "smoke-lr_vs_finder")
    assert _states(study) == {"COMPLETE": total + 2}
    assert [t.user_attrs["source"] for t in study.trials[total:]] == ["search", "search"]
    assert (
        len({t.params["stages.0.lr"] for t in study.trials if t.user_attrs["source"] == "search"})
        == len(rules) + 2
    )
    parent, children = _parent_and_children(tmp_path)
    assert len(children) == total + 2

    # The report regenerates from the sweep directory and from the parent run id.
    (sweep_dir / "finder_vs_search.md").unlink()
    for target in (str(sweep_dir), parent.info.run_id):
        regen = run_lrlab_report(target, tmp_path)
        assert regen.returncode == 0, regen.stderr[-3000:]
        assert f"over {len(rules) + 2} trials" in (sweep_dir / "finder_vs_search.md").read_text()


@pytest.mark.slow
def test_median_pruner_prunes_trials_in_optuna_and_mlflow(run_cli, tmp_path: Path) -> None:
    proc = run_cli(
        "-m",
        "experiment=smoke",
        "search=lr",
        "epochs=4",
        "train.checkpoints=false",
        "hydra.sweeper.n_trials=8",
        "hydra.sweeper.pruner=median",
        "+hydra.sweeper.pruner_kwargs.n_startup_trials=2",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    study = _study(tmp_path, "smoke-lr")
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned, _states(study)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 8
    assert all(len(t.intermediate_values) < 4 for t in pruned)
    assert all(len(t.intermediate_values) == 4 for t in study.trials if t.state == TrialState.COMPLETE)
    _, children = _parent_and_children(tmp_path)
    by_number = {int(r.data.tags["trial.number"]): r for r in children}
    for trial in pruned:
        assert by_number[trial.number].data.tags["trial.state"] == "PRUNED"
        assert by_number[trial.number].info.status == "KILLED"


@pytest.mark.slow
def test_a_killed_sweep_leaves_no_running_trial_after_resume(tmp_path: Path) -> None:
    args = (
        "-m",
        "experiment=smoke",
        "search=lr",
        "epochs=8",  # long enough to be killed mid-training, short for the resumed run
        "train.checkpoints=false",
        "hydra.sweeper.n_trials=1",
    )
    proc = spawn_lrlab(*args, cwd=tmp_path)
    try:
        # Kill it once the trial's job trains: its trial is RUNNING and its MLflow child run open.
        training = any(line.startswith("epoch  train_loss") for line in proc.stdout)
        assert training, "the sweep never started training a trial"
        time.sleep(1)
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    assert [t.state for t in _study(tmp_path, "smoke-lr").trials] == [TrialState.RUNNING]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    changed = subprocess.run(
        [sys.executable, "-m", "lrlab", *args[:3], "epochs=1", *args[4:]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    # Other overrides make another experiment: the sweeper refuses to mix it into this study.
    assert changed.returncode != 0 and "hydra.sweeper.study_name" in changed.stderr
    resumed = subprocess.run(
        [sys.executable, "-m", "lrlab", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [t.state for t in _study(tmp_path, "smoke-lr").trials] == [TrialState.FAIL, TrialState.COMPLETE]
    _, children = _parent_and_children(tmp_path)
    assert sorted((r.data.tags["trial.number"], r.info.status) for r in children) == [
        ("0", "KILLED"),
        ("1", "FINISHED"),
    ]


@pytest.mark.slow
def test_two_workers_fill_one_study_exactly(tmp_path: Path) -> None:
    """Both started at once in a fresh folder: they create the study's storage and the MLflow store
    together, then share the trials."""
    args = (
        "-m",
        "experiment=smoke",
        "search=lr",
        "epochs=1",
        "train.checkpoints=false",
        "hydra.sweeper.n_trials=6",
    )
    workers = [spawn_lrlab(*args, cwd=tmp_path) for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    study = _study(tmp_path, "smoke-lr")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6
    assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.FAIL)]
    assert len({t.number for t in complete}) == 6
    assert len({t.params["stages.0.lr"] for t in complete}) == 6
    workers_used = {t.user_attrs["lrlab.worker"] for t in complete}
    assert len(workers_used) == 2, "both workers should have run trials"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 6 and {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(r.info.run_name for r in children) == [f"trial-{n}-search" for n in range(6)]
