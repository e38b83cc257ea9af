"""Benchmark: lrlab's training and range-test steps against a plain hand-written PyTorch loop.

For each batch size it times, on the same model architecture (fresh weights from one seed), the
same precision and memory format:
- `plain`: a hand-written loop over batches already normalised on the device (AdamW, autocast,
  zero_grad(set_to_none=True)); the loss is never read back until the end;
- `train`: lrlab's `Engine.train_epoch` over a `TensorLoader` of the same images (seeded shuffle,
  flips and normalisation on the device, losses read back every `log_every` steps, lrlab's
  per-layer-group AdamW);
- `lr_find`: lrlab's `find_lr` over as many steps (snapshot, ramp, restore);
and prints images/s, each against `plain`, and the first-pass overhead (first pass minus a warm
pass of a fresh model: torch.compile, cuDNN autotuning, allocator warm-up). Images are random
uint8 (speed does not depend on content, and no dataset has to travel with the script). With
`--compile`, torch reuses a compiled graph for a fresh model of the same architecture, so the
compile time lands on the first method timed (plain) and the others' overhead looks small.

Run by hand, not by CI:

    python benchmarks/step_speed.py                               # CPU: Lite0 at 64 px
    python benchmarks/step_speed.py --device cuda --precision bf16 --image-size 300 --steps 60
    python benchmarks/step_speed.py --device cuda --precision bf16 --image-size 300 --compile reduce-overhead
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
from torch import nn

from lrlab.core.engine import Engine
from lrlab.core.host_memory import hold_freed_memory
from lrlab.core.optim import build_optimizer
from lrlab.core.settings import StepOptions
from lrlab.data.loaders import TensorLoader
from lrlab.data.types import Normalization, TensorSplit
from lrlab.finder.range_test import find_lr
from lrlab.models.factory import create_model, to_device
from lrlab.models.groups import layer_groups

NORM = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CLASSES = 4


def sync_device(device: torch.device) -> None:
    """Wait for the device's queued work, so a timer reads finished work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _model(args: argparse.Namespace, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(args.model, CLASSES, pretrained=False)
    return to_device(model, device, channels_last=True)


def random_images(args: argparse.Namespace, batch: int) -> TensorSplit:
    """`batch * args.steps` seeded random images and labels at `args.image_size`."""
    generator = torch.Generator().manual_seed(1)
    n = batch * args.steps
    images = torch.randint(
        0, 256, (n, 3, args.image_size, args.image_size), dtype=torch.uint8, generator=generator
    )
    return TensorSplit(images, torch.randint(0, CLASSES, (n,), generator=generator))


def plain_loop(args: argparse.Namespace, device: torch.device, split: TensorSplit, batch: int) -> Callable:
    """A fresh model and a function running one pass of the hand-written loop."""
    model = _model(args, device)
    if args.compile:
        model = torch.compile(model, mode=args.compile)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    mean = torch.tensor(NORM.mean, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(NORM.std, device=device).view(1, 3, 1, 1) * 255
    x_all = ((split.images.to(device).float() - mean) / std).contiguous(memory_format=torch.channels_last)
    y_all = split.labels.to(device)
    dtype = {"bf16": torch.bfloat16, "16": torch.float16}.get(args.precision)
    loss_fn = nn.CrossEntropyLoss()

    def run() -> None:
        model.train()
        losses = []
        for i in range(args.steps):
            x, y = x_all[i * batch : (i + 1) * batch], y_all[i * batch : (i + 1) * batch]
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())
        torch.stack(losses).sum().item()

    return run


