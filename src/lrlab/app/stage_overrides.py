"""A check of `stages.<N>.<key>=...` overrides against the stages the command composes.

Stages are a list, so Hydra reports a stage the preset lacks as "dict is not a subclass of Stage"
and a stage named instead of numbered (`stages.unfrozen.lr`) with a traceback; this check names the
preset's stages instead. It composes the command's group choices once (a third of a second), and
only when an override addresses a stage.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from lrlab.app.composition import first_composed_problem
from lrlab.app.tasks import override_key

STAGE_KEY = re.compile(r"^[+~]{0,2}stages\.([^.=]+)\.")


def stage_override_problem(args: Sequence[str], groups: Sequence[str], config_dir: str) -> str | None:
    """One paragraph for the first `stages.X.key` override whose X is not a stage index of the
    composed preset (out of range, or a stage name), naming the group choices it fails with in a
    sweep over groups; None when all are, when none addresses a stage, or when the stages cannot be
    known before Hydra runs (an added config dir, a sweep over more than `MAX_COMPOSED` group
    combinations or with sweep functions, a composition error that Hydra will report itself)."""
    addressed = [(arg, match.group(1)) for arg in args if (match := STAGE_KEY.match(arg))]
    if not addressed:
        return None
    return first_composed_problem(
        args,
        groups,
        config_dir,
        lambda cfg, swept: _first_missing_stage(
            addressed, [str(stage.name) for stage in cfg.stages], config_dir, swept
        ),
    )


def _first_missing_stage(
    addressed: list[tuple[str, str]], stages: list[str], config_dir: str, swept: list[str]
) -> str | None:
    """The paragraph for the first addressed stage these `stages` lack; `swept`: the group choices
    of a sweep this composition has, named after the key."""
    where = f" (with {' '.join(swept)})" if swept else ""
    numbered = ", ".join(f"{i} {name}" for i, name in enumerate(stages))
    for arg, index in addressed:
        if index.isdigit() and int(index) < len(stages):
            continue
        key = override_key(arg)
        field = key.split(".", 2)[2]
        if index in stages:
            return (
                f"{key}{where}: stages are numbered, not named; the {index} stage is "
                f"stages.{stages.index(index)}.{field} ({numbered})."
            )
        return (
            f"{key}{where}: this configuration has {len(stages)} stage{'s' if len(stages) != 1 else ''} "
            f"({numbered}), so stage {index} does not exist. Address a stage by its number, or choose "
            f"a preset with more stages ({_preset_sizes(config_dir)})."
        )
    return None


def _preset_sizes(config_dir: str) -> str:
    """`stages=fine_tune: 2, stages=gradual: 3, ...`: each packaged stage preset and its stage count."""
    import yaml

    sizes = []
    for path in sorted((Path(config_dir) / "stages").glob("*.yaml")):
        stages = (yaml.safe_load(path.read_text()) or {}).get("stages") or []
        sizes.append(f"stages={path.stem}: {len(stages)}")
    return ", ".join(sizes)
