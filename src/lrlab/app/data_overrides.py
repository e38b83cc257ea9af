"""A check of `data.<key>=...` overrides whose key only some data sources have (`data.root` is the
image folder's, `data.dataset` torchvision's): Hydra's own error for such a key on another source
says "Key 'root' not in 'DigitsConfig'" with a traceback-like block; this one names the data option
the command composes and the options that have the key. It composes only when such a key is given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

from omegaconf import DictConfig

from lrlab.app.composition import NOT_PLAIN, first_composed_problem
from lrlab.app.tasks import override_key


def data_key_problem(
    args: Sequence[str], groups: Sequence[str], config_dir: str, schemas: Mapping[str, type]
) -> str | None:
    """One line for the first `data.<key>` override whose key the composed data source's schema
    (`schemas`: source name -> config dataclass) lacks while another source's has it; None when every
    such key fits, when none is given, or when the composition cannot be known before Hydra runs."""
    partial = _keys_of_some_sources(args, schemas)
    if not partial:
        return None

    def check(cfg: DictConfig, swept: list[str]) -> str | None:
        source, option = str(cfg.data.name), str(cfg.hydra.runtime.choices.get("data"))
        missing = [(arg, key) for arg, key in partial if key not in _fields(schemas.get(source))]
        if not missing:
            return None
        arg, key = missing[0]
        having = [f"data={name}" for name in _options_with(key, config_dir, schemas)]
        others = [c for c in swept if not c.startswith("data=")]  # the data option is named already
        where = f" (with {' '.join(others)})" if others else ""
        return (
            f"{override_key(arg)} is not a key of data={option}{where}: only {', '.join(having)} "
            f"{'has' if len(having) == 1 else 'have'} it. Choose one of them with data=NAME; "
            "`lrlab --cfg job` lists every key with its value."
        )

    return first_composed_problem(args, groups, config_dir, check)


def _keys_of_some_sources(args: Sequence[str], schemas: Mapping[str, type]) -> list[tuple[str, str]]:
    """(argument, top-level data key) of each plain `data.<key>=` override whose key some of the
    sources' schemas have and others do not."""
    found = []
    for arg in args:
        key, sep, _ = arg.partition("=")
        if not sep or arg.startswith(NOT_PLAIN) or not key.lstrip("+~").startswith("data."):
            continue
        name = key.lstrip("+~").removeprefix("data.").split(".")[0]
        having = sum(name in _fields(schema) for schema in schemas.values())
        if 0 < having < len(schemas):
            found.append((arg, name))
    return found


def _fields(schema: type | None) -> set[str]:
    return {f.name for f in dataclasses.fields(schema)} if schema is not None else set()


def _options_with(key: str, config_dir: str, schemas: Mapping[str, type]) -> list[str]:
    """The packaged data options (conf/data/*.yaml) whose source's schema has `key`."""
    options = sorted(path.stem for path in (Path(config_dir) / "data").glob("*.yaml"))
    return [o for o in options if key in _fields(schemas.get(_option_source(o, config_dir) or ""))]


def _option_source(option: str, config_dir: str, depth: int = 0) -> str | None:
    """The source a data option's YAML builds on: its `/data_<source>_schema` default, or that of
    the option it extends (`pets` extends `torchvision`)."""
    import yaml

    path = Path(config_dir) / "data" / f"{option}.yaml"
    if depth > 4 or not path.is_file():
        return None
    for entry in (yaml.safe_load(path.read_text()) or {}).get("defaults") or []:
        if isinstance(entry, str) and entry.startswith("/data_") and entry.endswith("_schema"):
            return entry.removeprefix("/data_").removesuffix("_schema")
        if isinstance(entry, str) and entry != "_self_":
            return _option_source(entry, config_dir, depth + 1)
    return None
