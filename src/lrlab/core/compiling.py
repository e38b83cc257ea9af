"""`train.compile` settings: which `torch.compile` mode a setting means (read without importing
torch, so the config schema can check it while composing), and the padding that keeps a compiled
model's input shapes static."""

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


def compile_model(model: Any, mode: str | None, device: Any) -> Any:
    """`torch.compile(model, mode=mode)`, or `model` for no mode. On the CPU, the C++ build's notice
    that no CUDA runtime was found (a torch log line in the middle of the epoch table) is silenced:
    nothing compiled for the CPU needs one."""
    import logging

    import torch

    if mode is None:
        return model
    if torch.device(device).type == "cpu":
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    return torch.compile(model, mode=mode)


def pad_rows(x: Any, rows: int) -> Any:
    """`x` with zero rows appended up to `rows` (on its device, in its memory format), so a compiled
    model sees one batch shape: a last partial evaluation batch would otherwise compile (or record
    a CUDA graph for) a second one. In eval mode no row's output depends on another row."""
    import torch  # here, not at the top: the config schema imports this module without torch

    if len(x) >= rows:
        return x
    padded = x.new_zeros((rows, *x.shape[1:]))
    if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last):
        padded = padded.contiguous(memory_format=torch.channels_last)
    padded[: len(x)] = x
    return padded
