"""The command's group choices composed before Hydra runs, for the checks that need to know what a
command composes (its stages, its data source) to name a problem better than Hydra's error would.
Composing once takes about a third of a second, so the checks call this only when an override
needs it."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from omegaconf import DictConfig

NOT_PLAIN = ("-", "hydra.", "+hydra.", "++hydra.")
# Arguments that add configs, so options and stages may exist beyond the packaged tree.
MORE_CONFIG_ARGS = ("--config-dir", "-cd", "--config-path", "-cp", "hydra.searchpath", "+hydra.searchpath")
MAX_COMPOSED = 8  # group combinations composed up front; a larger sweep is left to Hydra


def group_choice_combinations(args: Sequence[str], groups: Sequence[str]) -> list[list[str]] | None:
    """Every combination of the command's group choices (`experiment=smoke,elpv` gives two), or None
    when they cannot be listed here: an added config dir, sweep functions, or more than
    `MAX_COMPOSED` combinations."""
    per_group: list[list[str]] = []
    for arg in args:
        if arg.startswith(MORE_CONFIG_ARGS):
            return None
        key, sep, value = arg.partition("=")
        if arg.startswith(NOT_PLAIN) or not sep or key.lstrip("+~") not in groups:
            continue
        if "(" in value:
            return None
        per_group.append([f"{key}={option.strip()}" for option in value.split(",")])
    combinations = [list(choice) for choice in itertools.product(*per_group)]
    return combinations if len(combinations) <= MAX_COMPOSED else None


def compose_choices(choices: list[str], config_dir: str) -> DictConfig | None:
    """The config these group choices compose (with `hydra.runtime.choices`); None on a composition
    error, which Hydra reports itself."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir, version_base="1.3"):
            return compose("config", overrides=choices, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException, ValueError):
        return None


def first_composed_problem(
    args: Sequence[str],
    groups: Sequence[str],
    config_dir: str,
    check: Callable[[DictConfig, list[str]], str | None],
) -> str | None:
    """Compose each combination of the command's group choices and return the first problem
    `check(config, swept)` finds (`swept`: the choices this combination has and another lacks, to
    name in a sweep); None when there is none or the compositions cannot be known here."""
    combinations = group_choice_combinations(args, groups)
    for choices in combinations or ():
        cfg = compose_choices(choices, config_dir)
        if cfg is None:
            return None
        problem = check(cfg, [c for c in choices if any(c not in other for other in combinations)])
        if problem:
            return problem
    return None