def lrlab_pass(
    args: argparse.Namespace, device: torch.device, split: TensorSplit, batch: int, kind: str
) -> Callable:
    """A fresh model, lrlab engine and optimizer, and a function running one pass of `kind`
    (`train`: Engine.train_epoch; `lr_find`: find_lr over the same number of steps)."""
    model = _model(args, device)
    engine = Engine(
        model,
        device,
        args.precision,
        channels_last=True,
        compile=args.compile or False,
        log_every=args.log_every,
    )
    optimizer = build_optimizer(
        lambda params, lr: torch.optim.AdamW(params, lr=lr), model, layer_groups(model), lr=1e-4
    )
    loader = TensorLoader(split, batch, NORM, device, shuffle=True, drop_last=True, augment={"hflip": True})

    def run() -> None:
        if kind == "train":
            engine.train_epoch(loader, optimizer)
        else:
            find_lr(model, loader, optimizer, engine=engine, num_iter=args.steps, stop_div=False, end_lr=1e-2)
        sync_device(device)

    return run


def timed(fn: Callable, device: torch.device) -> float:
    sync_device(device)
    start = time.perf_counter()
    fn()
    sync_device(device)
    return time.perf_counter() - start


def measure(args: argparse.Namespace, device: torch.device, batch: int) -> dict[str, dict[str, float]]:
    """Per method: first-pass seconds, best warm-pass seconds over `repeats` rounds (each round
    times every method once, starting one method later than the round before), images/s."""
    split = random_images(args, batch)
    makers = {
        "plain": lambda: plain_loop(args, device, split, batch),
        "train": lambda: lrlab_pass(args, device, split, batch, "train"),
        "lr_find": lambda: lrlab_pass(args, device, split, batch, "lr_find"),
    }
    runs, first = {}, {}
    for name, make in makers.items():
        runs[name] = make()
        first[name] = timed(runs[name], device)
    warm: dict[str, list[float]] = {name: [] for name in makers}
    names = list(runs)
    for r in range(args.repeats):  # interleaved, in rotating order: drift and position hit every method alike
        for name in names[r % len(names) :] + names[: r % len(names)]:
            warm[name].append(timed(runs[name], device))
    return {
        name: {"first_s": first[name], "warm_s": min(w), "img_s": batch * args.steps / min(w)}
        for name, w in warm.items()
    }


def add_step_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a timed lrlab step, shared with `profile_step.py`."""
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="32", choices=["32", "bf16", "16"])
    parser.add_argument("--model", default="tf_efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per timed pass")
    parser.add_argument("--compile", default=None, help="a torch.compile mode (default: eager)")
    parser.add_argument(
        "--log-every", type=int, default=StepOptions.log_every, help="lrlab's loss read-back interval"
    )
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument(
        "--malloc-defaults",
        action="store_true",
        help="keep glibc's malloc defaults (the lrlab command holds freed memory: lrlab.core.host_memory)",
    )


def hold_memory_unless(args: argparse.Namespace) -> str:
    """Hold freed host memory as the lrlab command does, unless --malloc-defaults; says which."""
    if args.malloc_defaults:
        return "malloc defaults"
    return "freed memory held" if hold_freed_memory() else "malloc as the environment sets it"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_step_arguments(parser)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 128, 256])
    parser.add_argument("--repeats", type=int, default=4, help="warm rounds (the fastest pass counts)")
    args = parser.parse_args()
    memory = hold_memory_unless(args)
    device = torch.device(args.device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"# {args.model} {args.image_size}px, precision {args.precision}, channels_last, compile "
        f"{args.compile or 'off'}, {args.steps} steps per pass, torch {torch.__version__}, {name}, {memory}"
    )
    print(f"{'batch':>5} {'method':<8} {'img/s':>9} {'x plain':>8} {'first pass s':>12} {'overhead s':>10}")
    results = {}
    for batch in args.batch_sizes:
        results[batch] = measure(args, device, batch)
        plain = results[batch]["plain"]["img_s"]
        for method, r in results[batch].items():
            print(
                f"{batch:>5} {method:<8} {r['img_s']:>9.1f} {r['img_s'] / plain:>8.3f} "
                f"{r['first_s']:>12.2f} {r['first_s'] - r['warm_s']:>10.2f}",
                flush=True,
            )
        if args.json:  # after every batch size, so a run cut off at a time limit keeps what finished
            with open(args.json, "w") as handle:
                json.dump({"args": vars(args), "device": name, "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
