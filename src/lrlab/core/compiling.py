"""`train.compile` settings: which `torch.compile` mode a setting means (read without importing
torch, so the config schema can check it while composing)."""

from __future__ import annotations

from typing import Any

from lrlab.errors import ConfigError

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_mode(setting: Any) -> str | None:
    """None for false (eager), the mode name for a mode, "default" for true. `reduce-overhead` records
    CUDA graphs of the compiled forward and backward (on CUDA; the launch-bound small-batch case)."""
    if setting is False or setting is None or str(setting).lower() == "false":
        return None
    if setting is True or str(setting).lower() == "true":
        return "default"
    if str(setting) in COMPILE_MODES:
        return str(setting)
    raise ConfigError(
        f"train.compile={setting!r} is not valid; choose false, true or a torch.compile mode: "
        + ", ".join(COMPILE_MODES)
        + "."
    )
