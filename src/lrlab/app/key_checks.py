"""Keys a composed config holds beyond its schemas. Hydra's `+key=value` (which its own error for a
misspelt key suggests) adds a key even to a structured config, and OmegaConf's merge keeps it, so a
typo such as `+train.grad_acum=2` would otherwise train as if it were not there."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import types
import typing
from collections.abc import Iterable, Iterator
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from lrlab.app.composition import MORE_CONFIG_ARGS
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


def _dataclass_of(annotation: Any) -> Any:
    """The dataclass an annotation names (`X`, `X | None`), None for anything else."""
    if dataclasses.is_dataclass(annotation):
        return annotation
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return None
    options = [a for a in typing.get_args(annotation) if a is not type(None)]
    return options[0] if len(options) == 1 and dataclasses.is_dataclass(options[0]) else None


def misspelt_override(key: str, root: type, free: Iterable[str], within: str = "") -> str | None:
    """One sentence when the dotted `key` of a `key=value` override walks through the dataclass
    schemas from `root` to a name the schema there lacks, with the closest names (Hydra's own report
    suggests `+key=value`, which adds a key nothing reads); None when it is a key or reaches a node
    without a fixed schema (`Any`; `free`: top-level names such as the config groups and `data`,
    whose schema depends on the source). `within`: the dotted path `root` sits at (`data`)."""
    parts = key.split(".")
    if parts[0] in set(free):
        return None
    node: Any = root
    for depth, part in enumerate(parts):
        if typing.get_origin(node) is list:
            if not part.isdigit() or not typing.get_args(node):
                return None
            node = typing.get_args(node)[0]
            continue
        schema = _dataclass_of(node)
        if schema is None:
            return None
        hints = typing.get_type_hints(schema)
        if part not in hints:
            prefix = ".".join([within, *parts[:depth]] if within else parts[:depth])
            key = f"{within}.{key}" if within else key
            close = [
                f"{prefix}.{c}" if prefix else c for c in difflib.get_close_matches(part, list(hints), 3, 0.6)
            ]
            hint = f" (closest: {', '.join(close)})" if close else ""
            where = f"a key of {prefix}" if prefix else "a key of lrlab's config"
            return f"{key} is not {where}{hint}. `lrlab --cfg job` lists every key with its value."
        node = hints[part]
    return None


def misspelt_key(
    args: list[str], root: type, groups: Iterable[str], data_schemas: Iterable[type] = ()
) -> str | None:
    """`misspelt_override` for the first plain `key=value` of a command line whose key no schema
    has; the top-level names free are the config `groups` that are not fields of `root`, `data` and
    `hydra`. A `data.` key is refused only when none of `data_schemas` (every data source's) has it:
    which source runs is only known once Hydra composes. None when a config dir or search path is
    given (it may add groups)."""
    if any(arg.lstrip("+").startswith(MORE_CONFIG_ARGS) for arg in args):
        return None
    free = (set(groups) - {f.name for f in dataclasses.fields(root)}) | {"data", "hydra"}
    for arg in args:
        key, sep, _ = arg.partition("=")
        if sep and not arg.startswith(("-", "+", "~")) and not {"/", "@"} & set(key):  # hydra/launcher=..
            found = misspelt_override(key, root, free)
            if key.startswith("data.") and data_schemas:
                found = _misspelt_data_key(key.removeprefix("data."), list(data_schemas))
            if found:
                return found
    return None


def _misspelt_data_key(key: str, schemas: list[type]) -> str | None:
    """A source schema's report for a `data.` key (one naming close keys, if any does), when no
    source's schema has the key."""
    reports = [misspelt_override(key, schema, (), within="data") for schema in schemas]
    if not all(reports):
        return None
    return next((r for r in reports if r and "(closest:" in r), reports[0])
