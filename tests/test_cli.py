"""End-to-end runs of the real CLI in a subprocess, checked against the MLflow SQLite store."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from conftest import spawn_lrlab
from lrlab.app.cli import CONFIG_DIR, bare_word_problem
from lrlab.app.tasks import TASKS
from lrlab.train.checkpoints import load_checkpoint

SMOKE = ("experiment=smoke", "train.checkpoints=true")


def _client(directory: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{directory / 'mlflow.db'}")


def _runs(directory: Path):
    client = _client(directory)
    experiments = client.search_experiments()
    return client, client.search_runs([e.experiment_id for e in experiments])


def test_smoke_run_logs_a_finished_run_and_is_reproducible(run_cli, tmp_path: Path) -> None:
    first = run_cli(*SMOKE)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "epoch  train_loss  valid_loss  error_rate" in first.stdout and "img/s" in first.stdout
    assert "\r" not in first.stdout + first.stderr, "no progress bars in a log: one line per epoch"
    assert "test: the final model on 360 held-out images" in first.stdout
    assert first.stdout.index("epoch  train_loss") < first.stdout.index("test: the final model")
    assert "training images as the model sees them:" in first.stdout
    second = run_cli(*SMOKE, "data.preview=0")  # drawing the preview must not change the training
    assert second.returncode == 0, second.stderr[-3000:]
    assert "training images as the model sees them" not in second.stdout

    client, runs = _runs(tmp_path)
    assert len(runs) == 2
    assert {r.info.status for r in runs} == {"FINISHED"}
    histories, digests = [], []
    for run in runs:
        assert run.data.params["model.name"] == "test_efficientnet"
        assert run.data.params["data.name"] == "digits"
        assert run.data.tags["seed"] == "42"
        assert (
            run.data.tags["cpu.threads"] == str(torch.get_num_threads()) and run.data.tags["cpu.capability"]
        )
        assert "version.torch" in run.data.tags
        assert run.data.tags["mlflow.user"] and run.data.tags["mlflow.source.type"] == "LOCAL"
        # Keys of other tasks, of sweeps and of the range test (no stage runs one) are not logged.
        assert not {"checkpoint", "format", "input", "trial.study", "lr_finder.suggest"} & set(
            run.data.params
        )
        inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
        assert sorted(inputs) == ["test", "train", "valid"]
        assert {d.name for d in inputs.values()} == {"digits-train", "digits-valid", "digits-test"}
        assert json.loads(inputs["train"].profile)["num_rows"] == 1077
        # the run's page opens with what it trained, how each LR was chosen, its figures and command
        described = run.data.tags["mlflow.note.content"]
        assert "**smoke**: `test_efficientnet` on `digits` (1,077 train / 360 valid / 360 test)" in described
        assert (
            "| full | 0.01 | fixed |" in described
            and "`lrlab experiment=smoke train.checkpoints=true" in described
        )
        assert f"test (once, after training): accuracy {run.data.metrics['test/accuracy']:.4f}" in described
        assert len({d.digest for d in inputs.values()}) == 3
        digests.append(inputs["train"].digest)
        valid = client.get_metric_history(run.info.run_id, "valid_loss")
        errors = client.get_metric_history(run.info.run_id, "error_rate")
        assert [m.step for m in valid] == [0, 1]
        # digits 60/20/20: 1,077 training images, 16 steps of 64 per epoch
        assert len(client.get_metric_history(run.info.run_id, "step_train_loss")) == 2 * 16
        norms = [m.value for m in client.get_metric_history(run.info.run_id, "step_grad_norm")]
        assert len(norms) == 2 * 16 and min(norms) > 0
        assert run.data.params["data.test_pct"] == "0.2" and run.data.params["split.test"] == "360"
        _check_test_metrics(run.data.metrics, [m.value for m in errors])
        histories.append(([m.value for m in valid], [m.value for m in errors]))
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config", "epochs.csv", "checkpoints", "training_curves.png"} <= artifacts
        previews = {a.path for a in client.list_artifacts(run.info.run_id, "data")}
        assert previews == ({"data/train_batch.png"} if run.data.params["data.preview"] == "16" else set())
        names = {client.get_logged_model(o.model_id).name for o in run.outputs.model_outputs}
        assert names == {"model", "pytorch_model"}  # the served model and the raw network
        config_files = {a.path for a in client.list_artifacts(run.info.run_id, "config")}
        assert {"config/config.yaml", "config/overrides.yaml"} <= config_files
    assert digests[0] == digests[1], "the same data has the same digest"
    assert histories[0] == histories[1], "same config (preview aside), seed, machine: bit-identical metrics"
    weights = [load_checkpoint(p)["model"] for p in sorted((tmp_path / "outputs").rglob("last.pt"))]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert histories[0][1][-1] < 0.5, "the tiny model should learn digits in two epochs"
    checkpoints = list((tmp_path / "outputs").rglob("best.pt"))
    assert len(checkpoints) == 2


TEST_KEYS = {"test/accuracy", "test/error_rate", "test/loss", "test/balanced_accuracy", "test/ece"}


def _check_test_metrics(metrics: dict[str, float], valid_errors: list[float]) -> None:
    """The final model's test metrics are logged apart; error_rate stays the valid split's."""
    recalls = {f"test/recall/{digit}" for digit in range(10)}
    assert TEST_KEYS | recalls == {k for k in metrics if k.startswith("test/")}
    assert all(0.0 <= metrics[k] <= 1.0 for k in (TEST_KEYS - {"test/loss"}) | recalls)
    assert metrics["test/loss"] > 0 and metrics["test/error_rate"] == 1 - metrics["test/accuracy"]
    assert metrics["error_rate"] == valid_errors[-1] == metrics["final_error_rate"]


def test_unknown_model_fails_cleanly_before_any_run(run_cli, tmp_path: Path) -> None:
    proc = run_cli("experiment=smoke", "model.name=resnet9999")
    assert proc.returncode == 2
    console = proc.stdout + proc.stderr
    assert "resnet9999" in console and "resnet50" in console
    assert "Traceback" not in console
    log_files = list((tmp_path / "outputs").rglob("lrlab.log"))
    assert log_files and "Traceback" in log_files[0].read_text()
    db = tmp_path / "mlflow.db"
    if db.exists():  # bad input stops before the tracker exists, so normally there is no store at all
        with sqlite3.connect(db) as conn:
            assert conn.execute("select count(*) from runs").fetchone()[0] == 0, "a run was created"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("data.batch_size=0", "data.batch_size"),
        ("lr=-1", "stages.0.lr"),
        ("precision=64", "precision"),
        ("stages.0.lr_rule=stepp", "stages.0.lr_rule"),
        ("task=trian", "task='trian' is not valid; choose one of: train, lr_find"),
    ],
)
def test_bad_values_fail_with_the_key_named(run_cli, override: str, expected: str) -> None:
    proc = run_cli("experiment=smoke", "tracking=none", override)
    assert proc.returncode == 2
    assert expected in proc.stderr and "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize(
    "override, expected",
    [
        ("data.batch_size=abc", "data.batch_size"),
        ("stages.0.lr_rul=steep", "lr_rul"),
        ("lr_finder.smoothin=ema", "smoothin"),
        ("data.classes=2", "classes"),
    ],
)
def test_misspelt_keys_and_wrong_types_fail_at_composition(
    run_cli, tmp_path: Path, override: str, expected: str
) -> None:
    """The schemas are part of composition: Hydra reports the key before lrlab runs; bad input, so
    status 2 (Hydra's own status is 1)."""
    proc = run_cli("experiment=smoke", "tracking=none", override)
    assert proc.returncode == 2
    assert expected in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "outputs").exists()


