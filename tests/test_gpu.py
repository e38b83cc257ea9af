"""The CUDA paths: bf16 and fp16 (grad scaler) with channels_last through staged training and the
range test, `train.compile` modes with CUDA graphs across stages, a one-process NCCL group with DDP
and SyncBatchNorm, and a resume that repeats a CUDA run bit for bit.

The `gpu` cases skip without CUDA. Where a path also exists on the CPU, a CPU twin runs the same
checks here, so each test's logic is known to hold before a GPU session spends device time on it.
"""

from __future__ import annotations

import socket
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from conftest import terminate_after_second_epoch
from lrlab.core.distributed import DistributedEngine, convert_sync_batchnorm
from lrlab.core.engine import Engine
from lrlab.core.optim import build_optimizer, group_lrs
from lrlab.core.schedules import constant, one_cycle
from lrlab.core.types import Callback
from lrlab.data.loaders import TensorLoader
from lrlab.finder.config import FinderConfig
from lrlab.models.factory import create_model, normalization, to_device
from lrlab.models.groups import layer_groups
from lrlab.train.checkpoints import load_checkpoint
from lrlab.train.stage import Stage
from lrlab.train.stages import Training, run_stages

ADAMW = partial(torch.optim.AdamW, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01)
GPU = pytest.mark.gpu


@pytest.fixture(scope="module")
def digits():
    """320 training and 64 valid digits at 32 px (at conftest's 8 px the deeper blocks see 1x1 maps
    with 3x3 kernels, and CPU bf16 depthwise-conv backward then leaves NaN in weights that touch
    only padding: torch's arithmetic, not lrlab's, so the tests stay off that corner)."""
    from lrlab.data.sources import load_digits
    from lrlab.data.types import ImageSource, TensorSplit

    full = load_digits(image_size=32)
    return ImageSource(
        TensorSplit(full.train.images[:320], full.train.labels[:320]),
        TensorSplit(full.valid.images[:64], full.valid.labels[:64]),
        full.class_names,
    )


def _staged_setup(digits, device: str, batch: int = 32):
    torch.manual_seed(0)
    model = to_device(create_model("test_efficientnet", num_classes=10), torch.device(device), True)
    groups = layer_groups(model, 2)
    norm = normalization(model)
    train = TensorLoader(digits.train, batch, norm, shuffle=True, drop_last=True, seed=0, device=device)
    valid = TensorLoader(digits.valid, 64, norm, device=device)
    return model, groups, train, valid, build_optimizer(ADAMW, model, groups, lr=1e-3)


class EpochLog(Callback):
    """Each stage's start, each epoch's accuracy and the number of graphs torch.compile has made
    by the epoch's end."""

    def __init__(self):
        self.starts: list = []
        self.accuracy: list[float] = []
        self.graphs: list[int] = []

    def on_stage_start(self, engine, start):
        self.starts.append(start)

    def on_epoch_end(self, engine, result):
        from torch._dynamo.utils import counters

        self.accuracy.append(result.accuracy)
        self.graphs.append(int(counters["stats"]["unique_graphs"]))


@pytest.mark.parametrize(
    ("device", "precision"),
    [("cpu", "bf16"), pytest.param("cuda", "bf16", marks=GPU), pytest.param("cuda", "16", marks=GPU)],
)
def test_staged_training_with_a_range_test_in_mixed_precision_and_channels_last(
    digits, device: str, precision: str
) -> None:
    model, groups, train, valid, optimizer = _staged_setup(digits, device)
    log = EpochLog()
    engine = Engine(model, device, precision, callbacks=[log], channels_last=True)
    assert (engine.scaler is not None) == (precision == "16")
    finder = FinderConfig(num_iter=40)
    stages = [Stage("head", 1, lr=1e-2, trainable="head"), Stage("all", 3, lr="find", lr_spread=10)]
    run_stages(engine, Training(groups, train, valid, optimizer, one_cycle, finder=finder), stages)
    found = log.starts[1].finder
    assert found is not None and 1e-5 < log.starts[1].lr < 1.0 and len(found.lrs) > 10
    assert all(p.dtype == torch.float32 and p.device.type == device for p in model.parameters())
    assert all(torch.isfinite(p).all() for p in model.parameters())
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert log.accuracy[-1] > 0.7, log.accuracy  # 320 digits, 4 epochs of a tiny untrained net (0.94 here)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("device", "mode"),
    [
        ("cpu", "default"),
        pytest.param("cuda", "reduce-overhead", marks=GPU),
    ],
)
def test_compiled_stages_compile_once_per_stage_without_graph_breaks(
    digits, device: str, mode: str, monkeypatch
) -> None:
    """A frozen stage then an unfrozen one: each compiles its graphs in its first epoch and none
    after (no recompile per epoch, none per evaluation), with no graph break; under CUDA graphs
    (reduce-overhead) no graph is skipped from recording."""
    from torch._dynamo.utils import counters

    if device == "cpu":  # graphs and recompiles are Dynamo's: the CPU twin skips Inductor's C++ build
        monkeypatch.setattr(torch, "compile", partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    counters.clear()
    model, groups, train, valid, optimizer = _staged_setup(digits, device)
    log = EpochLog()
    engine = Engine(model, device, "bf16" if device == "cuda" else "32", callbacks=[log], compile=mode)
    stages = [Stage("head", 2, lr=1e-2, trainable="head"), Stage("all", 2, lr=3e-3, lr_spread=10)]
    run_stages(engine, Training(groups, train, valid, optimizer, one_cycle), stages)
    graphs = log.graphs
    assert graphs[0] > 0 and graphs[1] == graphs[0] and graphs[3] == graphs[2], graphs
    assert not counters["graph_break"], dict(counters["graph_break"])
    if mode == "reduce-overhead":
        assert counters["inductor"]["cudagraph_skips"] == 0, dict(counters["inductor"])
    assert log.accuracy[-1] > 0.5, log.accuracy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=GPU)])
