"""Dotted keys of a nested config (`stages.0.lr`): how params are logged and how a resumed
training's config is compared with its checkpoint's. torch-free."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Mappings by key and lists/tuples by index joined with dots; leaves (and empty containers)
    as they are."""
    if isinstance(tree, Mapping):
        pairs: Iterable[tuple[Any, Any]] = tree.items()
    elif isinstance(tree, (list, tuple)):
        pairs = enumerate(tree)
    else:
        return {prefix: tree}
    items: dict[str, Any] = {}
    for key, value in pairs:
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, (Mapping, list, tuple)) and len(value) > 0:
            items.update(flatten(value, name))
        else:
            items[name] = value
    return items
