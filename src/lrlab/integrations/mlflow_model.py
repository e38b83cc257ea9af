"""A training run's model in MLflow's formats, two logged models in the run:

- `model`: the served model (`lrlab.integrations.mlflow_pyfunc.ImageClassifier`), a pyfunc that
  takes image bytes, base64 strings or file paths and returns class names and probabilities, with
  the checkpoint's preprocessing and TTA inside; `mlflow models serve -m runs:/<id>/model` answers
  what `task=predict` writes. lrlab's code travels with it (`code/`), so it loads where lrlab is
  not installed. This is the model `tracking.register_model` registers.
- `pytorch_model`: the raw network (`mlflow.pytorch` flavour) for users who want the module;
  inputs are preprocessed float32 (N, 3, size, size) images, outputs logits.

Both carry the class names, preprocessing and TTA as metadata, and real images as input examples.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("lrlab")
ARTIFACT_PATH = "model"
PYTORCH_ARTIFACT_PATH = "pytorch_model"
_NOISY = ("mlflow.models.model", "mlflow.pytorch", "mlflow.pyfunc", "mlflow.utils.requirements_utils")


def _requirements() -> list[str]:
    import numpy
    import pandas
    import PIL
    import timm
    import torch
    import torchvision
    import yaml

    return [
        f"torch=={torch.__version__.split('+')[0]}",
        f"torchvision=={torchvision.__version__.split('+')[0]}",
        f"timm=={timm.__version__}",
        f"pillow=={PIL.__version__}",
        f"numpy=={numpy.__version__}",
        f"pandas=={pandas.__version__}",
        f"pyyaml=={yaml.__version__}",
    ]


def _lrlab_code(folder: Path) -> Path:
    """A copy of the lrlab package (without bytecode) for the served model's `code/`."""
    import lrlab

    target = folder / "lrlab"
    shutil.copytree(
        Path(lrlab.__file__).parent, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    return target


def _example_batch(loaded: Any, model: Any, examples: Sequence[bytes]) -> tuple[Any, Any]:
    """The examples preprocessed as the raw network takes them, and its logits (a zero image
    when there are no examples)."""
    import torch

    from lrlab.integrations.mlflow_pyfunc import decode_image

    size = loaded.preprocess.image_size
    images = [loaded.preprocess(decode_image(data)) for data in examples]
    tensors = torch.stack(images) if images else torch.zeros(1, 3, size, size)
    with torch.no_grad():
        return tensors.numpy(), model(tensors).numpy()


def _served_signature(loaded: Any) -> Any:
    """The served model's schema: one binary `image` column in; the predicted class and one
    probability column per class out (`LoadedModel.prediction_columns`)."""
    from mlflow.models import ModelSignature
    from mlflow.types import DataType
    from mlflow.types.schema import ColSpec, Schema

    from lrlab.integrations.mlflow_pyfunc import INPUT_COLUMN

    outputs = [ColSpec(DataType.string, "predicted")]
    outputs += [ColSpec(DataType.double, name) for name in loaded.prediction_columns[1:]]
    return ModelSignature(inputs=Schema([ColSpec(DataType.binary, INPUT_COLUMN)]), outputs=Schema(outputs))


def _metadata(loaded: Any) -> dict[str, Any]:
    """What a client needs besides the weights: class names, preprocessing, TTA, model name."""
    return {
        "class_names": loaded.class_names,
        "preprocess": loaded.preprocess.to_dict(),
        "tta": loaded.tta,
        "model_name": loaded.meta.get("model_name"),
    }


def _quiet_mlflow() -> None:
    """Silence MLflow's loggers that warn about what lrlab sets on purpose, and its progress
    bars for one-file copies."""
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def log_models(
    uri: str,
    run_id: str,
    checkpoint: str | Path,
    registered_name: str | None = None,
    examples: Sequence[bytes] = (),
) -> dict[str, Any]:
    """Log the served model (`model`, registered as `registered_name` when given) and the raw
    network (`pytorch_model`) of the checkpoint into run `run_id` of the store at `uri`.
    `examples`: a few encoded images (PNG bytes) for the input examples. Returns `model_uri`,
    `model_id` (the served model's MLflow 3 id) and `registered_version`."""
    import mlflow
    import mlflow.pytorch
    import pandas as pd
    from mlflow.models import infer_signature

    from lrlab.integrations.mlflow_pyfunc import CHECKPOINT_ARTIFACT, INPUT_COLUMN
    from lrlab.models.checkpoint import load_model

    loaded = load_model(checkpoint)
    model = loaded.model.float().cpu().eval()
    tensors, logits = _example_batch(loaded, model, examples)
    metadata = _metadata(loaded)
    _quiet_mlflow()
    mlflow.set_tracking_uri(uri)
    mlflow.start_run(run_id=run_id)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            served = mlflow.pyfunc.log_model(
                name=ARTIFACT_PATH,
                python_model=str(Path(__file__).with_name("mlflow_served.py")),
                artifacts={CHECKPOINT_ARTIFACT: str(checkpoint)},
                code_paths=[str(_lrlab_code(Path(tmp)))],
                signature=_served_signature(loaded),
                input_example=pd.DataFrame({INPUT_COLUMN: list(examples)}) if examples else None,
                metadata={**metadata, "output": "predicted class, its probability, p_<class> per class"},
                pip_requirements=_requirements(),
                registered_model_name=registered_name,
            )
        mlflow.pytorch.log_model(
            model,
            name=PYTORCH_ARTIFACT_PATH,
            signature=infer_signature(tensors, logits),
            input_example=tensors,
            metadata={**metadata, "output": "logits; softmax gives class probabilities (no TTA)"},
            pip_requirements=_requirements()[:3],
            serialization_format="pickle",  # a whole nn.Module: any batch size (pt2 fixes the example's)
        )
    finally:
        # The run's own status is set by lrlab's tracker when the run ends; this only leaves the
        # fluent API's active-run stack.
        mlflow.end_run()
    version = getattr(served, "registered_model_version", None)
    return {
        "model_uri": f"runs:/{run_id}/{ARTIFACT_PATH}",
        "model_id": served.model_id,
        "registered_version": version,
    }