def test_a_one_process_group_trains_through_ddp(digits, device: str, monkeypatch) -> None:
    """NCCL on CUDA (gloo on the CPU) with one process: DDP's parameter broadcast and gradient
    all-reduce run over the backend, SyncBatchNorm on CUDA; training moves the weights as the plain
    engine does (one rank: the all-reduced gradient is the rank's own). Compared relative to the
    update, since cuDNN's backward may differ in its last bits from one run to the next."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    backend = "nccl" if device == "cuda" else "gloo"
    weights = []
    for engine_class in (Engine, DistributedEngine):
        model, groups, train, valid, _ = _staged_setup(digits, device)
        # SGD, not AdamW: its step scales with the gradient, so a wrongly reduced one would show
        optimizer = build_optimizer(partial(torch.optim.SGD, momentum=0.9), model, groups, lr=0.05)
        initial = torch.cat([p.detach().flatten() for p in model.parameters()]).cpu()
        if engine_class is DistributedEngine:
            extra = {"device_id": torch.device("cuda", 0)} if device == "cuda" else {}
            dist.init_process_group(backend, rank=0, world_size=1, **extra)
        try:
            if device == "cuda":
                model = convert_sync_batchnorm(model, torch.device(device))
                assert any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
            engine = engine_class(model, device)
            engine.fit(
                train,
                valid,
                optimizer,
                constant(optimizer, group_lrs(optimizer, [0.05] * 3), len(train)),
                epochs=1,
            )
            if engine_class is DistributedEngine:
                assert dist.get_backend() == backend
                assert isinstance(engine.forward_model, nn.parallel.DistributedDataParallel)
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]).cpu())
    difference = ((weights[1] - weights[0]).norm() / (weights[0] - initial).norm()).item()
    assert difference < (1e-5 if device == "cpu" else 0.05), difference


RESUME_RUN = (
    "experiment=smoke",
    "epochs=4",
    "train.checkpoints=true",
    "tracking=none",
    "deterministic=true",
    "train.progress=false",
)


@pytest.mark.slow
@pytest.mark.parametrize("device", [pytest.param("cuda", marks=GPU)])  # CPU: tests/test_resume.py
def test_a_resumed_run_repeats_the_straight_run_bit_for_bit(
    run_cli, tmp_path: Path, device: str, monkeypatch
) -> None:
    """4 epochs straight against 2 epochs, SIGTERM and `resume=PATH/last.pt`, with deterministic
    algorithms (on CUDA the generator states of every device are saved and restored)."""
    run = (*RESUME_RUN, f"device={device}", f"precision={'bf16' if device == 'cuda' else '32'}")
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's deterministic mode
    straight = run_cli(*run, "hydra.run.dir=straight", seed_store=False)
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert terminate_after_second_epoch(*run, "hydra.run.dir=cut", cwd=tmp_path, seed_store=False) == 143
    last = tmp_path / "cut" / "checkpoints" / "last.pt"
    resumed = run_cli(*run, "hydra.run.dir=cut", f"resume={last}", seed_store=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    want = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")["model"]
    got = load_checkpoint(last)["model"]
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


@GPU
def test_the_cli_trains_on_cuda_in_bf16_under_cuda_graphs(run_cli, tmp_path: Path) -> None:
    """`lrlab` end to end on the GPU: bf16, channels_last, train.compile=reduce-overhead, the test
    split evaluated once; the log names the device (smoke's fixed LR: 0.93 on the CPU)."""
    result = run_cli(
        "experiment=smoke",
        "device=cuda",
        "precision=bf16",
        "train.compile=reduce-overhead",
        "tracking=none",
        "train.progress=false",
        "hydra.run.dir=out",
        seed_store=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = (tmp_path / "out" / "lrlab.log").read_text()
    assert "device cuda, precision bf16" in log, log[-2000:]
    final = float(result.stdout.rsplit("accuracy ", 1)[1].split()[0])
    assert final > 0.85, result.stdout[-1500:]
