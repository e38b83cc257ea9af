"""Robustness check: interrupt first runs at random moments, then run again in the same folder.

Each round starts `lrlab experiment=smoke` in a fresh folder (so the run creates the MLflow store),
sends SIGINT or SIGTERM at a random moment in its first `--window` seconds, then runs a normal
`lrlab experiment=smoke` in that folder, which must exit 0 and leave a FINISHED run. Prints one
line per round and the tally; exits 1 if any round failed.

    python benchmarks/first_run_interrupts.py --rounds 20 --window 5
    python benchmarks/first_run_interrupts.py --rounds 20 --start 4 --window 12   # past the imports

It also counts the rounds whose first run got as far as creating its MLflow run (then KILLED).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUN = [sys.executable, "-m", "lrlab", "experiment=smoke", "epochs=1", "train.checkpoints=false"]


def one_round(folder: Path, delay: float, sig: int) -> tuple[bool, str]:
    """Interrupt a first run after `delay` s with `sig`, then run again; (success, description)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    first = subprocess.Popen(
        RUN, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    time.sleep(delay)
    first.send_signal(sig)
    try:
        first.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        first.kill()
        return False, "the interrupted run did not stop within 120 s"
    second = subprocess.run(RUN, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    if second.returncode != 0:
        return False, f"the next run exited {second.returncode}: {second.stderr.strip().splitlines()[-1:]}"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    statuses = sorted(r.info.status for r in runs)
    ok = "FINISHED" in statuses and "RUNNING" not in statuses and len(statuses) <= 2
    return ok, f"first run exited {first.returncode}; runs now {statuses}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--window", type=float, default=5.0, help="interrupt within this many seconds")
    parser.add_argument("--start", type=float, default=0.0, help="but not before this many seconds")
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args()
    rng = random.Random(opts.seed)
    passed = 0
    with tempfile.TemporaryDirectory(prefix="lrlab-interrupts-") as tmp:
        for i in range(opts.rounds):
            folder = Path(tmp) / f"round{i}"
            folder.mkdir()
            delay, sig = rng.uniform(opts.start, opts.window), rng.choice([signal.SIGINT, signal.SIGTERM])
            ok, what = one_round(folder, delay, sig)
            passed += ok
            print(
                f"round {i:2d}: {signal.Signals(sig).name} at {delay:.2f} s -> {'ok' if ok else 'FAILED'}: "
                f"{what}"
            )
            print(
                f"  leftovers: {sorted(p.name for p in folder.iterdir() if 'broken' in p.name)}", flush=True
            )
    print(f"{passed}/{opts.rounds} rounds succeeded")
    return 0 if passed == opts.rounds else 1


if __name__ == "__main__":
    sys.exit(main())
