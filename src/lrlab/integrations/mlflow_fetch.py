"""Checkpoints named by an MLflow URI, fetched into a folder, so the checkpoint tasks take what the
MLflow UI shows: `runs:/<run id>` (the run's `checkpoints/best.pt`, or `runs:/<run id>/<artifact
path>`) and `models:/<name>/<version>` or `models:/<name>@<alias>` (the checkpoint inside lrlab's
served model, e.g. one `tracking.register_model` registered)."""

from __future__ import annotations

from pathlib import Path

from lrlab.errors import ConfigError
from lrlab.integrations.mlflow_store import opened_client

RUN_CHECKPOINT = "checkpoints/best.pt"  # what every tracked training logs (tracking.log_model)


def fetch_checkpoint(uri: str, ref: str, dest: Path) -> Path:
    """The local copy, under `dest`, of the checkpoint `ref` names in the store at `uri`;
    ConfigError naming what is missing (the run, its artifact, the model)."""
    from mlflow.exceptions import MlflowException

    dest.mkdir(parents=True, exist_ok=True)
    if ref.startswith("runs:/"):
        run_id, _, path = ref.removeprefix("runs:/").strip("/").partition("/")
        client = opened_client(uri)
        try:
            client.get_run(run_id)
        except MlflowException:
            raise ConfigError(
                f"checkpoint={ref}: {uri} holds no run {run_id}; start lrlab in the folder you trained "
                "in, or pass tracking.uri= of the store that holds the run."
            ) from None
        try:
            return Path(client.download_artifacts(run_id, path or RUN_CHECKPOINT, str(dest)))
        except (MlflowException, OSError) as exc:
            raise ConfigError(
                f"checkpoint={ref}: run {run_id} has no artifact {path or RUN_CHECKPOINT} ({exc}); a "
                "training logs checkpoints/best.pt unless tracking.log_model=false."
            ) from None
    import mlflow.artifacts

    try:
        local = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=ref, dst_path=str(dest), tracking_uri=uri)
        )
    except MlflowException as exc:
        raise ConfigError(f"checkpoint={ref}: no such model in {uri} ({exc}).") from None
    found = sorted(local.rglob("*.pt"))
    if len(found) != 1:
        raise ConfigError(
            f"checkpoint={ref} holds {len(found)} checkpoint files, not the one of lrlab's served model "
            "(`model`); pass checkpoint=runs:/<run id> of the training instead."
        )
    return found[0]
