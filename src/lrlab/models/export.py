"""Export a trained model to ONNX or TorchScript for serving without lrlab, each file with a JSON
sidecar (class names, input size, preprocessing, TTA) and a parity check against PyTorch.

The exported graph is `ProbabilityModel`: softmax and the run's test-time augmentation are inside
it, so it returns the probabilities `task=predict` writes. ONNX is one self-contained file (weights
inside) below protobuf's 2 GB limit. The check runs the file on a batch and compares with PyTorch
(ONNX through onnxruntime, when installed); exports that disagree by more than `TOLERANCE` fail.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from lrlab.errors import LrlabError
from lrlab.models.checkpoint import LoadedModel

log = logging.getLogger("lrlab")

FORMATS = ("onnx", "torchscript")
TOLERANCE = 1e-5  # max absolute probability difference accepted between PyTorch and the exported file
INPUT_NAME, OUTPUT_NAME = "image", "probabilities"
SINGLE_FILE_BYTES = 1_900_000_000  # ONNX holds its weights inside below protobuf's 2 GiB message limit


@dataclass
class Exported:
    """Where the export went and how closely it reproduces PyTorch (None: not checked)."""

    path: Path
    sidecar: Path
    max_abs_diff: float | None


def example_batch(loaded: LoadedModel, batch_size: int = 4, seed: int = 0) -> torch.Tensor:
    """A normalised random batch shaped like the model's inputs (N, 3, size, size)."""
    size = loaded.preprocess.image_size
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, 3, size, size, generator=generator)


def export_model(loaded: LoadedModel, output_dir: str | Path, fmt: str = "onnx") -> Exported:
    """Write `model.onnx` or `model.torchscript.pt` and `model.json` under `output_dir`, then run
    the file on an example batch and compare with PyTorch (LrlabError beyond `TOLERANCE`)."""
    if fmt not in FORMATS:
        raise LrlabError(f"format={fmt!r} is not valid; choose one of: {', '.join(FORMATS)}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model = loaded.probability_model().float().cpu().eval()
    x = example_batch(loaded)
    with torch.no_grad():
        expected = model(x)
    if fmt == "onnx":
        path, got = _onnx(model, x, output_dir / "model.onnx")
    else:
        path, got = _torchscript(model, x, output_dir / "model.torchscript.pt")
    diff = None if got is None else float((got - expected).abs().max())
    if diff is not None and diff > TOLERANCE:
        raise LrlabError(
            f"the exported {fmt} model's probabilities differ from PyTorch by {diff:.2e} (> {TOLERANCE:g}) "
            "on a test batch"
        )
    sidecar = output_dir / "model.json"
    sidecar.write_text(json.dumps(_description(loaded, fmt, path), indent=2) + "\n")
    return Exported(path, sidecar, diff)


def _description(loaded: LoadedModel, fmt: str, path: Path) -> dict:
    """What a serving program needs besides the file: input layout, preprocessing, class names."""
    size = loaded.preprocess.image_size
    return {
        "file": path.name,
        "format": fmt,
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, size, size], "dtype": "float32"},
        "output": {
            "name": OUTPUT_NAME,
            "meaning": "class probabilities, in class_names order (softmax and TTA are inside the graph)",
        },
        "tta": loaded.tta,
        "preprocess": loaded.preprocess.to_dict(),
        "class_names": loaded.class_names,
        "model_name": loaded.meta.get("model_name"),
        "lrlab_version": loaded.meta.get("lrlab_version"),
        "mlflow_run_id": loaded.meta.get("mlflow_run_id"),
    }


def _onnx(model: torch.nn.Module, x: torch.Tensor, path: Path) -> tuple[Path, torch.Tensor | None]:
    try:
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
    except ImportError as exc:
        raise LrlabError("format=onnx needs the export extra: pip install 'lrlab[export]'") from exc
    batch = torch.export.Dim("batch", min=1)
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    external = size > SINGLE_FILE_BYTES
    if external:
        log.warning(f"the weights ({size / 1e9:.1f} GB) exceed ONNX's 2 GB file: they go to {path.name}.data")
    chatter = io.StringIO()  # what the exporter prints of its passes: logged at debug level
    with _quiet_exporter(), contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
        torch.onnx.export(
            model,
            (x,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            dynamo=True,
            external_data=external,
            verbose=False,
        )
    log.debug(chatter.getvalue())
    try:
        import onnxruntime
    except ImportError:
        log.warning("onnxruntime is not installed: the ONNX file was not checked against PyTorch")
        return path, None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return path, torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The ONNX exporter's and optimiser's INFO logs and warnings held back (dozens of lines per
    export about passes and deduplicated initialisers)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _torchscript(model: torch.nn.Module, x: torch.Tensor, path: Path) -> tuple[Path, torch.Tensor]:
    """A traced TorchScript file and its output on `x`. Recent PyTorch deprecates TorchScript with a
    FutureWarning from each of trace, trace_method and load: one line of lrlab's says it instead."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FutureWarning)
        traced = torch.jit.trace(model, x)
        traced.save(str(path))
        reloaded = torch.jit.load(str(path))
    deprecations = [
        w for w in caught if issubclass(w.category, FutureWarning) and "deprecated" in str(w.message)
    ]
    for warning in caught:
        if warning not in deprecations:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if deprecations:
        log.warning(
            f"TorchScript is deprecated in torch {torch.__version__} (it still loads with torch.jit.load); "
            "format=onnx is the export PyTorch maintains."
        )
    with torch.no_grad():
        return path, reloaded(x)
