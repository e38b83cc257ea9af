"""Checkpoints of a training: the callback that writes `last.pt` every epoch (with the
`ResumeState` to continue from), `best.pt` by valid_loss and, when the training ends, `final.pt`
(the final model: the one the test split scores and the tracker logs), each written atomically in lrlab's
checkpoint file format (`lrlab.models.checkpoint`) with the model's description, so
`lrlab.load_model(path)` rebuilds it; and `load_resume`, which finds the checkpoint `resume=` names."""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lrlab.core.monitor import Monitor
from lrlab.core.types import Callback, EpochResult
from lrlab.errors import ConfigError
from lrlab.models.checkpoint import CheckpointError, load_checkpoint, save_atomic
from lrlab.train.resume import Decisions, ResumeState

__all__ = ["CheckpointCallback", "CheckpointError", "load_checkpoint", "model_state", "save_atomic"]


CONFIG_FILE = "config.yaml"
"""Beside `last.pt`: the resolved config of the run that writes the checkpoints."""


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as contiguous CPU tensors (independent of device and memory format)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def holds_weights_of(engine: Any, result: EpochResult) -> bool:
    """Whether the engine's model holds the weights at the end of `result`'s epoch: its latest epoch.
    Not so for the earlier raced epochs an `lr=auto` winner replays to the callbacks, whose weights
    the race did not keep."""
    return not engine.history or engine.history[-1].epoch == result.epoch


class CheckpointCallback(Callback):
    """Writes `last.pt` every epoch and `best.pt` whenever the monitored metric improves (default:
    valid_loss); with `save_top_k` > 1 also the k best epochs as `top/epoch<N>-<metric><value>.pt`;
    `save_final()` writes the last epoch's model as `final.pt`. `meta` (the model's description:
    architecture, classes, preprocessing, config, lrlab version) goes into every file, and its
    config also into `config.yaml` beside them, which `resume=auto` reads."""

    def __init__(
        self,
        directory: str | Path,
        meta: Mapping[str, Any] | None = None,
        monitor: Monitor | None = None,
        save_top_k: int = 1,
    ):
        self.directory = Path(directory)
        self.meta = dict(meta or {})
        self.monitor = monitor or Monitor()
        self.save_top_k = save_top_k
        self.best_value = self.monitor.worst()
        self.best_path: Path | None = None
        self._last_payload: dict[str, Any] | None = None  # the latest epoch's, without training state
        self._best_payload: dict[str, Any] | None = None  # best.pt's, in this process
        self.top: list[tuple[float, Path]] = []
        self.stage_index: int | None = None  # the running stage, as the staged trainer announced it
        self.decisions: Decisions = {}
        self._started = False  # whether this training has written its first last.pt

    def on_stage_start(self, engine: Any, start: Any) -> None:
        self.stage_index, self.decisions = start.index, dict(start.decisions)

    def on_epoch_end(self, engine: Any, result: EpochResult) -> None:
        if not holds_weights_of(engine, result):
            return  # an lr=auto race's earlier epoch, replayed: only its last raced epoch's weights exist
        payload = {
            "model": model_state(engine.model),
            "epoch": result.epoch,
            "stage": result.stage,
            "metrics": result.metrics(),
            "meta": self.meta,
        }
        resume = None  # only a staged training (which announces its stages) can be resumed
        if self.stage_index is not None:
            done = result.stage_epoch + 1
            state = ResumeState.capture(engine, self.stage_index, self.decisions, done, result.epoch + 1)
            resume = state.to_payload()
        save_atomic({**payload, "resume": resume}, self.directory / "last.pt")
        if not self._started:
            self._start_directory()
        self._last_payload = payload
        value = self.monitor.value(result)
        if self.monitor.better(value, self.best_value):
            self.best_value, self._best_payload = value, payload
            self.best_path = save_atomic(payload, self.directory / "best.pt")
        if self.save_top_k > 1:
            self._keep_top(value, result.epoch, lambda path: save_atomic(payload, path))

    def _start_directory(self) -> None:
        """At this training's first `last.pt`: `config.yaml` beside it (the run's resolved config
        as the checkpoints hold it, so `resume=auto` compares it without opening every `last.pt`;
        atomically), and no `finished` mark left by an earlier training in the same directory."""
        self._started = True
        finished_mark(self.directory).unlink(missing_ok=True)
        if "config" in self.meta:
            target = self.directory / CONFIG_FILE
            partial = target.with_name(target.name + ".partial")
            partial.write_text(str(self.meta["config"]))
            partial.replace(target)

    def mark_finished(self) -> None:
        """Record beside `last.pt` that its training ended FINISHED (test split scored, model
        written), so resubmitting it redoes nothing even where no tracking store keeps the status."""
        if (self.directory / "last.pt").is_file():
            finished_mark(self.directory).touch()

    def continue_from(self, resume: ResumeState) -> None:
        """Before a resumed training: the best epoch and the top-k of the epochs trained before the
        interruption, their files copied from the interrupted run's checkpoints (where they still
        are), so `best.pt`, `top/` and `train.restore_best` cover the whole training."""
        before = Path(resume.path).parent
        best_epoch = None
        for result in resume.history:
            value = self.monitor.value(result)
            if self.monitor.better(value, self.best_value):
                self.best_value, best_epoch = value, result.epoch
            if self.save_top_k > 1:
                self._keep_top(value, result.epoch, lambda path: _copy(before / "top" / path.name, path))
        found = before / "best.pt"
        if best_epoch is None or not found.is_file():
            return
        payload = load_checkpoint(found)
        if payload.get("epoch") == best_epoch:
            self._best_payload = {k: v for k, v in payload.items() if k != "resume"}
            self.best_path = _copy(found, self.directory / "best.pt")

    @property
    def best_epoch(self) -> int | None:
        """The epoch `best.pt` holds (None before any with a finite monitored value)."""
        return int(self._best_payload["epoch"]) if self._best_payload is not None else None

    def save_final(self) -> Path | None:
        """`final.pt`: the model of the last epoch this callback saw (or of the best, after
        `restore_best`), without the training state, as `best.pt` holds its epoch's; None before
        any epoch. What a training reports on test and logs as its model."""
        if self._last_payload is None:
            return None
        return save_atomic(self._last_payload, self.directory / "final.pt")

    def restore_best(self, model: nn.Module) -> dict[str, Any] | None:
        """Load the weights of the best epoch into `model` and make them the final model; that
        epoch's payload (epoch, stage, metrics), or None when there is none (no finite metric, or a
        resumed training whose best epoch's file is gone keeps its last epoch)."""
        if self._best_payload is None:
            return None
        model.load_state_dict(self._best_payload["model"])
        self._last_payload = self._best_payload
        return self._best_payload

    def _keep_top(self, value: float, epoch: int, write: Callable[[Path], Path | None]) -> None:
        """Keep the files of the `save_top_k` best epochs (`write` puts an epoch's file in place, None
        when it cannot), deleting the one that drops out."""
        if math.isnan(value):
            return
        rank = sum(self.monitor.better(kept, value) or kept == value for kept, _ in self.top)
        if rank >= self.save_top_k:
            return
        path = write(self.directory / "top" / f"epoch{epoch}-{self.monitor.metric}{value:.4f}.pt")
        if path is None:
            return
        self.top.insert(rank, (value, path))
        for _, dropped in self.top[self.save_top_k :]:
            dropped.unlink(missing_ok=True)
        del self.top[self.save_top_k :]