def test_unknown_group_option_lists_the_choices(run_cli) -> None:
    proc = run_cli("experiment=smoke", "model=foo")
    assert proc.returncode == 2
    assert "efficientnet_lite0" in proc.stderr and "resnet34" in proc.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["optimizer=adam"],
            "optimizer=adam is not an option of the optimizer group; choose one of: adamw, ",
        ),
        (["-m", "optimizer=adamw,sgdd"], "(closest: sgd)"),
        (["--cfg", "job", "-m", "experiment=smoke"], "--cfg and --multirun cannot be combined: choose one"),
        # a git-style command word: the override that says it
        (
            ["lr_find", "experiment=smoke"],
            "'lr_find' is not an override: lrlab takes key=value, so the task is task=lr_find",
        ),
        # a misspelt key: the closest keys, where Hydra's report suggests +key=value
        (["train.grad_acum=2"], "train.grad_acum is not a key of train (closest: train.grad_accum"),
        (["-m", "stages.0.epoch=1,2"], "stages.0.epoch is not a key of stages.0 (closest: stages.0.epochs)"),
        (["data.batchsize=8"], "data.batchsize is not a key of data (closest: data.batch_size)"),
        # a key of another data source: the options that have it
        (["experiment=smoke", "data.root=/x"], "data.root is not a key of data=digits: only data=cifar10"),
    ],
)
def test_a_bad_group_option_is_one_paragraph_with_close_matches(run_cli, args: list, expected: str) -> None:
    proc = run_cli(*args)
    assert proc.returncode == 2 and expected in proc.stderr
    assert proc.stderr.count("\n") == 1 and "search path" not in proc.stderr


