"""Checkpoints named by an MLflow URI, fetched into a folder, so the checkpoint tasks take what the
MLflow UI shows: `runs:/<run id>` (the run's model: `checkpoints/final.pt`, or `best.pt` for runs
logged before lrlab logged the final model; or `runs:/<run id>/<artifact path>`) and
`models:/<name>/<version>` or `models:/<name>@<alias>` (the checkpoint inside lrlab's served model,
e.g. one `tracking.register_model` registered)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lrlab.errors import ConfigError
from lrlab.integrations.mlflow_store import opened_client

RUN_CHECKPOINTS = ("checkpoints/final.pt", "checkpoints/best.pt")  # what trainings log, newest first


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
        return _download_run_checkpoint(client, ref, run_id, [path] if path else list(RUN_CHECKPOINTS), dest)
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


def _download_run_checkpoint(client: Any, ref: str, run_id: str, paths: list[str], dest: Path) -> Path:
    """The first of the run's artifacts `paths` that it has (all in one folder), downloaded into
    `dest`; ConfigError naming the first when it has none."""
    from mlflow.exceptions import MlflowException

    wanted = paths[0]
    if len(paths) > 1:
        logged = {a.path for a in client.list_artifacts(run_id, str(Path(paths[0]).parent))}
        wanted = next((p for p in paths if p in logged), paths[0])
    try:
        return Path(client.download_artifacts(run_id, wanted, str(dest)))
    except (MlflowException, OSError) as exc:
        raise ConfigError(
            f"checkpoint={ref}: run {run_id} has no artifact {wanted} ({exc}); a training logs "
            f"{RUN_CHECKPOINTS[0]} (its final model) unless tracking.log_model=false."
        ) from None
