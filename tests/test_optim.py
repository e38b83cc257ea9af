"""Parameter groups and schedules checked against fastai's numbers."""

from __future__ import annotations

import itertools
import math
from functools import partial
from types import SimpleNamespace

import pytest
import torch

from lrlab.core.optim import build_optimizer, fused_default, group_lrs, no_weight_decay_names, param_groups
from lrlab.core.schedules import cosine, one_cycle
from lrlab.models.factory import create_model
from lrlab.models.groups import layer_groups


@pytest.fixture
def model_and_groups():
    model = create_model("resnet18", num_classes=5)
    return model, layer_groups(model, 2)


def test_param_groups_cover_all_params_and_skip_decay_on_norm_and_bias(model_and_groups) -> None:
    model, groups = model_and_groups
    for p in model.layer1.parameters():
        p.requires_grad_(False)
    pg = param_groups(model, groups, weight_decay=0.01)
    ids = [id(p) for g in pg for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    no_decay = {id(p) for g in pg if g["weight_decay"] == 0.0 for p in g["params"]}
    assert id(model.bn1.weight) in no_decay and id(model.fc.bias) in no_decay
    assert id(model.fc.weight) not in no_decay
    assert [g["layer_group"] for g in pg] == [0, 0, 1, 1, 2, 2]


def test_vit_tokens_embeddings_norms_and_biases_get_no_weight_decay() -> None:
    """On a ViT (random init, no download) the position embedding and class token that the model's
    own no_weight_decay() lists are exempt, as are norms and biases; attention and MLP weights
    and the patch-embedding kernel decay."""
    model = create_model("vit_small_patch16_224", num_classes=3, pretrained=False)
    assert {"pos_embed", "cls_token"} <= set(model.no_weight_decay())
    groups = layer_groups(model, 2)
    pg = param_groups(model, groups, weight_decay=0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    exempt = {names[id(p)] for g in pg if g["weight_decay"] == 0.0 for p in g["params"]}
    decayed = {names[id(p)] for g in pg if g["weight_decay"] == 0.05 for p in g["params"]}
    assert exempt | decayed == set(names.values()) and not exempt & decayed
    assert {"pos_embed", "cls_token", "norm.weight", "norm.bias", "blocks.0.norm1.weight"} <= exempt
    assert {"blocks.0.attn.qkv.bias", "blocks.0.mlp.fc1.bias", "head.bias"} <= exempt
    assert {"patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.0.mlp.fc2.weight"} <= decayed
    assert "head.weight" in decayed
    assert all(n.endswith(".weight") and "norm" not in n for n in decayed)
    assert no_weight_decay_names(model) == exempt


def test_adamw_defaults_are_fastais(model_and_groups, compose_cfg) -> None:
    from hydra.utils import instantiate

    model, groups = model_and_groups
    # data=digits: the optimizer option's own defaults (ELPV's recipe raises weight decay to 0.05)
    opt = build_optimizer(instantiate(compose_cfg("data=digits").optimizer), model, groups, lr=1e-3)
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["betas"] == (0.9, 0.99) and opt.defaults["eps"] == 1e-5
    assert {g["weight_decay"] for g in opt.param_groups} == {0.01, 0.0}


def test_one_cycle_follows_fastai(model_and_groups) -> None:
    model, groups = model_and_groups
    opt = build_optimizer(partial(torch.optim.AdamW, betas=(0.9, 0.99)), model, groups, lr=1.0)
    peaks = group_lrs(opt, [1e-4, 1e-3, 1e-2])
    total, div, div_final = 100, 25.0, 1e5
    sched = one_cycle(opt, peaks, total, pct_start=0.25, div=div, div_final=div_final)
    lrs, moms = [], []
    for _ in range(total):
        lrs.append([g["lr"] for g in opt.param_groups])
        moms.append(opt.param_groups[-1]["betas"][0])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx([p / div for p in peaks])
    peak_step = max(range(total), key=lambda i: lrs[i][-1])
    assert peak_step == 24 and lrs[peak_step] == pytest.approx(peaks)
    assert lrs[-1] == pytest.approx([p / div_final for p in peaks], rel=1e-6)
    assert (
        moms[0] == pytest.approx(0.95) and moms[24] == pytest.approx(0.85) and moms[-1] == pytest.approx(0.95)
    )
    mid = 12
    expected = peaks[-1] / div + (peaks[-1] - peaks[-1] / div) * (1 - math.cos(math.pi * mid / 24)) / 2
    assert lrs[mid][-1] == pytest.approx(expected)


def test_cosine_warmup_then_decay(model_and_groups) -> None:
    model, groups = model_and_groups
    opt = build_optimizer(partial(torch.optim.SGD, momentum=0.9), model, groups, lr=1.0)
    sched = cosine(opt, group_lrs(opt, [0.1] * 3), 40, pct_start=0.1, div=10, div_final=1e3)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.01) and lrs[4] == pytest.approx(0.1)
    assert lrs[-1] == pytest.approx(1e-4) and all(a >= b for a, b in itertools.pairwise(lrs[4:]))


def test_fused_kernels_on_cuda_unless_the_config_says_otherwise(model_and_groups, monkeypatch) -> None:
    model, _ = model_and_groups
    assert fused_default(partial(torch.optim.AdamW, betas=(0.9, 0.99)), model) == {}  # CPU model
    on_cuda = torch.nn.Linear(1, 1)  # only its first parameter's device is read: stand in a CUDA one
    monkeypatch.setattr(
        on_cuda, "parameters", lambda recurse=True: iter([SimpleNamespace(device=torch.device("cuda"))])
    )
    assert fused_default(partial(torch.optim.AdamW, betas=(0.9, 0.99)), on_cuda) == {"fused": True}
    assert fused_default(partial(torch.optim.SGD, momentum=0.9, fused=None), on_cuda) == {"fused": True}
    assert fused_default(partial(torch.optim.AdamW, fused=False), on_cuda) == {}
    assert fused_default(lambda params, lr: torch.optim.AdamW(params, lr), on_cuda) == {}


@pytest.mark.gpu
def test_adamw_on_cuda_is_fused_and_steps(compose_cfg) -> None:
    from hydra.utils import instantiate

    model = create_model("resnet18", num_classes=5).cuda()
    opt = build_optimizer(
        instantiate(compose_cfg("data=digits").optimizer), model, layer_groups(model, 2), 1e-3
    )
    assert opt.defaults["fused"] is True
    before = model.fc.weight.detach().clone()
    model(torch.randn(2, 3, 32, 32, device="cuda")).sum().backward()
    opt.step()
    assert not torch.equal(before, model.fc.weight)


def test_layer_decay_scales_every_block_by_timm_and_leaves_frozen_flags_alone() -> None:
    from lrlab.core.optim import layer_decay_scales

    model = create_model("tf_efficientnet_lite0", num_classes=4)
    for p in model.conv_stem.parameters():
        p.requires_grad_(False)
    scales = layer_decay_scales(model, 0.8)
    assert set(scales) == {n for n, _ in model.named_parameters()}  # frozen ones too
    assert not model.conv_stem.weight.requires_grad and model.classifier.weight.requires_grad
    layers = 18  # as timm's group_matcher maps Lite0: the stem lowest, conv_head next to the classifier
    assert scales["classifier.weight"] == 1.0 and scales["conv_head.weight"] == pytest.approx(0.8)
    assert scales["conv_stem.weight"] == pytest.approx(0.8 ** (layers - 1))
    assert scales["blocks.0.0.conv_dw.weight"] < scales["blocks.6.0.conv_pwl.weight"] < 1.0


def test_layer_decay_splits_the_groups_and_scales_their_lrs() -> None:
    model = create_model("tf_efficientnet_lite0", num_classes=4)
    groups = layer_groups(model, 2)
    optimizer = build_optimizer(
        partial(torch.optim.AdamW, weight_decay=0.01), model, groups, 1e-3, layer_decay=0.8
    )
    plain = build_optimizer(partial(torch.optim.AdamW, weight_decay=0.01), model, groups, 1e-3)
    assert len(optimizer.param_groups) > len(plain.param_groups) and "lr_scale" not in plain.param_groups[0]
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    lrs = group_lrs(optimizer, [1e-3, 1e-3, 1e-2])
    for group, lr in zip(optimizer.param_groups, lrs):
        assert lr == pytest.approx([1e-3, 1e-3, 1e-2][group["layer_group"]] * group["lr_scale"])
    assert min(lrs) == pytest.approx(1e-3 * 0.8**17) and max(lrs) == pytest.approx(1e-2)
    assert lrs[-1] == pytest.approx(1e-2)  # the head's group last: the range test's reference LR


def test_layer_decay_reaches_the_optimizer_and_prodigy_refuses_it(compose_cfg) -> None:
    from lrlab.app.build import build
    from lrlab.app.schema import validate
    from lrlab.errors import ConfigError

    setup = build(compose_cfg("experiment=smoke", "train.layer_decay=0.7", "tracking=none"))
    assert len({g["lr_scale"] for g in setup.optimizer.param_groups}) > 2
    with pytest.raises(ConfigError, match=r"train\.layer_decay does not apply to optimizer=prodigy"):
        validate(compose_cfg("experiment=smoke", "optimizer=prodigy", "lr=1", "train.layer_decay=0.7"))
