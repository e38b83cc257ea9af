"""Keys a composed config holds beyond its schemas. Hydra's `+key=value` (which its own error for a
misspelt key suggests) adds a key even to a structured config, and OmegaConf's merge keeps it, so a
typo such as `+train.grad_acum=2` would otherwise train as if it were not there."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Iterator

from omegaconf import DictConfig, ListConfig, OmegaConf

from lrlab.errors import ConfigError


def unknown_keys(node: DictConfig | ListConfig, path: str = "") -> Iterator[tuple[str, list[str]]]:
    """(dotted key, the keys its schema has) for every key of a dataclass-typed node that is not a
    field of that dataclass, depth first; nodes without a schema (optimizer, schedule) are free."""
    if isinstance(node, ListConfig):
        for i, item in enumerate(node):
            if isinstance(item, DictConfig | ListConfig):
                yield from unknown_keys(item, f"{path}{i}.")
        return
    schema = OmegaConf.get_type(node)
    fields = [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else None
    for key in node:
        if fields is not None and key not in fields:
            yield f"{path}{key}", fields
            continue
        child = node._get_node(key)
        if isinstance(child, DictConfig | ListConfig) and not child._is_none():
            yield from unknown_keys(child, f"{path}{key}.")


def check_known_keys(cfg: DictConfig) -> None:
    """ConfigError naming the first key `cfg` holds that its schema lacks, with the closest keys."""
    for key, fields in unknown_keys(cfg):
        parent, _, name = key.rpartition(".")
        prefix = f"{parent}." if parent else ""
        close = [prefix + c for c in difflib.get_close_matches(name, fields, n=3, cutoff=0.6)]
        hint = f" Closest: {', '.join(close)}." if close else ""
        raise ConfigError(
            f"{key} is not a key of lrlab's config: `+{key}=...` would add a key that nothing reads, "
            f"so the run stops here.{hint} `lrlab --cfg job` lists every key with its value."
        )


def check_target_keys(node: DictConfig, section: str) -> None:
    """ConfigError naming a key of an instantiated node (`optimizer`, `schedule`) that its
    `_target_` does not take (`+optimizer.momentm=0.9` for AdamW), with the closest it does take;
    nothing for a target that takes any keyword or cannot be imported (instantiation names it)."""
    from hydra.utils import get_object

    try:
        parameters = inspect.signature(get_object(str(node["_target_"]))).parameters
    except Exception:  # no _target_, an unimportable one, or no signature to read
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    for key in node:
        if not (key.startswith("_") and key.endswith("_")) and key not in parameters:
            close = difflib.get_close_matches(str(key), list(parameters), n=3, cutoff=0.6)
            takes = ", ".join(name for name in parameters if name not in ("params", "lr"))
            hint = (
                f" Closest: {', '.join(f'{section}.{c}' for c in close)}."
                if close
                else f" It takes: {takes}."
            )
            raise ConfigError(
                f"{section}.{key} is not an argument of {node['_target_']}, so it cannot be passed on.{hint}"
            )
