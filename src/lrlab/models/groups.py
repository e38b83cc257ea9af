"""Layer groups: timm's coarse `group_matcher` merged into `body_groups` contiguous chunks plus the
new head, so freezing and discriminative LRs work alike for every timm architecture (for a resnet
this gives fastai's split: [stem, layer1, layer2], [layer3, layer4], [head])."""

from __future__ import annotations

import numpy as np
import timm
from torch import nn

from lrlab.core.types import LayerGroup
from lrlab.errors import LrlabError


def _head_param_names(model: nn.Module) -> list[str]:
    head_ids = (
        {id(p) for p in model.get_classifier().parameters()} if hasattr(model, "get_classifier") else set()
    )
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
        raise LrlabError(
            f"{type(model).__name__} has no classifier head that timm can find (get_classifier)."
        )
    fine = _ordered_body_groups(model, set(head))
    n_body = max(1, min(body_groups, len(fine)))
    chunks = [c for c in np.array_split(np.arange(len(fine)), n_body) if len(c)]
    groups = [LayerGroup(f"body{i}", [n for j in chunk for n in fine[j]]) for i, chunk in enumerate(chunks)]
    groups.append(LayerGroup("head", head))
    return groups


def model_summary(model: nn.Module, groups: list[LayerGroup]) -> str:
    """One line per layer group with its parameter count, for the console and the log."""
    named = dict(model.named_parameters())
    rows = [f"  {g.name:<6} {sum(named[n].numel() for n in g.param_names):>12,d} params" for g in groups]
    return "\n".join(rows)