def _copy(source: Path, destination: Path) -> Path | None:
    """`source` copied to `destination` (atomically; nothing to do when they are one file), or
    None when `source` is gone."""
    if not source.is_file():
        return None
    if destination.exists() and destination.samefile(source):
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    shutil.copyfile(source, partial)
    return partial.replace(destination)


def load_resume(resume: str, config_yaml: str, launch_dir: Path) -> ResumeState | None:
    """The training state of the checkpoint `resume` names (a `last.pt`, or `auto`: the newest
    `outputs/**/last.pt` under `launch_dir` whose run had this same config: `config_yaml`, the
    resolved config as checkpoints store it, compared without its `resume` key). None when `auto`
    finds none (the caller starts a new training); ConfigError when the checkpoint holds no state."""
    wanted = saved_config(config_yaml)
    candidates = [Path(resume).expanduser()] if resume != "auto" else resumable_checkpoints(launch_dir)
    for path in candidates:
        beside = path.parent / CONFIG_FILE
        if resume == "auto" and beside.is_file() and saved_config(beside.read_text()) != wanted:
            continue  # its config.yaml says another training: no need to open it
        checkpoint = load_checkpoint(path)
        meta = checkpoint.get("meta") or {}
        if resume == "auto" and saved_config(meta.get("config") or "{}") != wanted:
            continue
        if not checkpoint.get("resume"):
            raise ConfigError(
                f"resume: {path} holds no training state to continue from (written by an older lrlab)"
            )
        return ResumeState.from_checkpoint(checkpoint, str(path))
    return None


def resumable_checkpoints(launch_dir: Path) -> list[Path]:
    """Every `outputs/**/checkpoints/last.pt` under `launch_dir`, newest first: what `resume=auto`
    looks through."""
    found = (launch_dir / "outputs").rglob("checkpoints/last.pt")
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def finished_mark(directory: Path) -> Path:
    """The file in a run's `checkpoints/` that says its training ended FINISHED."""
    return directory / "finished"


def recorded_config(path: Path) -> str:
    """The resolved config (YAML) of the run that wrote checkpoint `path`: the `config.yaml` beside
    it, or where that is missing (runs before it was written) the checkpoint's own."""
    beside = path.parent / CONFIG_FILE
    if beside.is_file():
        return beside.read_text()
    return str((load_checkpoint(path).get("meta") or {}).get("config") or "{}")


def saved_config(config_yaml: str) -> dict[str, Any]:
    """A resolved config as a checkpoint stores it (YAML text), without its `resume` key: what
    `resume=auto` compares."""
    import yaml

    found = yaml.safe_load(config_yaml) or {}
    found.pop("resume", None)
    return found