def test_flags_values_and_overrides_are_not_bare_words() -> None:
    assert (
        bare_word_problem(["--cfg", "job", "--package", "model", "-cd", "conf", "experiment=smoke"]) is None
    )
    assert bare_word_problem(["-m", "~search", "--info", "plugins"]) is None
    assert "task=train" in bare_word_problem(["train"])
    assert "`lrlab --help` lists the groups" in bare_word_problem(["experiment=smoke", "smoke"])


def test_version_is_lrlabs(run_cli) -> None:
    from lrlab import __version__

    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"lrlab {__version__}"


def test_cfg_job_prints_every_group(run_cli) -> None:
    proc = run_cli("--cfg", "job")
    assert proc.returncode == 0, proc.stderr
    for key in ("model:", "data:", "optimizer:", "schedule:", "stages:", "tracking:"):
        assert key in proc.stdout
    assert "tf_efficientnet_lite0" in proc.stdout
    data = yaml.safe_load(proc.stdout)["data"]
    assert (data["valid_pct"], data["test_pct"], data["split_seed"]) == (0.2, 0.2, 0)


def test_another_data_source_and_model_get_their_own_settings(run_cli, tmp_path: Path) -> None:
    proc = run_cli("data=imagefolder", f"data.root={tmp_path}", "model=resnet18", "--cfg", "job", "--resolve")
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["data"]["image_size"] == 224 and "classes" not in cfg["data"]
    assert cfg["name"] == "imagefolder" and cfg["tracking"]["experiment"] == "imagefolder"
    assert cfg["lr_finder"]["smoothing"] == "ema" and cfg["lr_finder"]["suggest"] == "lrlab"
    assert cfg["model"]["name"] == "resnet18"


def test_help_lists_the_options_not_the_schemas(run_cli) -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    groups = proc.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    data_options = sorted(f.stem for f in (Path(CONFIG_DIR) / "data").glob("*.yaml"))
    assert f"data: {', '.join(data_options)}\n" in groups and "elpv" in data_options
    assert "lr_finder: default, fastai\n" in groups and "schema" not in groups
    header = " ".join(proc.stdout.split("== Configuration groups ==")[0].split())
    tasks = header.split("Tasks (task=NAME")[1]
    assert all(re.search(rf"\b{name}\b", tasks) for name in TASKS), tasks


def test_experiment_null_composes_the_plain_config(run_cli) -> None:
    plain = run_cli("--cfg", "job")
    proc = run_cli("experiment=null", "--cfg", "job")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == plain.stdout


def test_a_smoke_stage_takes_a_rule_override_and_runs(run_cli, tmp_path: Path) -> None:
    proc = run_cli(
        "experiment=smoke",
        "stages.0.lr_rule=steep",
        "stages.0.lr=find",
        "epochs=1",
        "train.checkpoints=false",
        "tracking.log_model=false",
        "tracking.system_metrics=true",
        "tracking.system_metrics_interval=0.2",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "= steep suggestion" in proc.stdout
    _, (run,) = _runs(tmp_path)
    assert run.data.params["lr_finder.suggest"] == "lrlab", "a stage runs the range test"
    assert run.data.metrics["system/cpu_utilization_percentage"] >= 0
    assert run.data.metrics["system/system_memory_usage_megabytes"] > 0


def test_user_config_dir_adds_an_experiment(run_cli, tmp_path: Path) -> None:
    user = tmp_path / "myconf" / "experiment"
    user.mkdir(parents=True)
    (user / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - smoke\nname: mine\nepochs: 1\ndata:\n  image_size: 16\n"
    )
    proc = run_cli(
        "--config-dir",
        str(tmp_path / "myconf"),
        "experiment=mine",
        "tracking=none",
        "train.checkpoints=false",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "16 px" in proc.stdout
    assert "stage full: 1 epoch(s)" in proc.stdout


@pytest.mark.slow
def test_two_runs_started_together_in_a_fresh_folder_get_their_own_directories(tmp_path: Path) -> None:
    """Both claim the same base directory (as two runs started in the same second do) and create
    the MLflow store at the same moment."""
    same = "hydra.run.dir=${lrlab_unique_dir:outputs/same-second}"
    procs = [spawn_lrlab(*SMOKE, "epochs=1", same, cwd=tmp_path) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-2000:] for o in outputs]
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["same-second", "same-second-1"]
    assert len(list((tmp_path / "outputs").rglob("best.pt"))) == 2
    _, runs = _runs(tmp_path)
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]


