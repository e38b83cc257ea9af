"""`lrlab task=export format=onnx|torchscript`: the exported file returns the probabilities
`load_model().predict_proba` gives on real images, the run's TTA inside (ONNX checked with
onnxruntime from a folder holding that one file), and its sidecar lets a client with PIL alone
prepare the inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lrlab import load_model
from lrlab.app.build import build
from lrlab.core.types import EpochResult
from lrlab.errors import LrlabError
from lrlab.models.export import TOLERANCE, export_model
from lrlab.train.checkpoints import CheckpointCallback


class _Engine:
    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.history: list = []  # no epochs trained: the model's weights are any epoch's


@pytest.fixture
def checkpoint(compose_cfg, tmp_path: Path) -> Path:
    setup = build(compose_cfg("experiment=smoke", "tracking=none", "train.tta=hflip"))
    callback = CheckpointCallback(tmp_path / "ckpt", setup.model_description())
    callback.on_epoch_end(_Engine(setup.model), EpochResult("full", 0, 0, 1.0, 0.5, 0.1, 0.9, 1.0))
    return tmp_path / "ckpt" / "best.pt"


def _digit_images(n: int = 6) -> list[Image.Image]:
    from sklearn.datasets import load_digits

    raw = np.rint(load_digits().images[:n] * (255.0 / 16.0)).astype(np.uint8)
    return [Image.fromarray(image, mode="L") for image in raw]


def _pil_inputs(images: list[Image.Image], preprocess: dict) -> np.ndarray:
    """What a client without lrlab does, following model.json: resize with PIL, scale to 0..1,
    repeat grey to 3 channels, normalise."""
    assert preprocess["kind"] == "square" and preprocess["interpolation"] == "bilinear"
    assert preprocess["antialias"] is True
    size = preprocess["image_size"]
    mean = np.array(preprocess["mean"], dtype=np.float32).reshape(3, 1, 1)
    std = np.array(preprocess["std"], dtype=np.float32).reshape(3, 1, 1)
    out = []
    for image in images:
        pixels = np.asarray(image.convert("L").resize((size, size), Image.BILINEAR), dtype=np.float32)
        out.append((np.repeat(pixels[None] / 255.0, 3, axis=0) - mean) / std)
    return np.stack(out).astype(np.float32)


def test_onnx_export_is_one_file_with_the_runs_tta_inside(checkpoint: Path, tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    loaded = load_model(checkpoint)
    assert loaded.tta == "hflip"
    done = export_model(loaded, tmp_path / "export", "onnx")
    assert done.path.name == "model.onnx" and done.max_abs_diff is not None and done.max_abs_diff <= TOLERANCE
    assert sorted(p.name for p in done.path.parent.iterdir()) == ["model.json", "model.onnx"]
    sidecar = json.loads(done.sidecar.read_text())
    assert sidecar["class_names"] == [str(d) for d in range(10)] and sidecar["format"] == "onnx"
    assert sidecar["tta"] == "hflip" and sidecar["output"]["name"] == "probabilities"
    size = loaded.preprocess.image_size
    assert sidecar["input"]["shape"] == ["batch", 3, size, size]
    alone = tmp_path / "elsewhere"  # the file copied on its own, as a client receives it
    alone.mkdir()
    shutil.copy(done.path, alone / "model.onnx")
    session = onnxruntime.InferenceSession(str(alone / "model.onnx"), providers=["CPUExecutionProvider"])
    images = _digit_images()  # a batch size not exported
    x = torch.stack([loaded.preprocess(image) for image in images]).numpy()
    got = torch.from_numpy(session.run([sidecar["output"]["name"]], {sidecar["input"]["name"]: x})[0])
    assert torch.allclose(got.sum(-1), torch.ones(len(images)), atol=1e-5)
    assert torch.allclose(got, loaded.predict_proba(images), atol=TOLERANCE)
    assert not torch.allclose(got, loaded.predict_proba(images, tta="none"), atol=TOLERANCE)
    by_pil = session.run(None, {sidecar["input"]["name"]: _pil_inputs(images, sidecar["preprocess"])})[0]
    assert np.abs(by_pil - got.numpy()).max() <= TOLERANCE


def test_torchscript_export_reloads_without_lrlab_classes(checkpoint: Path, tmp_path: Path) -> None:
    loaded = load_model(checkpoint)
    done = export_model(loaded, tmp_path / "export", "torchscript")
    assert done.max_abs_diff is not None and done.max_abs_diff <= TOLERANCE
    scripted = torch.jit.load(str(done.path))
    images = _digit_images(3)
    x = torch.stack([loaded.preprocess(image) for image in images])
    with torch.no_grad():
        assert torch.allclose(scripted(x), loaded.predict_proba(images), atol=TOLERANCE)
    with pytest.raises(LrlabError, match="format='tflite' is not valid"):
        export_model(loaded, tmp_path / "bad", "tflite")


def test_export_cli_writes_the_file_and_refuses_an_unknown_format(
    run_cli, checkpoint: Path, tmp_path: Path
) -> None:
    proc = run_cli(
        "task=export", "format=torchscript", f"checkpoint={checkpoint}", "hydra.run.dir=exported", "epochs=3"
    )
    assert proc.returncode == 0, proc.stderr
    assert "exported torchscript" in proc.stdout + proc.stderr
    # Recent torch deprecates TorchScript three times per export (trace, trace_method, load), each
    # a FutureWarning with its source path: at most one lrlab line says so instead.
    console = proc.stdout + proc.stderr
    assert "FutureWarning" not in console and console.count("TorchScript is deprecated") <= 1
    assert (
        "not used by task=export, whose checkpoint brings the model and its preprocessing: epochs=3"
        in console
    )
    out = tmp_path / "exported" / "export"
    assert (out / "model.torchscript.pt").is_file()
    assert json.loads((out / "model.json").read_text())["format"] == "torchscript"
    bad = run_cli("task=export", "format=tflite", f"checkpoint={checkpoint}")
    assert bad.returncode == 2 and "format" in bad.stderr
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / "export").write_text("a file where the folder goes")
    blocked = run_cli(
        "task=export", "format=torchscript", f"checkpoint={checkpoint}", "hydra.run.dir=blocked"
    )
    assert blocked.returncode == 2 and "is a file, where task=export writes its folder" in blocked.stderr
    assert "Traceback" not in blocked.stderr


def test_onnx_export_carries_the_flips_tta(compose_cfg, tmp_path: Path) -> None:
    """flips (4 views) goes into the graph as hflip does, within the export's check."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    setup = build(compose_cfg("experiment=smoke", "tracking=none", "train.tta=flips"))
    callback = CheckpointCallback(tmp_path / "ckpt", setup.model_description())
    callback.on_epoch_end(_Engine(setup.model), EpochResult("full", 0, 0, 1.0, 0.5, 0.1, 0.9, 1.0))
    loaded = load_model(tmp_path / "ckpt" / "best.pt")
    assert loaded.tta == "flips"
    done = export_model(loaded, tmp_path / "export", "onnx")
    assert done.max_abs_diff is not None and done.max_abs_diff <= TOLERANCE
    assert json.loads(done.sidecar.read_text())["tta"] == "flips"
