"""Benchmark: start-up of ``pyomero-upload --help``, ``--version`` and ``plan`` as whole processes.

Each command is run as a user runs it (a fresh process, wall time from spawn
to exit, output discarded), best of ``--runs``, next to ``python -c pass``
with the same interpreter, the floor no Python command can go under.
Target: under 0.3 s each.  The exit code is 0 whether the target is met or
not (this is a measurement); a miss prints FAIL.

    python benchmarks/bench_startup.py [--demo DIR] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DEMO = Path(
    os.environ.get("PYOMERO_DEMO_DATA", HERE.parent.parent / "shared" / "data" / "demo")
)
TARGET_S = 0.3


def best_of(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        times.append(time.perf_counter() - start)
        if proc.returncode:
            raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr.decode()}")
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=DEFAULT_DEMO)
    parser.add_argument("--runs", type=int, default=5)
    here = Path(sys.executable).parent / "pyomero-upload"
    parser.add_argument("--cli", default=str(here) if here.exists()
                        else shutil.which("pyomero-upload") or "pyomero-upload")
    args = parser.parse_args()
    if not (args.demo / "pos001").is_dir():
        print(f"demo data not found at {args.demo}", file=sys.stderr)
        return 1
    runs = max(1, args.runs)

    sys.path.insert(0, str(HERE))
    from bench_export import byte_compile

    byte_compile(args.cli)  # as pip install does (PYTHONDONTWRITEBYTECODE would skip it)
    best_of([args.cli, "--version"], 1)  # warm the cache, unmeasured
    floor = best_of([sys.executable, "-c", "pass"], runs)
    print(f"start-up, whole processes, best of {runs} ({os.cpu_count()} cores); "
          f"floor `python -c pass`: {floor:.3f} s")
    for label, cmd in [
        ("pyomero-upload --help", [args.cli, "--help"]),
        ("pyomero-upload --version", [args.cli, "--version"]),
        ("pyomero-upload plan DEMO", [args.cli, "plan", str(args.demo)]),
    ]:
        s = best_of(cmd, runs)
        print(f"  {label:<26}{s:7.3f} s  (floor + {s - floor:.3f} s, {s / floor:.1f}x)  "
              f"target < {TARGET_S} s  {'PASS' if s < TARGET_S else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
