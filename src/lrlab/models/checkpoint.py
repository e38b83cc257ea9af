"""The lrlab checkpoint file and the model it holds: atomic writes that load with
`weights_only=True` (a checkpoint can never run code), a SHA-256 of the payload (a damaged file is
named instead of loaded; torch.save has no checksum of its own), and `load_model`, which rebuilds a
ready-to-run model and its preprocessing from the metadata a training run stores with the weights."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lrlab.core.settings import TTA_FLIPS, TTA_MODES
from lrlab.data.preprocess import Preprocess
from lrlab.errors import LrlabError, describe, disk_full

FORMAT = "lrlab-checkpoint-1"


class CheckpointError(LrlabError):
    """A checkpoint file that is missing, empty, damaged or not a checkpoint."""


def save_atomic(obj: dict[str, Any], path: str | Path) -> Path:
    """torch.save `{format, sha256, payload}` (the payload: `obj` serialised by torch.save, as a
    uint8 tensor) to a temporary file in the same folder, then rename over `path` (never truncated)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getbuffer()  # a view: neither the digest nor the tensor copies the bytes
    envelope = {
        "format": FORMAT,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "payload": torch.frombuffer(payload, dtype=torch.uint8),  # stored raw, unlike bytes
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(envelope, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        full = disk_full(exc) if isinstance(exc, Exception) else None
        if full is not None and full.filename is None:  # torch.save names neither file nor cause
            raise OSError(full.errno, full.strerror, str(path)) from exc
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True` (tensors and plain containers only), checking its
    payload against the SHA-256 it was written with. Raises CheckpointError, one paragraph naming
    the file, for a missing, empty, damaged or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"checkpoint {path} is empty (0 bytes): its write was cut short; use another one"
        )
    envelope = _load_plain(path, io.FileIO(path), map_location)
    if not (isinstance(envelope, dict) and envelope.get("format") == FORMAT):
        raise CheckpointError(f"{path} is not an lrlab checkpoint (no {FORMAT} envelope)")
    payload = envelope.get("payload")
    payload = payload.numpy().tobytes() if isinstance(payload, torch.Tensor) else b""
    if hashlib.sha256(payload).hexdigest() != envelope.get("sha256"):
        raise CheckpointError(
            f"checkpoint {path} is damaged: its payload does not match the SHA-256 it was saved with "
            "(a disk or copy error changed it); use another checkpoint, e.g. last.pt instead of best.pt"
        )
    return _load_plain(path, io.BytesIO(payload), map_location)


def _load_plain(path: Path, source: Any, map_location: str | torch.device) -> Any:
    with source:
        try:
            return torch.load(source, map_location=map_location, weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
            raise CheckpointError(
                f"checkpoint {path} is damaged or not a checkpoint ({describe(exc, 200)}). "
                "lrlab loads checkpoints with weights_only=True and never runs code from them."
            ) from exc


class ProbabilityModel(nn.Module):
    """A classifier that returns class probabilities with its test-time augmentation inside:
    `tta="hflip"` averages the probabilities of each image and its mirror (`flips`: also flipped
    upside down, and both), as the test split was scored. The one prediction path: predict,
    load_model, the served model and the exported graph."""

    def __init__(self, model: nn.Module, tta: str = "none") -> None:
        super().__init__()
        if tta not in TTA_MODES:
            raise LrlabError(f"tta={tta!r} is not valid; choose one of: {', '.join(TTA_MODES)}")
        self.model, self.tta = model, tta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = TTA_FLIPS[self.tta]
        probs = [self.model(x.flip(dims) if dims else x).float().softmax(-1) for dims in views]
        return probs[0] if len(probs) == 1 else torch.stack(probs).mean(0)


@dataclass
class LoadedModel:
    """A trained model in eval mode with what it needs to predict on image files: its
    preprocessing, class names, the test-time augmentation its run scored with, and the metadata
    of that run."""

    model: nn.Module
    preprocess: Preprocess
    class_names: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        """One line (the dataclass's own would print the whole network and the saved config)."""
        classes = self.class_names if len(self.class_names) <= 8 else [*self.class_names[:8], "..."]
        run = self.meta.get("mlflow_run_id")
        return (
            f"LoadedModel({self.meta.get('model_name', type(self.model).__name__)}, "
            f"{len(self.class_names)} classes {classes}, {self.preprocess.image_size} px, tta {self.tta}"
            + (f", run {run})" if run else ")")
        )

    @property
    def tta(self) -> str:
        """The TTA the checkpoint's run evaluated with (`train.tta`): none | hflip | flips."""
        if "tta" in self.meta:
            return str(self.meta["tta"])
        import yaml

        saved = yaml.safe_load(self.meta.get("config") or "{}") or {}
        return str((saved.get("train") or {}).get("tta", "none"))

    def probability_model(self, tta: str | None = None) -> ProbabilityModel:
        """The network with softmax and TTA (`tta`, default: the run's own) as one module."""
        return ProbabilityModel(self.model, self.tta if tta is None else tta).eval()

    @torch.no_grad()
    def predict_proba(self, images: list[Any], tta: str | None = None) -> torch.Tensor:
        """Class probabilities (N, classes) for PIL images, with the run's TTA unless `tta` is given."""
        device = next(self.model.parameters()).device
        x = torch.stack([self.preprocess(image) for image in images]).to(device)
        return self.probability_model(tta)(x).cpu()

    @property
    def prediction_columns(self) -> list[str]:
        """The columns of `prediction_rows`, in order: `predicted`, `probability`, `p_<class>`..."""
        return ["predicted", "probability", *(f"p_{name}" for name in self.class_names)]

    def prediction_rows(self, images: list[Any], tta: str | None = None) -> list[dict[str, Any]]:
        """Per image the predicted class, its probability and one `p_<class>` column per class:
        the rows of `task=predict`'s CSV and of the served model's answer."""
        rows = []
        for probs in self.predict_proba(images, tta).tolist():
            best = max(range(len(probs)), key=probs.__getitem__)
            rows.append(
                {"predicted": self.class_names[best], "probability": probs[best]}
                | {f"p_{name}": value for name, value in zip(self.class_names, probs)}
            )
        return rows


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """The model of an lrlab checkpoint (`best.pt`, `last.pt`), rebuilt from its own metadata
    (timm architecture, classes, preprocessing) with the saved weights, in eval mode on `device`."""
    import timm

    checkpoint = load_checkpoint(path)
    meta = checkpoint.get("meta")
    if not isinstance(meta, dict) or "model_name" not in meta:
        raise CheckpointError(
            f"checkpoint {path} holds weights but no model description (written by an older lrlab); "
            "rebuild the model with its run's config and load checkpoint['model'] into it"
        )
    from lrlab.models.heads import attach_head

    classes = len(meta["class_names"])
    model = timm.create_model(meta["model_name"], pretrained=False, num_classes=classes)
    model = attach_head(model, str(meta.get("head", "classify")), classes)
    try:
        model.load_state_dict(checkpoint["model"], strict=True)
    except RuntimeError as exc:
        detail = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
        raise CheckpointError(
            f"checkpoint {path}: its metadata says {meta['model_name']} with {len(meta['class_names'])} "
            f"classes, but its weights do not fit that model ({detail[:300]}); the file was edited or "
            "assembled from two runs. Use the run's own best.pt or last.pt."
        ) from None
    return LoadedModel(
        model.to(device).eval(), Preprocess.from_dict(meta["preprocess"]), list(meta["class_names"]), meta
    )
