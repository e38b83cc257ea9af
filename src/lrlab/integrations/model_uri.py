"""`lrlab.load_model` for what the MLflow UI shows as well as for files: `runs:/<run id>[/<artifact
path>]` and `models:/<name>/<version>` (or `@<alias>`) are fetched from the store first, as the
CLI's `checkpoint=` does, since a notebook has no task to fetch them. MLflow is imported only then."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from lrlab.errors import ConfigError
from lrlab.integrations.tracking import is_tracked
from lrlab.models.checkpoint import LoadedModel
from lrlab.models.checkpoint import load_model as load_checkpoint_model


def load_model(
    source: str | Path, device: str | torch.device = "cpu", tracking_uri: str | None = None
) -> LoadedModel:
    """The model of an lrlab checkpoint file (`final.pt`, `best.pt`, `last.pt`), or of the checkpoint
    a run or registered model holds (`runs:/<run id>` takes the run's final model,
    `checkpoints/final.pt`), rebuilt in eval mode on `device` with its preprocessing and class names.
    The store: `tracking_uri`, else `MLFLOW_TRACKING_URI`, else `mlflow.db` in the working folder
    (where `lrlab` puts it)."""
    ref = str(source)
    if not is_tracked(ref):
        return load_checkpoint_model(source, device)
    from lrlab.integrations.mlflow_fetch import fetch_checkpoint
    from lrlab.integrations.mlflow_store import default_tracking_uri

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(Path.cwd())
    with tempfile.TemporaryDirectory(prefix="lrlab-checkpoint-") as folder:
        try:
            path = fetch_checkpoint(uri, ref, Path(folder))
        except ConfigError as exc:
            raise ConfigError(
                f"{exc} From Python: lrlab.load_model({ref!r}, tracking_uri=...) names the store."
            ) from None
        return load_checkpoint_model(path, device)
