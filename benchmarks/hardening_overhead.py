"""What issue 11's file checks cost: the same commands on this tree and on a baseline tree, interleaved.

The baseline is another dpsctl source tree (the commit before the hardening), run with the same interpreter:

    git archive a34aecc | tar -x -C /tmp/dpsctl-base
    python benchmarks/hardening_overhead.py --baseline /tmp/dpsctl-base

Each figure is the median of --repeat runs, baseline and this tree alternating, with the ratio between them.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
KEY = base64.b64encode(b"benchmark-device-key-0123456789").decode()


def timed(tree: Path, args: list[str], cwd: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "dpsctl", *args], cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"failed: {args[:6]}: {done.stderr[-500:]}")
    return elapsed


def scenario(tree: Path, store: str, devices: int, folder: Path) -> dict[str, float]:
    """Seconds for: init, one write, one read, and a storm of `devices` provisions (chunked transactions)."""
    for leftover in folder.iterdir():
        leftover.unlink()
    db = ["--db", store]
    out = {"init": timed(tree, [*db, "init"], folder)}
    timed(tree, [*db, "hub", "add", "hub-a"], folder)
    out["enrollment add"] = timed(tree, [*db, "enrollment", "add", "dev-01", "--attestation", "symmetricKey", "--primary-key", KEY], folder)
    out["enrollment list"] = timed(tree, [*db, "enrollment", "list", "-o", "json"], folder)
    timed(tree, [*db, "enrollment-group", "add", "grp", "--attestation", "symmetricKey"], folder)
    out[f"storm {devices} devices, chunk 50"] = timed(tree, [*db, "provision", "--count", str(devices), "--group", "grp", "--chunk-size", "50", "-o", "json"], folder)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="a dpsctl source tree to compare with")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--devices", type=int, default=2000)
    options = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; median of {options.repeat}, baseline {options.baseline}")
    for store in ("dps.json", "dps.sqlite"):
        results: dict[str, dict[str, list[float]]] = {"baseline": {}, "this tree": {}}
        with tempfile.TemporaryDirectory() as folder:
            for _ in range(options.repeat):
                for name, tree in (("baseline", options.baseline), ("this tree", HERE)):
                    for figure, seconds in scenario(tree, store, options.devices, Path(folder)).items():
                        results[name].setdefault(figure, []).append(seconds)
        print(f"\n{store}")
        for figure in results["baseline"]:
            base = statistics.median(results["baseline"][figure])
            new = statistics.median(results["this tree"][figure])
            print(f"  {figure:32s} baseline {base * 1000:8.1f} ms   this tree {new * 1000:8.1f} ms   ratio {new / base:5.2f}")


if __name__ == "__main__":
    main()
