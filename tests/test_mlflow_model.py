"""One prediction path: after a smoke training with hflip TTA, `task=predict`, the test split's
`test/*` metrics, `lrlab.load_model().predict_proba`, the logged image-taking MLflow model (in
process and behind a real `mlflow models serve`, PNGs posted as base64 JSON), the raw
`mlflow.pytorch` network and the ONNX export agree on the same images; the logged model carries
the final metrics per dataset, the experiment opens in the UI's classic view, and the model is
registered."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import predict_to_csv
from lrlab import load_model
from lrlab.app.build import build
from lrlab.models.checkpoint import load_checkpoint
from servers import free_port

TOLERANCE = 1e-5


def _serve(model_uri: str, uri: str, cwd: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cli = [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", model_uri]
    proc = subprocess.Popen(
        [*cli, "-p", str(port), "--env-manager", "local", "-w", "1"],
        env={
            **os.environ,
            "MLFLOW_TRACKING_URI": uri,
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # its uvicorn
        },
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"mlflow models serve exited {proc.returncode}: {proc.stderr.read()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                if response.status == 200:
                    return proc, url
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.5)
    proc.kill()
    raise AssertionError("mlflow models serve did not answer /ping within 120 s")


def _post(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{url}/invocations", json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_every_prediction_path_agrees_and_the_model_is_served_from_images(
    run_cli, compose_cfg, tmp_path: Path, monkeypatch
) -> None:
    import mlflow
    import mlflow.pytorch
    from mlflow.tracking import MlflowClient

    from lrlab.integrations.mlflow_store import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG

    # best.pt by the highest valid loss: the first epoch, not the final model the run reports on
    smoke = ("experiment=smoke", "epochs=2", "train.tta=hflip", "train.mode=max")
    trained = run_cli(*smoke, "train.checkpoints=true", "tracking.register_model=digits-classifier")
    assert trained.returncode == 0, trained.stderr[-3000:]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert client.get_registered_model("digits-classifier").latest_versions[0].version in (1, "1")
    final = next((tmp_path / "outputs").rglob("final.pt"))
    best = load_checkpoint(final.parent / "best.pt")
    assert best["epoch"] == 0 and load_checkpoint(final)["epoch"] == 1
    loaded = load_model(final)
    assert loaded.tta == "hflip"

    # The logged model's metrics are the run's final ones, each with its split's dataset.
    model_id = mlflow.models.get_model_info(f"runs:/{run.info.run_id}/model").model_id
    linked = {(m.key, m.dataset_name): m.value for m in client.get_logged_model(model_id).metrics}
    assert linked[("final_accuracy", "digits-valid")] == run.data.metrics["final_accuracy"]
    assert linked[("test/accuracy", "digits-test")] == run.data.metrics["test/accuracy"]

    # The test split as PNG files: task=predict scores them exactly as the run scored test/*.
    setup = build(compose_cfg(*smoke, "tracking=none"))
    folder = tmp_path / "test-images"
    folder.mkdir()
    targets = []
    for x, y in setup.test_loader:
        for image, target in zip(x, y.tolist()):
            (folder / f"{len(targets):04d}.png").write_bytes(setup.preprocess.to_png(image))
            targets.append(target)
    rows, csv_probs = predict_to_csv(run_cli, final, folder, tmp_path / "outputs", loaded.class_names)
    columns = [f"p_{name}" for name in loaded.class_names]
    accuracy = float(np.mean(csv_probs.argmax(1) == np.array(targets)))
    assert accuracy == pytest.approx(run.data.metrics["test/accuracy"], abs=1e-9)

    # task=evaluate rescores the same test split: its accuracy, and its loss is the CSV's
    # probabilities' log loss on those images. It takes the run as the MLflow UI names it.
    evaluated = run_cli("task=evaluate", f"checkpoint=runs:/{run.info.run_id}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    fetched = next((tmp_path / "outputs").rglob("checkpoint/final.pt"))
    assert fetched.read_bytes() == final.read_bytes()
    # The registered model brings the same checkpoint; what a store lacks is named.
    from lrlab.errors import ConfigError
    from lrlab.integrations.mlflow_fetch import fetch_checkpoint

    registered = fetch_checkpoint(uri, "models:/digits-classifier/1", tmp_path / "registered")
    assert registered.read_bytes() == final.read_bytes()
    with pytest.raises(ConfigError, match="holds no run nope"):
        fetch_checkpoint(uri, "runs:/nope", tmp_path / "missing")
    # From Python, lrlab.load_model takes the same names: the store is tracking_uri, else
    # MLFLOW_TRACKING_URI, else mlflow.db in the working folder
    images = [Image.open(path) for path in sorted(folder.glob("*.png"))[:4]]
    expected = loaded.predict_proba(images)
    for ref in (f"runs:/{run.info.run_id}", "models:/digits-classifier/1"):
        torch.testing.assert_close(load_model(ref, tracking_uri=uri).predict_proba(images), expected)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert load_model(f"runs:/{run.info.run_id}").class_names == loaded.class_names
    with pytest.raises(
        ConfigError, match=r"holds no run nope.*lrlab\.load_model\('runs:/nope', tracking_uri="
    ):
        load_model("runs:/nope", tracking_uri=uri)
    with pytest.raises(ConfigError, match=r"has no artifact checkpoints/last\.pt"):
        fetch_checkpoint(uri, f"runs:/{run.info.run_id}/checkpoints/last.pt", tmp_path / "missing")
    (evaluation,) = [
        r for r in client.search_runs([run.info.experiment_id]) if r.info.run_name.endswith("-evaluate")
    ]
    log_loss = -np.mean(np.log(csv_probs[np.arange(len(targets)), targets]))
    assert evaluation.data.metrics["test/accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert evaluation.data.metrics["test/loss"] == pytest.approx(log_loss, abs=1e-5)
    assert evaluation.data.metrics["test/loss"] == pytest.approx(run.data.metrics["test/loss"], abs=1e-5)

    files = sorted(folder.iterdir())[:4]
    images = [Image.open(f) for f in files]
    expected = loaded.predict_proba(images).numpy()
    assert np.abs(expected - csv_probs[:4]).max() <= TOLERANCE
    assert np.abs(expected - loaded.predict_proba(images, tta="none").numpy()).max() > TOLERANCE

    # The image-taking model, in process: bytes, base64 strings and paths give the same answer.
    served_model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    raw = [f.read_bytes() for f in files]
    for column in (raw, [base64.b64encode(b).decode() for b in raw], [str(f) for f in files]):
        answer = served_model.predict(pd.DataFrame({"image": column}))
        assert np.abs(answer[columns].to_numpy() - expected).max() <= TOLERANCE
        assert answer["predicted"].tolist() == [rows[i]["predicted"] for i in range(4)]
    example = mlflow.models.get_model_info(f"runs:/{run.info.run_id}/model")
    assert example.signature.inputs.input_names() == ["image"]
    assert example.metadata["tta"] == "hflip" and example.metadata["preprocess"]["antialias"] is True

    # The raw network: logits of preprocessed images, no TTA.
    network = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/pytorch_model")
    with torch.no_grad():
        logits = network(torch.stack([loaded.preprocess(image) for image in images]))
    assert np.abs(logits.softmax(-1).numpy() - loaded.predict_proba(images, tta="none").numpy()).max() <= 1e-6

    # ONNX: the graph has the same TTA inside.
    pytest.importorskip("onnxruntime")
    from lrlab.models.export import export_model

    done = export_model(loaded, tmp_path / "onnx", "onnx")
    import onnxruntime

    alone = tmp_path / "onnx-alone"
    alone.mkdir()
    shutil.copy(done.path, alone / "model.onnx")  # the graph file only, nothing beside it
    session = onnxruntime.InferenceSession(str(alone / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.stack([loaded.preprocess(image) for image in images]).numpy()
    assert np.abs(session.run(None, {"image": x})[0] - expected).max() <= TOLERANCE

    # A real server: PNGs posted as base64 JSON, the answer task=predict wrote.
    proc, url = _serve(f"runs:/{run.info.run_id}/model", uri, tmp_path)
    try:
        payload = {
            "dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(b).decode()] for b in raw]}
        }
        status, body = _post(url, payload)
        assert status == 200, body
        got = np.array([[p[c] for c in columns] for p in body["predictions"]])
        assert np.abs(got - csv_probs[:4]).max() <= TOLERANCE
        bad = base64.b64encode(b"not an image at all").decode()
        status, body = _post(url, {"dataframe_split": {"columns": ["image"], "data": [[bad]]}})
        assert status >= 400 and "could not decode an image" in json.dumps(body)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_run_logged_before_final_pt_still_resolves_to_its_best_pt(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from lrlab.integrations.mlflow_fetch import fetch_checkpoint

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("old", artifact_location=(tmp_path / "artifacts").as_uri())
    run_ids = []
    for names in (["best.pt"], ["best.pt", "final.pt"]):
        run_id = client.create_run(experiment).info.run_id
        for name in names:
            (tmp_path / name).write_bytes(name.encode())
            client.log_artifact(run_id, str(tmp_path / name), "checkpoints")
        run_ids.append(run_id)
    old, new = (fetch_checkpoint(uri, f"runs:/{r}", tmp_path / r) for r in run_ids)
    assert (old.name, old.read_bytes()) == ("best.pt", b"best.pt")
    assert (new.name, new.read_bytes()) == ("final.pt", b"final.pt")
