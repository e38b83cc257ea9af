"""Model creation from each weight source, head replacement and layer groups on real timm models."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from lrlab.app.model_checks import check_model_name
from lrlab.errors import ConfigError, LrlabError
from lrlab.models.factory import create_model, normalization
from lrlab.models.groups import layer_groups


def test_resnet_layer_groups_match_fastai_split() -> None:
    model = create_model("resnet18", num_classes=7)
    groups = layer_groups(model, body_groups=2)
    assert [g.name for g in groups] == ["body0", "body1", "head"]
    first, second, head = (set(n.split(".")[0] for n in g.param_names) for g in groups)
    assert first == {"conv1", "bn1", "layer1", "layer2"}
    assert second == {"layer3", "layer4"}
    assert head == {"fc"} and model.fc.out_features == 7
    names = [n for g in groups for n in g.param_names]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert len(names) == len(set(names))


def test_efficientnet_groups_keep_order_and_cover_everything() -> None:
    model = create_model("tf_efficientnet_lite0", num_classes=4, pretrained="bundled")
    groups = layer_groups(model, body_groups=3)
    assert len(groups) == 4 and groups[-1].param_names == ["classifier.weight", "classifier.bias"]
    assert groups[0].param_names[0] == "conv_stem.weight"
    assert "conv_head.weight" in groups[2].param_names
    assert sum(len(g.param_names) for g in groups) == len(list(model.parameters()))


def test_bundled_weights_keep_the_body_and_replace_the_head() -> None:
    model = create_model("tf_efficientnet_lite0", num_classes=4, pretrained="bundled")
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    from lrlab.models.weights import load_bundled_weights

    load_bundled_weights(reference, "tf_efficientnet_lite0")
    assert torch.equal(model.conv_stem.weight, reference.conv_stem.weight)
    assert model.classifier.out_features == 4
    norm = normalization(model)
    assert norm.mean == (0.5, 0.5, 0.5) and norm.std == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_weights_file_loads_body_and_resizes_head(tmp_path: Path, suffix: str) -> None:
    torch.manual_seed(0)
    source = timm.create_model("test_resnet", pretrained=False, num_classes=1000)
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    model = create_model("test_resnet", num_classes=3, pretrained=str(path))
    assert model.get_classifier().out_features == 3
    body = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    assert all(torch.equal(v, state[k]) for k, v in body.items())


class _Payload:
    """A pickle that, when unpickled with code allowed, creates the file it names."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("wrapped", [False, True])
def test_a_weights_file_that_would_run_code_is_refused_on_every_loading_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wrapped: bool
) -> None:
    """Whatever timm is installed: every torch.load lrlab makes (weights file, checkpoint, bundled
    weights) passes weights_only=True, and the payload never runs."""
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pt"
    state = {k: v for k, v in timm.create_model("test_resnet").state_dict().items()}
    torch.save({"state_dict": {**state, "x": _Payload(marker)}} if wrapped else _Payload(marker), evil)
    calls = []
    real_load = torch.load

    def checked_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", checked_load)
    with pytest.raises(LrlabError, match=r"evil\.pt cannot be read as plain tensors.*weights_only=True"):
        create_model("test_resnet", num_classes=3, pretrained=str(evil))
    from lrlab.train.checkpoints import load_checkpoint

    with pytest.raises(LrlabError, match=r"not a checkpoint|not an lrlab checkpoint"):
        load_checkpoint(evil)
    create_model("tf_efficientnet_lite0", num_classes=2, pretrained="bundled")
    assert not marker.exists()
    assert calls and all(flag is True for flag in calls)


def test_a_weights_file_of_another_architecture_names_the_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save(timm.create_model("test_efficientnet").state_dict(), path)
    with pytest.raises(
        LrlabError, match=r"does not fit ResNet: missing keys \(71\): conv1\.0\.weight"
    ) as err:
        create_model("test_resnet", num_classes=3, pretrained=str(path))
    assert "unexpected keys (83): conv_stem.weight" in str(err.value)
    torch.save({"model": {"module.fc.weight": torch.zeros(2, 2)}}, path)  # only a head: no body at all
    with pytest.raises(LrlabError, match=r"missing keys \(\d+\): conv1\.0\.weight") as err:
        create_model("test_resnet", num_classes=3, pretrained=str(path))
    assert "unexpected" not in str(err.value)
    torch.save([1, 2], path)
    with pytest.raises(LrlabError, match="holds no state dict of tensors"):
        create_model("test_resnet", num_classes=3, pretrained=str(path))


def test_a_training_checkpoint_is_unwrapped(tmp_path: Path) -> None:
    source = timm.create_model("test_resnet", num_classes=3)
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    model = create_model("test_resnet", num_classes=3, pretrained=str(path))
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())


def test_hub_weights_offline_name_the_offline_options() -> None:
    with pytest.raises(LrlabError, match=r"model\.pretrained=bundled"):
        create_model("resnet18", num_classes=2, pretrained=True)


def test_bundled_weights_need_the_matching_architecture() -> None:
    with pytest.raises(LrlabError, match="tf_efficientnet_lite0"):
        create_model("resnet18", num_classes=2, pretrained="bundled")


def test_unknown_model_name_suggests_close_matches() -> None:
    with pytest.raises(ConfigError, match="resnet50"):
        check_model_name("resnet9999")
    check_model_name("resnet50.a1_in1k")


@pytest.mark.parametrize("content", [b"hello\n", b"", b"\x80\x02garbage"])
def test_a_file_that_is_no_weights_at_all_is_named_not_a_traceback(tmp_path: Path, content: bytes) -> None:
    junk = tmp_path / "some.txt"
    junk.write_bytes(content)
    with pytest.raises(LrlabError, match=r"some\.txt cannot be read as plain tensors \(\w+"):
        create_model("test_resnet", num_classes=3, pretrained=str(junk))
