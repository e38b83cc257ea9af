"""Benchmark: can lrlab's input path feed the GPU? Images/s of the training loader alone.

A GPU that trains Lite0 at 300 px at thousands of images/s starves if the loader delivers fewer.
This times lrlab's own loaders (`make_loaders`) over the ELPV images, without any model:
- `files`: the image files as a folder dataset (`data=imagefolder`): torch's DataLoader decoding
  and transforming with timm's training transforms, for each `data.num_workers` given, pinned
  memory on CUDA, each batch copied to the device as training does; worker start-up (the first
  batch) reported apart;
- `memory`: the decoded images as uint8 tensors on the device (`TensorLoader`, what in-memory
  sources such as ELPV use): flips and normalisation on the device.

    python benchmarks/loader_speed.py                                   # bundled ELPV, CPU
    python benchmarks/loader_speed.py --root .gpu/elpv --device cuda --workers 0 2 4 8 16
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from lrlab.data.decode import usable_cores
from lrlab.data.files import load_imagefolder
from lrlab.data.loaders import make_loaders
from lrlab.data.sources import _elpv_labels_file, load_elpv
from lrlab.data.types import Normalization
from step_speed import sync_device

NORM = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
LEVELS = {"0.0": "p0", "0.3333333333333333": "p1_3", "0.6666666666666666": "p2_3", "1.0": "p1"}


def folder_tree(root: str | None, target: Path) -> Path:
    """ELPV (bundled, or a copy under `root`) as ROOT/<class>/<image> symlinks: a folder dataset."""
    labels = _elpv_labels_file(root)
    for line in labels.read_text().splitlines():
        name, prob, _ = line.split()
        folder = target / LEVELS.get(prob, f"p{prob}")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / Path(name).name).symlink_to((labels.parent / name).resolve())
    return target


def time_loader(loader, device: torch.device, batches: int) -> tuple[float, float, int]:
    """(seconds to the first batch, images/s over the next `batches` batches, images timed);
    every batch is moved to `device` as the engine moves it."""
    start = time.perf_counter()
    iterator = iter(loader)
    x, _ = next(iterator)
    x.to(device, non_blocking=True)
    sync_device(device)
    first = time.perf_counter() - start
    start, seen = time.perf_counter(), 0
    for _, (x, _) in zip(range(batches), iterator):
        x.to(device, non_blocking=True)
        seen += len(x)
    sync_device(device)
    return first, seen / (time.perf_counter() - start), seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="an ELPV copy (labels.csv + images/); default: bundled")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--image-size", type=int, default=300)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--batches", type=int, default=10, help="batches timed after the first")
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args()
    device = torch.device(args.device)
    cores = usable_cores()
    print(
        f"# training loader alone, ELPV at {args.image_size} px, batch {args.batch}, {args.batches} batches "
        f"timed, device {device}, {cores} CPU cores, torch {torch.__version__}"
    )
    print(f"{'loader':<16} {'img/s':>9} {'first batch s':>14}")
    cfg = {"batch_size": args.batch, "image_size": args.image_size, "augment": {"hflip": True}}
    with tempfile.TemporaryDirectory() as tmp:
        source = load_imagefolder(root=str(folder_tree(args.root, Path(tmp))), image_size=args.image_size)
        for workers in args.workers:
            train = make_loaders(source, {**cfg, "num_workers": workers}, NORM, device).train
            first, rate, _ = time_loader(train, device, args.batches)
            print(f"{f'files, {workers} workers':<16} {rate:>9.1f} {first:>14.2f}", flush=True)
            del train
    memory = load_elpv(root=args.root, image_size=args.image_size)
    train = make_loaders(memory, cfg, NORM, device).train
    first, rate, _ = time_loader(train, device, args.batches)
    print(f"{'memory':<16} {rate:>9.1f} {first:>14.2f}")


if __name__ == "__main__":
    main()
