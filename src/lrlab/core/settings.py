"""The engine's settings (`StepOptions`) and their choice lists, in a module without torch, so
that the config check (which the CLI imports at start) and the engine test a value against the
same list."""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from typing import Any

from lrlab.core.limits import LIMITS
from lrlab.errors import ConfigError, check_choice

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "32", "bf16", "16")  # bf16 and 16: fp32 weights with autocast (mixed precision)
PRECISION_ALIASES = {"32-true": "32", "bf16-mixed": "bf16", "16-mixed": "16"}
"""Lightning's names for the same settings, accepted as written there."""
TTA_FLIPS = {"none": ((),), "hflip": ((), (-1,)), "flips": ((), (-1,), (-2,), (-2, -1))}
"""Test-time augmentation: the image dims each view flips (`()`: the image as it is); the views'
probabilities are averaged. hflip: the image and its mirror; flips: also upside down and both
(for images with no up or left, such as solar cells, micrographs or aerial tiles)."""
TTA_MODES = tuple(TTA_FLIPS)
HEADS = ("classify", "regress", "ordinal")  # model.head (lrlab.models.heads)


def precision_choice(value: object) -> str:
    """`value` as one of PRECISIONS (Lightning's names translated); ConfigError naming the choices
    otherwise, and for Lightning's pure half precisions, which lrlab does not train."""
    text = PRECISION_ALIASES.get(str(value), str(value))
    if text in ("bf16-true", "16-true"):
        mixed = text.removesuffix("-true")
        raise ConfigError(
            f"precision={text}: lrlab trains mixed precision only (fp32 weights, half-precision "
            f"autocast); use precision={mixed}, as {mixed}-mixed in Lightning."
        )
    return check_choice(text, PRECISIONS, "precision")


def progress_enabled(setting: bool | str) -> bool:
    """Whether to draw progress bars: true/false as given; `auto` when stderr is a terminal or the
    code runs in a Jupyter kernel (so notebook training shows progress, CI logs stay clean)."""
    if isinstance(setting, bool):
        return setting
    check_choice(setting, ("auto",), "train.progress")
    return sys.stderr.isatty() or "ipykernel" in sys.modules


@dataclass
class StepOptions:
    """How the engine runs each step, beside the model, device and precision: micro-batches per
    optimizer step, gradient clipping (max norm), channels_last inputs, torch.compile (False, True
    or a mode), steps between loss read-backs, progress bars, cuDNN autotuning and evaluation-time
    augmentation (`tta="hflip"`: each image and its mirror, probabilities averaged)."""

    grad_accum: int = 1
    grad_clip: float | None = None
    channels_last: bool = False
    compile: bool | str = False
    log_every: int = 25
    progress: bool | str = "auto"  # batch progress bars: auto = on a terminal or in a notebook
    cudnn_benchmark: bool = False
    tta: str = "none"

    def __post_init__(self) -> None:
        for key in ("grad_accum", "grad_clip", "log_every"):
            LIMITS[f"train.{key}"].check(getattr(self, key), f"train.{key}")
        self.progress = progress_enabled(self.progress)

    @classmethod
    def of(cls, settings: Any) -> StepOptions:
        """The options among `settings`' attributes (e.g. the `train` config section)."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls) if hasattr(settings, f.name)})
