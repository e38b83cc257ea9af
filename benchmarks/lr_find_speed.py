"""Benchmark: the LR range test against the same number of ordinary training steps.

Prints, per setup, seconds for N range-test steps, seconds for N training steps (same model,
loader, optimizer, precision), their ratio (target <= 1.05), and peak GPU memory of each on CUDA.
Run by hand, not by CI:

    python benchmarks/lr_find_speed.py                       # smoke and elpv on the CPU
    python benchmarks/lr_find_speed.py --device cuda --precision bf16 --steps 100
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch
from hydra import compose, initialize_config_dir

from lrlab.app.build import build
from lrlab.app.cli import CONFIG_DIR
from lrlab.core.engine import Engine
from lrlab.core.optim import group_lrs
from lrlab.core.schedules import constant
from lrlab.finder.range_test import find_lr
from step_speed import sync_device


class Take:
    """The first `n` batches of an endlessly repeated loader, with a length (for Engine.train_epoch)."""

    def __init__(self, loader, n: int):
        self.loader, self.n = loader, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return itertools.islice(itertools.chain.from_iterable(itertools.repeat(self.loader)), self.n)


def measure(experiment: str, steps: int, device: str, precision: str, repeats: int, extra: list[str]) -> dict:
    overrides = [
        f"experiment={experiment}",
        f"device={device}",
        f"precision={precision}",
        "tracking=none",
        *extra,
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    setup = build(cfg)
    engine = Engine(setup.model, setup.device, setup.precision, channels_last=setup.cfg.train.channels_last)
    optimizer = setup.optimizer
    lrs = group_lrs(optimizer, [1e-4] * len(setup.groups))

    def train() -> float:
        scheduler = constant(optimizer, lrs, steps)
        sync_device(setup.device)
        start = time.perf_counter()
        engine.train_epoch(Take(setup.train_loader, steps), optimizer, scheduler)
        sync_device(setup.device)
        return time.perf_counter() - start

    def finder() -> float:
        start = time.perf_counter()
        find_lr(
            setup.model,
            setup.train_loader,
            optimizer,
            engine=engine,
            num_iter=steps,
            start_lr=1e-7,
            end_lr=1e-2,
            stop_div=False,
        )
        sync_device(setup.device)
        return time.perf_counter() - start

    train()
    finder()  # warm-up: allocator, cudnn autotuning, first-touch of data
    times = {"train": [], "lr_find": []}
    memory = {}
    for _ in range(repeats):
        for name, fn in (("train", train), ("lr_find", finder)):
            if setup.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(setup.device)
            times[name].append(fn())
            if setup.device.type == "cuda":
                memory[name] = torch.cuda.max_memory_allocated(setup.device) / 2**20
    best = {k: min(v) for k, v in times.items()}
    images = steps * setup.cfg.data.batch_size
    return {
        "experiment": experiment,
        "device": str(setup.device),
        "precision": setup.precision,
        "steps": steps,
        "train_s": best["train"],
        "lr_find_s": best["lr_find"],
        "ratio": best["lr_find"] / best["train"],
        "train_img_s": images / best["train"],
        "memory_mib": memory,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", nargs="+", default=["smoke", "elpv"])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. data.image_size=224")
    args = parser.parse_args()
    print(
        f"{'experiment':<10} {'device':<6} {'prec':<5} {'steps':>5} {'train s':>8} {'lr_find s':>9} "
        f"{'ratio':>6} {'img/s':>8}  peak MiB (train / lr_find)"
    )
    for experiment in args.experiments:
        r = measure(experiment, args.steps, args.device, args.precision, args.repeats, args.overrides)
        mem = (
            f"{r['memory_mib'].get('train', 0):.0f} / {r['memory_mib'].get('lr_find', 0):.0f}"
            if r["memory_mib"]
            else "-"
        )
        print(
            f"{r['experiment']:<10} {r['device']:<6} {r['precision']:<5} {r['steps']:>5} "
            f"{r['train_s']:>8.2f} {r['lr_find_s']:>9.2f} {r['ratio']:>6.3f} {r['train_img_s']:>8.1f}  {mem}",
            flush=True,
        )


if __name__ == "__main__":
    main()
