"""Data-parallel training under torchrun: the in-memory loader's shards (fast, in process) and a real
`torchrun --nproc_per_node=2 -m lrlab` on the CPU (gloo) against one process with the same global
batch: the same range-test suggestions on both ranks and as one process, one MLflow run, final
metrics equal to one process's within float noise."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from mlflow.tracking import MlflowClient

from lrlab.data.loaders import Loaders, TensorLoader, make_loaders
from lrlab.data.types import ImageSource, Normalization, TensorSplit
from lrlab.errors import LrlabError
from lrlab.train.checkpoints import load_checkpoint

AUGMENT = {"hflip": 0.5, "scale": [0.8, 1.0], "brightness": 0.2, "contrast": 0.2}


def _split(n: int) -> TensorSplit:
    images = torch.arange(n * 3 * 4 * 4, dtype=torch.int64).remainder(256).to(torch.uint8).view(n, 3, 4, 4)
    return TensorSplit(images, torch.arange(n))


def _loader(n: int, batch_size: int, shard: tuple[int, int] = (0, 1), train: bool = True) -> TensorLoader:
    norm = Normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    if not train:
        return TensorLoader(_split(n), batch_size, norm, shard=shard, split_batches=False)
    return TensorLoader(
        _split(n),
        batch_size,
        norm,
        shuffle=True,
        drop_last=n > batch_size,
        augment=AUGMENT,
        seed=3,
        shard=shard,
    )


@pytest.mark.parametrize("world", [2, 3])
def test_training_shards_are_one_process_batches_split_by_rank(world: int) -> None:
    """Same seeded global order and augmentation on every rank; rank r keeps rows r::world of every
    global batch, so the ranks' batches interleaved are exactly one process's batches, and every rank
    yields the same number of batches, two epochs running."""
    single = _loader(50, 12)
    ranks = [_loader(50, 12, (r, world)) for r in range(world)]
    for _epoch in range(2):
        whole = list(single)
        parts = [list(loader) for loader in ranks]
        assert {len(p) for p in parts} == {len(whole)} == {len(single)} == {4}
        for step, (x, y) in enumerate(whole):
            got_x = torch.empty_like(x)
            got_y = torch.empty_like(y)
            for r, part in enumerate(parts):
                px, py = part[step]
                assert len(py) == 12 // world
                got_x[r::world], got_y[r::world] = px, py
            torch.testing.assert_close(got_x, x)
            assert torch.equal(got_y, y)


def test_a_last_partial_training_batch_is_padded_so_ranks_stay_in_step() -> None:
    """With one partial batch (fewer rows than the batch size) each rank still gets equal rows."""
    parts = [list(_loader(5, 8, (r, 2))) for r in range(2)]
    assert [len(p) for p in parts] == [1, 1]
    (_, y0), (_, y1) = parts[0][0], parts[1][0]
    assert len(y0) == len(y1) == 3
    assert set(y0.tolist()) | set(y1.tolist()) == set(range(5))


def test_evaluation_shards_are_disjoint_and_cover_the_split() -> None:
    rows = [torch.cat([y for _, y in _loader(23, 8, (r, 3), train=False)]).tolist() for r in range(3)]
    assert sorted(row for part in rows for row in part) == list(range(23))
    assert rows[0] == list(range(0, 23, 3)) and [len(r) for r in rows] == [8, 8, 7]


def test_the_global_batch_must_split_evenly() -> None:
    with pytest.raises(LrlabError, match=r"data.batch_size=10 is the global batch .* multiple of 3"):
        _loader(50, 10, (0, 3))


class _IndexImages:
    """A map-style dataset whose image is its own index (what a file dataset gives DataLoader)."""

    def __init__(self, n: int):
        self.n, self.transform = n, None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.tensor([float(i)]), i


def _file_loaders(n: int, shard: tuple[int, int]) -> Loaders:
    source = ImageSource(_IndexImages(n), _IndexImages(n // 2), ["a"], _IndexImages(7))
    cfg = {"name": "files", "batch_size": 12, "image_size": 8, "augment": {}}
    return make_loaders(source, cfg, Normalization((0.5,) * 3, (0.5,) * 3), shard=shard)


@pytest.mark.parametrize("world", [2, 3])
def test_file_dataset_shards_are_one_process_batches_split_by_rank(world: int) -> None:
    """File datasets (DataLoader): each rank's training batches interleaved are one process's
    batches, two epochs running; valid shards are disjoint and cover valid; test stays whole."""
    single = _file_loaders(48, (0, 1))
    ranks = [_file_loaders(48, (r, world)) for r in range(world)]
    for _epoch in range(2):
        whole = [y for _, y in single.train]
        parts = [[y for _, y in loaders.train] for loaders in ranks]
        assert {len(p) for p in parts} == {len(whole)} == {4}
        for step, y in enumerate(whole):
            got = torch.empty_like(y)
            for r, part in enumerate(parts):
                got[r::world] = part[step]
            assert torch.equal(got, y)
    epochs = [tuple(torch.cat([y for _, y in single.train]).tolist()) for _ in range(2)]
    assert epochs[0] != epochs[1]
    valid = [torch.cat([y for _, y in loaders.valid]).tolist() for loaders in ranks]
    assert sorted(row for part in valid for row in part) == list(range(24))
    assert [torch.cat([y for _, y in loaders.test]).tolist() for loaders in ranks] == [list(range(7))] * world
    with pytest.raises(LrlabError, match=r"data.batch_size=12 is the global batch .* multiple of 5"):
        _file_loaders(48, (0, 5))


# The tiny CNN with GroupNorm (per-image statistics): with the same global batches the two runs
# differ only in float summation order; a BatchNorm model would also differ by its per-rank batch
# statistics (SyncBatchNorm, train.sync_batchnorm, is CUDA-only).
RUN = (
    "experiment=smoke",
    "model.name=test_efficientnet_gn",
    "stages=fine_tune",  # a frozen head stage, then everything unfrozen: DDP wraps again
    "freeze_epochs=1",
    "epochs=2",
    "lr=find",
    "stages.1.lr=auto",  # the unfrozen stage races 3 LRs for 1 epoch: every rank must pick the same
    "lr_finder.num_iter=30",
    "data.batch_size=64",  # the global batch: 32 per process under torchrun
    "hydra.run.dir=out",
)


def _run(cwd: Path, processes: int, *extra: str) -> subprocess.CompletedProcess:
    cwd.mkdir(exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command = [sys.executable, *(launcher if processes > 1 else []), "-m", "lrlab", *RUN, *extra]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _range_tests(log: Path) -> list[str]:
    """The range tests' suggestion lines of a run's log file (without their timing)."""
    lines = [line.split(" - ", 1)[1] for line in log.read_text().splitlines() if "range test:" in line]
    return [re.sub(r", [0-9.]+s:", ",", line) for line in lines]


def _race(log: Path) -> list[str]:
    """The lr=auto race's candidate and winner lines of a run's log file."""
    lines = [line.split(" - ", 1)[-1].strip() for line in log.read_text().splitlines()]
    return [line for line in lines if "x):" in line or line.startswith("winner ")]


def _only_run(directory: Path):
    client = MlflowClient(f"sqlite:///{directory / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return run


@pytest.mark.slow
@pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo"
)
def test_torchrun_two_processes_match_one_process(tmp_path: Path) -> None:
    one, two = _run(tmp_path / "one", 1), _run(tmp_path / "two", 2)
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    out = tmp_path / "two" / "out"
    rank0, rank1 = _range_tests(out / "lrlab.log"), _range_tests(out / "lrlab-rank1.log")
    assert len(rank0) == 2 and rank0 == rank1  # both stages: the same curve and suggestions
    assert rank0 == _range_tests(tmp_path / "one" / "out" / "lrlab.log")
    races = [
        _race(out / "lrlab.log"),
        _race(out / "lrlab-rank1.log"),
        _race(tmp_path / "one" / "out" / "lrlab.log"),
    ]
    assert len(races[0]) == 4 and races[0] == races[1]  # three candidates and the winner, alike on both ranks
    assert [line.split(":")[0] for line in races[0]] == [line.split(":")[0] for line in races[2]]

    run, single = _only_run(tmp_path / "two"), _only_run(tmp_path / "one")  # one MLflow run
    assert run.data.tags["distributed.world_size"] == "2" and run.info.status == "FINISHED"
    for key in ("final_valid_loss", "final_accuracy", "test/loss", "test/accuracy"):
        # measured: equal to 6 digits; one image of 360 is 0.0028
        assert run.data.metrics[key] == pytest.approx(single.data.metrics[key], rel=1e-3, abs=1e-3), key
    assert not any("module." in key for key in load_checkpoint(out / "checkpoints" / "best.pt")["model"])
    assert sorted(p.name for p in out.glob("lrlab*.log")) == ["lrlab-rank1.log", "lrlab.log"]
    assert (out / ".hydra-rank1" / "config.yaml").is_file()

    # Resubmitted once FINISHED, every rank learns so from rank 0 (the one that reads the store):
    # nothing is trained or tested again.
    again = _run(tmp_path / "two", 2, f"resume={out / 'checkpoints' / 'last.pt'}")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "nothing to resume:" in again.stdout + again.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'two' / 'mlflow.db'}")
    assert len(client.get_metric_history(run.info.run_id, "test/accuracy")) == 1
