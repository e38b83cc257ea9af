"""Where and in what precision to run: `auto` resolves to the best available device (CUDA, MPS,
CPU) and precision (bf16 where the GPU supports it, else fp16; fp32 on CPU)."""

from __future__ import annotations

import torch

from lrlab.errors import LrlabError


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA, then MPS, then CPU; an explicit device must be available."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise LrlabError("device=cuda but torch sees no CUDA GPU; use device=auto or device=cpu.")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise LrlabError("device=mps but MPS is not available; use device=auto or device=cpu.")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' is bf16 on GPUs that support it (else fp16) and fp32 elsewhere."""
    precision = str(precision)
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "16"
    return "32"
