"""An exponential moving average of the weights (timm's `ModelEmaV3`) that the engine swaps into
the model for evaluation and checkpoints and out again for training, the way Schedule-Free's
`eval()`/`train()` do: everything after an epoch (valid metrics, best.pt, the test split, export)
sees the averaged weights. Written here because timm keeps the average in a separate module and
lrlab's callbacks, checkpoints and exports all read `engine.model`."""

from __future__ import annotations

from typing import Any

import torch
from timm.utils import ModelEmaV3
from torch import nn


class WeightAverage:
    """The EMA of `model`'s weights and buffers, updated after every training step. `decay` is the
    EMA's weight on the past; with `warmup`, timm's warm-up ramps it from 0 toward `decay` over
    the first steps (short fine-tunes would otherwise average mostly the pretrained weights)."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        self.ema = ModelEmaV3(model, decay=decay, use_warmup=warmup)
        self.ema.requires_grad_(False)
        self.live: dict[str, torch.Tensor] | None = None  # the training weights while averaged ones are in

    @property
    def averaged_in(self) -> bool:
        """Whether the model now holds the averaged weights (the training ones kept aside)."""
        return self.live is not None

    def update(self, model: nn.Module, step: int) -> None:
        """Move the average toward the model's current (training) weights; `step` drives warm-up."""
        self.ema.update(model, step=step)

    def swap_in(self, model: nn.Module) -> None:
        """Put the averaged weights into `model`, keeping its training weights aside."""
        if self.live is None:
            self.live = {k: v.detach().clone() for k, v in model.state_dict().items()}
            model.load_state_dict(self.ema.module.state_dict())

    def swap_out(self, model: nn.Module) -> None:
        """Put the training weights back into `model` (a no-op when they are in)."""
        if self.live is not None:
            model.load_state_dict(self.live)
            self.live = None

    def state_dict(self) -> dict[str, Any]:
        """The average and, while it is swapped in, the training weights (CPU tensors)."""
        cpu = {k: v.detach().cpu().clone() for k, v in self.ema.module.state_dict().items()}
        live = {k: v.detach().cpu().clone() for k, v in self.live.items()} if self.live is not None else None
        return {"average": cpu, "live": live}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put a `state_dict` back: the average into the EMA module, the training weights aside."""
        self.ema.module.load_state_dict(state["average"])
        device = next(self.ema.module.parameters()).device
        live = state.get("live")
        self.live = {k: v.to(device) for k, v in live.items()} if live is not None else None
