"""Profile lrlab's training step: where the time goes, and whether the host waits on the device.

Runs `Engine.train_epoch` on random images (as `step_speed.py` does: Lite0, channels_last, the
given precision and compile mode) under `torch.profiler` after a warm-up pass, and prints:
- the top operators by self time on the device (CUDA) or the CPU;
- host synchronisations per step: `aten::_local_scalar_dense` (`.item()`, `.tolist()`),
  `cudaStreamSynchronize` / `cudaDeviceSynchronize`, device-to-host copies. lrlab reads losses
  back once per `log_every` steps, so on CUDA anything above that per step is a stall to remove
  (on the CPU nothing waits: torch's CPU AdamW reads each parameter's step count with `.item()`);
- on CUDA, device busy time against wall time: a busy share well below 1 means the step is bound
  by kernel launches or the input path, not by the GPU.
These are the "profile lines" the GPU issue asks for beside each missed speed target.

    python benchmarks/profile_step.py                                        # CPU, 64 px
    python benchmarks/profile_step.py --device cuda --precision bf16 --image-size 300 --batch 128
    python benchmarks/profile_step.py --device cuda --precision bf16 --image-size 300 \
        --compile reduce-overhead
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from step_speed import add_step_arguments, hold_memory_unless, lrlab_pass, random_images

SYNC_EVENTS = {
    "item": ("aten::_local_scalar_dense",),
    "synchronize": ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize"),
    "device_to_host": ("Memcpy DtoH",),
}


def profile_training(args: argparse.Namespace) -> dict:
    """One warm-up epoch, then one profiled epoch of `args.steps` steps; the figures as a dict."""
    device = torch.device(args.device)
    train_epoch = lrlab_pass(args, device, random_images(args, args.batch), args.batch, "train")
    train_epoch()  # warm-up: compilation, cuDNN autotuning, allocator
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        train_epoch()  # ends with a device synchronize
        wall = time.perf_counter() - start
    events = prof.key_averages()
    on_device = device.type == "cuda"
    sort_key = "self_cuda_time_total" if on_device else "self_cpu_time_total"
    table = events.table(sort_by=sort_key, row_limit=args.rows, max_name_column_width=60)
    counts = {
        kind: sum(e.count for e in events if any(e.key.startswith(name) for name in names))
        for kind, names in SYNC_EVENTS.items()
    }
    kernels = [e for e in events if e.device_type == DeviceType.CUDA]  # kernels, copies, memsets
    busy = sum(e.self_device_time_total for e in kernels) / 1e6 if on_device else None
    return {
        "steps": args.steps,
        "batch": args.batch,
        "wall_s": wall,
        "img_s": args.batch * args.steps / wall,
        "per_step": {kind: count / args.steps for kind, count in counts.items()},
        "device_busy_share": busy / wall if busy is not None else None,
        "table": table,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_step_arguments(parser)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rows", type=int, default=15, help="operators listed")
    args = parser.parse_args()
    hold_memory_unless(args)
    result = profile_training(args)
    print(
        f"# lrlab training step, {args.model} {args.image_size}px batch {args.batch}, precision "
        f"{args.precision}, compile {args.compile or 'off'}, log_every {args.log_every}, "
        f"torch {torch.__version__}, {args.device}"
    )
    print(result["table"])
    per_step = ", ".join(f"{kind} {value:.2f}" for kind, value in result["per_step"].items())
    print(f"host syncs per step: {per_step} (lrlab's loss read-back: once per {args.log_every} steps)")
    busy = result["device_busy_share"]
    print(
        f"{result['img_s']:.1f} images/s over {args.steps} profiled steps"
        + (f"; device busy {busy:.0%} of wall time" if busy is not None else "")
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {k: v for k, v in result.items() if k != "table"} | {"args": vars(args)}, handle, indent=2
            )


if __name__ == "__main__":
    main()
