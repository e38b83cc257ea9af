"""`task=evaluate checkpoint=PATH`: the checkpoint's model on its own data's test split (rebuilt
from the config saved in it), or on other labelled data given on the command line (`data=...`,
`data.*`), recorded as its own run in the experiment that trained it."""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lrlab.app.evaluate import checkpoint_data, evaluate_checkpoint
from lrlab.app.job import Job, RunResult
from lrlab.app.run_record import log_evaluation
from lrlab.app.schema import validate
from lrlab.app.tasks import override_key
from lrlab.app.tasks.checkpoint_ref import local_checkpoint
from lrlab.app.tasks.checkpoint_tta import checkpoint_tta
from lrlab.core.device import resolve_device
from lrlab.integrations.tracking import get_backend
from lrlab.models.checkpoint import LoadedModel, load_model

log = logging.getLogger("lrlab")
SPLIT_KEYS = ("split_seed", "valid_pct", "test_pct")  # what moves images between the splits


def run(job: Job) -> RunResult:
    cfg = validate(job.cfg)
    device = resolve_device(cfg.device)
    uri = get_backend(cfg.tracking.backend).resolve_uri(cfg.tracking.uri, job.launch_dir)
    loaded = load_model(local_checkpoint(cfg, job), device=device)  # the one read of the checkpoint
    tta = checkpoint_tta(cfg, job.overrides, loaded)
    data = data_to_evaluate(cfg, job.overrides, loaded)
    report = evaluate_checkpoint(str(cfg.checkpoint), loaded, job.output_dir, tta, device, data)
    run_id = log_evaluation(uri, cfg, loaded.meta, report, job.overrides, tta, data, job.output_dir)
    return RunResult([], {}, output_dir=job.output_dir, test=report.metrics, run_id=run_id)


def data_to_evaluate(cfg: DictConfig, overrides: list[str], loaded: LoadedModel) -> dict[str, Any] | None:
    """The data config the command line asks to evaluate on, None for the checkpoint's own.

    `data=NAME` (with any `data.*`) takes the composed data, at the checkpoint's image size unless
    `data.image_size` is given; `data.*` alone changes those keys of the checkpoint's own data (e.g.
    `data.split_seed`). The composed default otherwise brings the default problem, whatever the
    checkpoint's data, so it is not used."""
    keys = [override_key(o) for o in overrides]
    data_keys = [k for k in keys if k.startswith("data.")]
    if "data" in keys:
        data = OmegaConf.to_container(cfg.data, resolve=True)
        if "data.image_size" not in data_keys:
            data["image_size"] = loaded.preprocess.image_size
        return data
    if not data_keys:
        return None
    own = checkpoint_data(loaded)
    data = OmegaConf.create(own)
    for key in data_keys:
        OmegaConf.update(data, key.split(".", 1)[1], OmegaConf.select(cfg, key), merge=False)
    data = OmegaConf.to_container(data, resolve=True)
    moved = [f"data.{k}" for k in SPLIT_KEYS if data.get(k) != own.get(k)]
    if moved:
        log.warning(
            "%s %s from the checkpoint's run: this test split may hold images the model trained "
            "or was chosen on, so its figures are not a held-out estimate.",
            ", ".join(moved),
            "differ" if len(moved) > 1 else "differs",
        )
    return data
