"""The loss buffer that training and the range test share."""

from __future__ import annotations

import torch


class LossBuffer:
    """Per-step losses kept on the device and read back to the host in one transfer, so a GPU
    never waits for the host between steps (training and the range test both use it)."""

    def __init__(self) -> None:
        self.pending: list[torch.Tensor] = []

    def add(self, loss: torch.Tensor) -> None:
        self.pending.append(loss)

    def __len__(self) -> int:
        return len(self.pending)

    def read(self) -> list[float]:
        """The buffered losses as floats (one host sync), emptying the buffer."""
        if not self.pending:
            return []
        values = torch.stack(self.pending).float().tolist()
        self.pending.clear()
        return values
