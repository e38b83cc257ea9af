"""What a run records: only the params that apply to it, and content digests of its data splits."""

from __future__ import annotations

import torch
from torch.utils.data import Subset

from lrlab.app.run_record import run_params
from lrlab.data.types import TensorSplit, split_digest


def test_params_of_other_tasks_sweeps_and_an_unused_range_test_are_left_out(compose_cfg) -> None:
    plain = run_params(compose_cfg("experiment=smoke"))
    assert not {"checkpoint", "format", "input", "resume", "trial", "lr_finder"} & set(plain)
    assert plain["data"]["name"] == "digits" and "classes" not in plain["data"]

    finder = run_params(compose_cfg("experiment=smoke", "stages.0.lr_rule=steep", "stages.0.lr=find"))
    assert finder["lr_finder"]["suggest"] == "lrlab"
    assert "lr_finder" in run_params(compose_cfg("experiment=smoke", "task=lr_find"))
    assert "batch_finder" not in plain
    assert run_params(compose_cfg("experiment=smoke", "task=batch_size"))["batch_finder"]["min_steps"] == 10

    trial = run_params(compose_cfg("experiment=smoke", "trial.study=s", "trial.number=3"))
    assert trial["trial"]["number"] == 3

    elpv = run_params(compose_cfg("data=elpv"))
    assert elpv["data"]["classes"] == 4 and "lr_finder" in elpv


class _Folder:
    """The part of torchvision's ImageFolder a digest reads: (path, label) samples."""

    def __init__(self, samples: list[tuple[str, int]]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)


def test_split_digests_follow_content() -> None:
    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).reshape(2, 1, 4, 4)
    split = TensorSplit(images, torch.tensor([0, 1]))
    assert split_digest(split) == split_digest(TensorSplit(images.clone(), torch.tensor([0, 1])))
    assert split_digest(split) != split_digest(TensorSplit(images, torch.tensor([1, 0])))
    changed = images.clone()
    changed[0, 0, 0, 0] += 1
    assert split_digest(split) != split_digest(TensorSplit(changed, torch.tensor([0, 1])))

    folder = _Folder([("a.png", 0), ("b.png", 1), ("c.png", 1)])
    assert split_digest(Subset(folder, [0, 2])) == split_digest(Subset(folder, [0, 2]))
    assert split_digest(Subset(folder, [0, 2])) != split_digest(Subset(folder, [0, 1]))
    assert len(split_digest(folder)) == 16
