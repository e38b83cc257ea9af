"""Data-parallel training across processes started by `torchrun` (DistributedDataParallel).

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK (and MASTER_ADDR/PORT or a rendezvous) for each
process; `init_distributed` joins the process group (NCCL on CUDA, gloo on the CPU) and gives the
process its device (`cuda:LOCAL_RANK`). Without those variables, or with WORLD_SIZE 1, every
function here is a no-op and lrlab runs in one process as before.

`DistributedEngine` is the `Engine` for a joined process group. Its rules, each so that every rank
does the same collectives in the same order and ends every step with identical weights:
- `Engine.model` stays the plain module (optimizer, freezing, snapshots and checkpoints use its
  names: no `module.` prefix); only the training forward goes through DDP. DDP records which
  parameters require grad when it wraps, so a change of the trainable set (a stage unfreezing)
  wraps the model again instead of running with `find_unused_parameters` (which costs an extra
  pass over the graph every step);
- every step's loss is all-reduced (mean over ranks) before anything reads it, so training
  curves, the range test's curve, its divergence stop and its suggestion are the same on every
  rank, and a NaN on one rank stops them all;
- evaluation runs the plain module on each rank's shard (no collective per batch, so shards may
  differ in size) after rank 0's norm-layer buffers are broadcast, and all-reduces the sums (loss,
  correct, count): the metrics equal those of the whole split;
- `predict` runs locally on one rank (the once-only test report runs on rank 0 alone).
Written here because torch's DDP only syncs gradients; the rest is lrlab's training loop.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lrlab.core.compiling import compile_model
from lrlab.core.engine import Engine
from lrlab.core.launch import launched_world_size
from lrlab.errors import LrlabError

TIMEOUT = datetime.timedelta(minutes=30)
T = TypeVar("T")


def is_distributed() -> bool:
    """Whether this process is part of a joined process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Processes training together (1 without torchrun)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank (0 without torchrun)."""
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    """True on rank 0 (and in a single process): the one that logs, tracks and writes files."""
    return rank() == 0


def init_distributed(device: torch.device) -> torch.device:
    """Join torchrun's process group when launched by it (NCCL on CUDA, gloo otherwise) and return
    this process's device: `cuda:LOCAL_RANK` on CUDA, else `device` unchanged. A no-op returning
    `device` outside torchrun or when already joined."""
    if launched_world_size() <= 1:
        return device
    if not dist.is_available():
        raise LrlabError("torchrun started several processes but this torch build has no torch.distributed.")
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise LrlabError(
                f"LOCAL_RANK={local} but this machine has {torch.cuda.device_count()} GPU(s): start at most "
                "that many processes per node (torchrun --nproc_per_node)."
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise LrlabError(
            f"device={device.type} cannot train across processes; use device=cuda or device=cpu."
        )
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT, device_id=device if device.type == "cuda" else None)
    return device


def teardown() -> None:
    """Leave the process group (every rank, at the end of the run); a no-op when not joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank gets here (no-op in one process)."""
    if is_distributed():
        dist.barrier()


def from_main(value: T) -> T:
    """Rank 0's `value` on every rank (`value` itself in one process): for what only rank 0 may
    read, such as the tracking store."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of `tensor` over ranks (in place; `tensor` itself in one process)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of `tensor` over ranks (a new tensor; `tensor` in one process)."""
    if not is_distributed():
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / dist.get_world_size()


def sync_buffers(model: nn.Module) -> None:
    """Broadcast rank 0's buffers (norm layers' running statistics) to every rank: each rank's last
    training forward updated them from its own shard."""
    if is_distributed():
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


class DistributedEngine(Engine):
    """An `Engine` for a joined process group (see the module docstring); `sync_batchnorm` has the
    model's BatchNorm layers use the whole global batch's statistics (CUDA only, a torch limit)."""

    def __init__(self, model: nn.Module, *args: Any, **kwargs: Any):
        super().__init__(model, *args, **kwargs)
        self.local_forward = self.forward_model  # the plain (or compiled) module: evaluation uses it
        self.compiled = self.forward_model is not model
        self._wrapped_for: tuple[bool, ...] | None = None
        self._micro_left = 0

    def _wrap(self) -> None:
        """(Re)wrap the model in DDP when its set of trainable parameters changed since the last wrap."""
        trainable = tuple(p.requires_grad for p in self.model.parameters())
        if trainable == self._wrapped_for:
            return
        self.forward_model = None  # drop the old wrapper (and its gradient hooks) before the new one
        ids = [self.device] if self.device.type == "cuda" else None
        ddp = DistributedDataParallel(self.model, device_ids=ids)  # buffers: rank 0's, each forward
        self.forward_model = compile_model(ddp, self.compile_mode, self.device) if self.compiled else ddp
        self._wrapped_for = trainable

    def backward(self, x: torch.Tensor, y: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """`Engine.backward` through DDP; gradients are all-reduced only on the step's last micro-batch."""
        self._wrap()
        self._micro_left -= 1
        ddp = getattr(self.forward_model, "_orig_mod", self.forward_model)
        context = ddp.no_sync() if self._micro_left > 0 else contextlib.nullcontext()
        with context:
            return super().backward(x, y, scale)

    def step(
        self,
        batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
        optimizer: torch.optim.Optimizer,
        micro_batches: int | None = None,
        detect_overflow: bool = False,
    ) -> tuple[torch.Tensor, bool]:
        """`Engine.step`, with the loss averaged over ranks and `images_seen` counting every rank's."""
        self._micro_left = micro_batches or self.grad_accum
        seen = self.images_seen
        loss, stepped = super().step(batches, optimizer, micro_batches, detect_overflow)
        self.images_seen = seen + (self.images_seen - seen) * world_size()
        return all_reduce_mean(loss), stepped

    def _eval_pass(self, loader: Iterable, probabilities: bool = False) -> Any:
        wrapped, self.forward_model = self.forward_model, self.local_forward
        try:
            return super()._eval_pass(loader, probabilities)
        finally:
            self.forward_model = wrapped

    def evaluate(self, loader: Iterable) -> dict[str, float]:
        """Mean loss, accuracy and error rate over every rank's shard of the split (sums all-reduced)."""
        sync_buffers(self.model)
        total_loss, predictions, targets = self._eval_pass(loader)
        sums = torch.zeros(3, device=self.device, dtype=torch.float64)
        sums[0] = total_loss
        for p, y in zip(predictions, targets):
            sums[1] += (p == y).sum()
            sums[2] += len(y)
        loss_sum, correct, count = all_reduce_sum(sums).tolist()
        loss, acc = loss_sum / max(1.0, count), correct / max(1.0, count)
        return {"valid_loss": loss, "accuracy": acc, "error_rate": 1.0 - acc}


def engine_class() -> type[Engine]:
    """`DistributedEngine` in a joined process group, else `Engine`."""
    return DistributedEngine if is_distributed() else Engine


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """The model with its BatchNorm layers as SyncBatchNorm (sharing their parameters, so layer groups
    and the optimizer are unaffected). torch's SyncBatchNorm runs on CUDA only."""
    if device.type != "cuda":
        raise LrlabError(
            "train.sync_batchnorm=true needs CUDA (torch's SyncBatchNorm does not run on the CPU); "
            "set train.sync_batchnorm=false."
        )
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)
