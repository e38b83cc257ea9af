"""The batch-size probe: doubling, then a binary search below the first size that runs out of
memory (a model that raises torch's own OutOfMemoryError past a size), the two answers from the
measured speeds, and `task=batch_size` end to end (console, plot, CSV, MLflow run, config check)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torch import nn

from lrlab.core.engine import Engine
from lrlab.train.batch_config import BatchFinderConfig
from lrlab.train.batch_size import BatchProbe, BatchSizeResult, find_batch_size, is_out_of_memory


class _RunsOutAbove(nn.Module):
    """A small classifier whose forward fails as CUDA does when a batch is larger than `limit`."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(x)} images")
        return self.net(x)


def test_doubling_then_a_binary_search_finds_the_largest_batch_that_fits() -> None:
    torch.manual_seed(0)
    model = _RunsOutAbove(limit=100)
    engine = Engine(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    pool = (torch.randn(300, 3, 8, 8), torch.randint(0, 10, (300,)))
    seen: list[BatchProbe] = []
    config = BatchFinderConfig(steps=2, min_seconds=0.0)
    result = find_batch_size(engine, optimizer, pool, config, report=lambda probe, total: seen.append(probe))
    assert [p.batch_size for p in result.probes] == [8, 16, 32, 64, 128, 96, 112, 104]
    assert [p.fits for p in result.probes] == [True] * 4 + [False, True, False, False]
    assert seen == result.probes and result.largest == 96
    assert "out of memory" in result.probes[4].note and result.probes[4].images_per_s is None
    assert all(p.images_per_s > 0 for p in result.fitting) and result.suggested in {8, 16, 32, 64, 96}
    assert all(p.grad is None for p in model.parameters())  # nothing of the failed step is held
    assert result.total_memory_bytes is None and all(p.peak_memory_bytes is None for p in result.probes)
    capped = find_batch_size(engine, optimizer, pool, config, limit=40)
    assert [p.batch_size for p in capped.probes] == [8, 16, 32] and capped.largest == 32
    nothing = find_batch_size(Engine(_RunsOutAbove(limit=4)), optimizer, pool, config)
    assert nothing.largest is None and nothing.suggested is None and len(nothing.probes) == 1


def test_the_probe_trains_what_the_widest_stage_trains() -> None:
    from lrlab.train.stage import Stage
    from lrlab.train.stages import widest_stage

    head, body, unfrozen = (
        Stage("head", 1, trainable="head"),
        Stage("body", 2, trainable="from:-2"),
        Stage("all", 3),
    )
    assert widest_stage([head, unfrozen, body], 4) is unfrozen
    assert widest_stage([head, body], 4) is body
    assert widest_stage([head, Stage("later", 0)], 4) is head and widest_stage([Stage("none", 0)], 4) is None


def test_the_suggestion_is_the_smallest_batch_within_the_tolerance_of_the_fastest() -> None:
    speeds = {8: 100.0, 16: 190.0, 32: 300.0, 64: 310.0, 128: 305.0}
    probes = [BatchProbe(size, True, speed) for size, speed in speeds.items()]
    probes.append(BatchProbe(256, False, 320.0, note="  over the 10% margin"))  # faster, but too full
    result = BatchSizeResult(probes, tolerance=0.05)
    assert (result.fastest.batch_size, result.suggested, result.largest) == (64, 32, 128)
    assert BatchSizeResult(probes, tolerance=0.0).suggested == 64
    assert result.table().splitlines()[6].startswith("256    no        320  -  over the 10% margin")
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


@pytest.mark.slow
def test_task_batch_size_prints_plots_and_records_the_answers(run_cli, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    proc = run_cli("experiment=smoke", "task=batch_size", "batch_finder.min_seconds=0", "hydra.run.dir=out")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        "up to 107 (batch_finder.max_size 1024; 1,077 train images / batch_finder.min_steps 10)"
        in proc.stdout
    )
    suggested = int(proc.stdout.split("suggested: data.batch_size=")[1].split()[0])
    assert "largest that fits: 64 (the probe's limit 107: none larger was tried)" in proc.stdout
    with (tmp_path / "out" / "batch_size.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["batch_size"]) for r in rows] == [8, 16, 32, 64] and suggested in (8, 16, 32, 64)
    assert (tmp_path / "out" / "batch_size.png").read_bytes()[:4] == b"\x89PNG"
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED" and run.data.params["batch_size.suggested"] == str(suggested)
    speeds = client.get_metric_history(run.info.run_id, "batch_size/images_per_s")
    assert sorted(m.step for m in speeds) == [8, 16, 32, 64]
    assert "batch_finder.min_steps" in run.data.params and "lr_finder.num_iter" not in run.data.params
    assert f"suggested: data.batch_size={suggested}" in run.data.tags["mlflow.note.content"]

    wrong = run_cli("experiment=smoke", "task=batch_size", "batch_finder.start=0", "tracking=none")
    assert wrong.returncode == 2 and "batch_finder.start=0 must be at least 1" in wrong.stderr


@pytest.mark.gpu
def test_on_cuda_each_probe_measures_its_peak_memory() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    torch.manual_seed(0)
    layers = (nn.Conv2d(3, 32, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    model = nn.Sequential(*layers).cuda()
    engine = Engine(model, device="cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    pool = (torch.randn(256, 3, 32, 32), torch.randint(0, 10, (256,)))
    result = find_batch_size(engine, optimizer, pool, BatchFinderConfig(max_size=256, min_seconds=0.0))
    assert [p.batch_size for p in result.probes] == [8, 16, 32, 64, 128, 256] and result.largest == 256
    peaks = [p.peak_memory_bytes for p in result.probes]
    assert all(peaks) and peaks[-1] > peaks[0] and result.total_memory_bytes > peaks[-1]
