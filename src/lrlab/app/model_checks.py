"""Checks of the `model` section the schema's types cannot express: a timm architecture that
exists (with close matches when not) and weights that can be loaded offline or named."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from lrlab.errors import ConfigError


def check_model_name(name: str) -> None:
    """Fail with close matches when timm has no architecture called `name`."""
    import timm

    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=6, cutoff=0.6)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    raise ConfigError(
        f"model.name={name!r} is not a timm model.{hint} "
        "List every name with `python -c \"import timm; print(timm.list_models('*resnet*'))\"`."
    )


def check_pretrained(value: Any) -> None:
    """`model.pretrained` is false, true, 'bundled' or the path of an existing weights file."""
    if isinstance(value, bool) or value in ("bundled",):
        return
    if isinstance(value, str) and Path(value).expanduser().is_file():
        return
    raise ConfigError(
        f"model.pretrained={value!r} is not valid: use false (random init), true (timm hub, needs "
        "internet), bundled (offline ImageNet EfficientNet-Lite0/1/2), or the path of an existing "
        ".pth/.safetensors weights file."
    )
