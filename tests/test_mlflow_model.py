"""The model in MLflow's format: `mlflow.pytorch.load_model("runs:/<id>/model")` and
`mlflow models predict` give the predictions `lrlab.load_model` gives on the same images, and
`tracking.register_model` puts it in the registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lrlab import load_model
from lrlab.app.build import build
from lrlab.core.types import EpochResult
from lrlab.integrations.mlflow import MlflowTracker
from lrlab.integrations.mlflow_model import log_pytorch_model
from lrlab.train.checkpoints import CheckpointCallback


class _Engine:
    def __init__(self, model: torch.nn.Module):
        self.model = model


def _digit_images(n: int) -> list[Image.Image]:
    from sklearn.datasets import load_digits

    raw = np.rint(load_digits().images[:n] * (255.0 / 16.0)).astype(np.uint8)
    return [Image.fromarray(image, mode="L") for image in raw]


def test_mlflow_model_predicts_what_lrlab_predicts_and_registers(compose_cfg, tmp_path: Path) -> None:
    import mlflow
    import mlflow.pytorch

    setup = build(compose_cfg("experiment=smoke", "tracking=none"))
    callback = CheckpointCallback(tmp_path / "ckpt", setup.model_description())
    callback.on_epoch_end(_Engine(setup.model), EpochResult("full", 0, 0, 1.0, 0.5, 0.1, 0.9, 1.0))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(uri, "digits")
    logged = log_pytorch_model(uri, tracker.run_id, tmp_path / "ckpt" / "best.pt", "digits-classifier")
    tracker.finish("FINISHED")
    assert logged["model_uri"] == f"runs:/{tracker.run_id}/model" and logged["registered_version"] == 1
    assert tracker.client.get_run(tracker.run_id).info.status == "FINISHED"
    assert tracker.client.get_registered_model("digits-classifier").name == "digits-classifier"

    loaded = load_model(tmp_path / "ckpt" / "best.pt")
    images = _digit_images(5)
    expected = loaded.predict_proba(images)
    x = torch.stack([loaded.preprocess(image) for image in images])
    mlflow.set_tracking_uri(uri)
    model = mlflow.pytorch.load_model(logged["model_uri"])
    with torch.no_grad():
        assert torch.allclose(model(x).softmax(-1), expected, atol=1e-6)
    info = mlflow.models.get_model_info(logged["model_uri"])
    assert info.metadata["class_names"] == loaded.class_names and info.signature is not None

    (tmp_path / "input.json").write_text(json.dumps({"inputs": x.numpy().tolist()}))
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    cli = [str(Path(sys.executable).with_name("mlflow")), "models", "predict", "-m", logged["model_uri"]]
    proc = subprocess.run(
        [*cli, "-i", "input.json", "-t", "json", "-o", "out.json", "--env-manager", "local"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    predictions = json.loads((tmp_path / "out.json").read_text())["predictions"]
    served = torch.tensor(predictions).softmax(-1)
    assert torch.allclose(served, expected, atol=1e-5)
    assert served.argmax(-1).tolist() == expected.argmax(-1).tolist()