def test_the_default_run_directory_is_claimed_uniquely(tmp_path: Path, monkeypatch) -> None:
    from omegaconf import OmegaConf

    from lrlab.app import schema

    assert (
        "lrlab_unique_dir"
        in OmegaConf.to_container(OmegaConf.load(Path(CONFIG_DIR) / "config.yaml"), resolve=False)["hydra"][
            "run"
        ]["dir"]
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(schema, "_CLAIMED", {})
    assert schema.claim_directory("outputs/a") == "outputs/a"
    assert schema.claim_directory("outputs/a") == "outputs/a"  # asked again by the same run
    monkeypatch.setattr(schema, "_CLAIMED", {})  # another process
    assert schema.claim_directory("outputs/a") == "outputs/a-1"
    assert (tmp_path / "outputs" / "a-1").is_dir()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_ends_killed_not_running(tmp_path: Path, sig: int) -> None:
    proc = spawn_lrlab("experiment=smoke", "epochs=200", cwd=tmp_path)
    try:
        for line in proc.stdout:
            if line.startswith("epoch  train_loss"):
                break
        proc.send_signal(sig)
        rest = proc.communicate(timeout=120)[0]
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig
    assert f"lrlab: interrupted by {signal.Signals(sig).name}" in rest and "Traceback" not in rest
    assert len([line for line in rest.splitlines() if line.startswith("lrlab: interrupted")]) == 1
    log_file = next((tmp_path / "outputs").rglob("lrlab.log"))
    assert "KeyboardInterrupt" in log_file.read_text() or "Interrupted" in log_file.read_text()
    client, runs = _runs(tmp_path)
    assert [r.info.status for r in runs] == ["KILLED"]
    # the run's console, with the interruption's traceback, is in the run for the UI
    stored = Path(client.download_artifacts(runs[0].info.run_id, "logs/lrlab.log", str(tmp_path)))
    text = stored.read_text()
    assert "stage full: trainable" in text and "Traceback" in text and "Interrupt" in text


def test_plain_multirun_is_a_grid_study_sharing_one_store(run_cli, tmp_path: Path) -> None:
    proc = run_cli("-m", "experiment=smoke", "lr=1e-3,1e-2", "epochs=1", "train.checkpoints=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "multirun").glob("*/*/*") if p.is_dir()) == ["0", "1"]
    _, runs = _runs(tmp_path)
    parents = [r for r in runs if r.data.tags.get("lrlab.sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and len(children) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert sorted((r.info.status, r.data.params["stages.0.lr"]) for r in children) == [
        ("FINISHED", "0.001"),
        ("FINISHED", "0.01"),
    ]


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("http://127.0.0.1:9", "no MLflow server answers at 127.0.0.1:9"),
        ("garbage://x", "MLflow has no tracking store for 'garbage://'"),
    ],
)
def test_an_unusable_tracking_uri_exits_2_at_once_naming_it(
    run_cli, tmp_path: Path, uri: str, expected: str
) -> None:
    import time

    start = time.perf_counter()
    proc = run_cli("experiment=smoke", f"tracking.uri={uri}", timeout=90)
    # MLflow's own retries take minutes; the start-up alone took 7-10.5 s on a busy 2-core box
    assert time.perf_counter() - start < 30
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert expected in proc.stderr and f"tracking.uri={uri!r}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_read_only_store_exits_2_before_any_work(run_cli, tmp_path: Path) -> None:
    (tmp_path / "mlflow.db").write_bytes(b"")
    (tmp_path / "mlflow.db").chmod(0o444)
    if os.access(tmp_path / "mlflow.db", os.W_OK):
        pytest.skip("running as a user who can write read-only files (root)")
    proc = run_cli("experiment=smoke")
    assert proc.returncode == 2 and "is not writable" in proc.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["experiment=smoke", "stages.1.lr=1e-3"], "stages.1.lr: this configuration has 1 stage (0 full)"),
        (["stages.unfrozen.lr=1e-3"], "the unfrozen stage is stages.1.lr (0 head, 1 unfrozen)"),
        (["-m", "experiment=elpv,smoke", "stages.1.lr=1e-3,1e-2"], "stages.1.lr (with experiment=smoke):"),
    ],
)
def test_a_stage_the_configuration_lacks_is_named_with_the_stages_it_has(
    run_cli, tmp_path: Path, args: list, expected: str
) -> None:
    """Stages are a list: Hydra would say "dict is not a subclass of Stage", or print a traceback
    for a stage name; lrlab names the composed stages before any job starts (in a sweep over
    presets too, whatever job would come first)."""
    proc = run_cli(*args, "tracking=none")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert expected in proc.stderr and proc.stderr.count("\n") == 1
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()
