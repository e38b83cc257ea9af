"""The trained model in MLflow's own format (`mlflow.pytorch` flavour) under the run's `model`
path, so `mlflow.pytorch.load_model("runs:/<id>/model")`, `mlflow models predict/serve` and the
model registry work; the preprocessing and class names travel as the model's metadata.

Inputs are what the network takes: float32 (N, 3, size, size) images already preprocessed (see
`metadata["preprocess"]`, or `lrlab.load_model(...).preprocess`); outputs are logits.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("lrlab")
ARTIFACT_PATH = "model"


def log_pytorch_model(
    uri: str, run_id: str, checkpoint: str | Path, registered_name: str | None = None
) -> dict[str, Any]:
    """Log the checkpoint's model into run `run_id` of the store at `uri` with a tensor signature
    and a one-image input example; register it as `registered_name` when given. Returns the
    logged model's info (`model_uri`, `registered_version`)."""
    import mlflow
    import mlflow.pytorch
    import numpy as np
    import timm
    import torch
    from mlflow.models import infer_signature

    from lrlab.models.checkpoint import load_model

    loaded = load_model(checkpoint)
    model = loaded.model.float().cpu().eval()
    size = loaded.preprocess.image_size
    example = np.zeros((1, 3, size, size), dtype=np.float32)
    with torch.no_grad():
        output = model(torch.from_numpy(example)).numpy()
    metadata = {
        "class_names": loaded.class_names,
        "preprocess": loaded.preprocess.to_dict(),
        "model_name": loaded.meta.get("model_name"),
        "output": "logits",
    }
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"timm=={timm.__version__}"]
    mlflow.set_tracking_uri(uri)
    for noisy in ("mlflow.models.model", "mlflow.pytorch", "mlflow.utils.requirements_utils"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    mlflow.start_run(run_id=run_id)
    try:
        info = mlflow.pytorch.log_model(
            model,
            name=ARTIFACT_PATH,
            signature=infer_signature(example, output),
            input_example=example,
            metadata=metadata,
            pip_requirements=requirements,
            registered_model_name=registered_name,
            serialization_format="pickle",  # a whole nn.Module: any batch size (pt2 fixes the example's)
        )
    finally:
        # The run's own status is set by lrlab's tracker when the run ends; this only leaves the
        # fluent API's active-run stack.
        mlflow.end_run()
    version = getattr(info, "registered_model_version", None)
    return {"model_uri": f"runs:/{run_id}/{ARTIFACT_PATH}", "registered_version": version}
