"""Benchmark: one ``watch`` pass over 200 experiment folders, 10 of them growing.

A synthetic tree (cached in ``build/bench/watch``): 200 experiments of 4
positions x 500 empty plane files each (2,000 planes, 400,000 files in all) with
an Acq and a log file, none ready (the settle time is an hour), so every pass
looks at all of them.  Measured, each next to its target or baseline:

* the first pass (every folder listed and every file stat'ed);
* a pass where nothing changed, seconds and file-system calls (``os.scandir``,
  ``os.stat`` and ``DirEntry.stat``, counted by wrapping them);
* a pass after 10 experiments grew (a new time point in every position), and
  after 20: the calls beyond the quiet pass, per growing experiment, should be
  the same for 10 and 20 (cost proportional to what changed);
* the baseline: a plain ``os.scandir`` walk of the whole tree (names only, and
  with every file stat'ed), best of ``--runs``.

Target: a pass under 1 s.  The exit code is 0 whether the target is met or
not (this is a measurement); a miss prints FAIL.

    python benchmarks/bench_watch.py [--runs 3] [--experiments 200] [--planes 2000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from pyomero_upload.watch import Watcher, WatchOptions  # noqa: E402

TARGET_S = 1.0
POSITIONS = 4
CHANNELS = ("Brightfield", "DIC", "GFP", "mCherry", "cy5")
Z = 5


class Counter:
    """Counts os.scandir, os.stat and DirEntry.stat calls while installed."""

    def __init__(self) -> None:
        self.scandir = self.stat = 0
        self._scandir, self._stat = os.scandir, os.stat

    def __enter__(self) -> Counter:
        counter = self

        class Entry:
            __slots__ = ("_e",)

            def __init__(self, e):
                self._e = e

            def __getattr__(self, name):
                return getattr(self._e, name)

            def stat(self, *a, **k):
                counter.stat += 1
                return self._e.stat(*a, **k)

        class Scan:
            def __init__(self, it):
                self._it = it

            def __iter__(self):
                return (Entry(e) for e in self._it)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self._it.close()

        def scandir(path="."):
            counter.scandir += 1
            return Scan(self._scandir(path))

        def stat(*a, **k):
            counter.stat += 1
            return self._stat(*a, **k)

        os.scandir, os.stat = scandir, stat  # type: ignore[assignment]
        return self

    def __exit__(self, *exc) -> None:
        os.scandir, os.stat = self._scandir, self._stat  # type: ignore[assignment]

    @property
    def calls(self) -> int:
        return self.scandir + self.stat


def build_tree(root: Path, experiments: int, planes: int) -> None:
    stamp = root / f".built-{experiments}x{planes}"
    if stamp.exists():
        return
    per_t = len(CHANNELS) * Z
    t_count = max(1, planes // POSITIONS // per_t)
    print(f"building {experiments} experiments x {POSITIONS} positions x {t_count * per_t} "
          f"planes in {root} (once) ...", flush=True)
    for i in range(experiments):
        exp = root / f"exp{i:03d}"
        for p in range(1, POSITIONS + 1):
            pos = exp / f"pos{p:03d}"
            pos.mkdir(parents=True, exist_ok=True)
            for t in range(1, t_count + 1):
                for c in CHANNELS:
                    for z in range(1, Z + 1):
                        (pos / f"scope_{t:06d}_{c}_{z:03d}.png").touch()
        (exp / "scope_Acq.txt").write_text("Time_settings:\n1,300,288,86400\n")
        (exp / "scope_log.txt").write_text("Experiment details:\n")
    stamp.touch()


#: Time points the benchmark adds are numbered from here (and removed at the end).
GROWN_T = 100_000


def grow(root: Path, names: list[str], t: int) -> None:
    """One new time point in every position of each named experiment (new files, as a
    microscope writes them)."""
    for name in names:
        for p in range(1, POSITIONS + 1):
            pos = root / name / f"pos{p:03d}"
            for c in CHANNELS:
                for z in range(1, Z + 1):
                    (pos / f"scope_{t:06d}_{c}_{z:03d}.png").touch(exist_ok=False)


def ungrow(root: Path) -> None:
    """Remove what :func:`grow` added (here or in an interrupted earlier run)."""
    for pos in root.glob("exp*/pos*"):
        for f in pos.glob("scope_1[0-9][0-9][0-9][0-9][0-9]_*.png"):
            f.unlink()


def walk(path: str, stat: bool) -> int:
    n = 0
    with os.scandir(path) as it:
        for e in it:
            n += 1
            if e.is_dir(follow_symlinks=False):
                n += walk(e.path, stat)
            elif stat:
                e.stat()
    return n


def best(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--experiments", type=int, default=200)
    parser.add_argument("--planes", type=int, default=2000)
    parser.add_argument("--growing", type=int, default=10)
    parser.add_argument("--tree", type=Path, default=HERE.parent / "build" / "bench" / "watch")
    args, _ = parser.parse_known_args()
    runs = max(1, args.runs)
    root = args.tree
    build_tree(root, args.experiments, args.planes)
    ungrow(root)
    try:
        return measure(root, args, runs)
    finally:
        ungrow(root)


def measure(root: Path, args: argparse.Namespace, runs: int) -> int:
    names = sorted(p.name for p in root.iterdir() if p.name.startswith("exp"))
    time.sleep(2.1)  # past the racy window (folders just written are listed again)

    files = walk(str(root), False)
    plain = best(lambda: walk(str(root), False), runs)
    plain_stat = best(lambda: walk(str(root), True), runs)

    with tempfile.TemporaryDirectory() as tmp:
        opts = WatchOptions(roots=[root], to="ome-tiff", report_dir=Path(tmp) / "reports",
                            output=Path(tmp) / "out", settle_s=3600, every_s=60)
        w = Watcher(opts)
        start = time.perf_counter()
        w.pass_once()
        first = time.perf_counter() - start
        time.sleep(2.1)
        w.pass_once()  # what the first pass saw as just written, listed once more

        def quiet_pass() -> None:
            w.pass_once()

        quiet = best(quiet_pass, runs)
        with Counter() as c:
            w.pass_once()
        quiet_calls = c.calls

        t = GROWN_T
        grown: dict[int, tuple[float, int]] = {}
        for k in (args.growing, 2 * args.growing):
            times, calls = [], []
            for r in range(runs + 1):
                t += 1
                grow(root, names[:k], t)
                if r < runs:
                    start = time.perf_counter()
                    w.pass_once()
                    times.append(time.perf_counter() - start)
                else:
                    with Counter() as c:
                        w.pass_once()
                    calls.append(c.calls)
                time.sleep(2.1)  # the grown folders leave the racy window
                w.pass_once()
            grown[k] = (min(times), calls[0])
        w.journal.close()

    n = len(names)
    print(f"watch pass over {n} experiment folders ({files:,} entries), {os.cpu_count()} "
          f"cores, best of {runs}")
    print(f"  baseline: plain os.scandir walk of the whole tree {plain:.3f} s "
          f"(with every file stat'ed: {plain_stat:.3f} s, {files:,} calls)")
    print(f"  first pass (everything listed and stat'ed): {first:.3f} s  "
          f"[{first / plain_stat:.2f}x the stat'ed walk]")
    verdict = "PASS" if quiet < TARGET_S else "FAIL"
    print(f"  pass, nothing changed: {quiet:.4f} s, {quiet_calls:,} file-system calls  "
          f"[target < {TARGET_S:.0f} s: {verdict}; {plain / quiet:.0f}x faster than the plain "
          "walk]")
    per = {}
    for k, (secs, calls) in grown.items():
        per[k] = (calls - quiet_calls) / k
        verdict = "PASS" if secs < TARGET_S else "FAIL"
        print(f"  pass, {k} experiments grew: {secs:.4f} s, {calls:,} calls "
              f"({per[k]:.0f} beyond the quiet pass per grown experiment)  "
              f"[target < {TARGET_S:.0f} s: {verdict}]")
    a, b = per[args.growing], per[2 * args.growing]
    ratio = b / a if a else float("inf")
    verdict = "PASS" if 0.8 <= ratio <= 1.25 else "FAIL"
    print(f"  cost per grown experiment, {2 * args.growing} vs {args.growing}: {ratio:.2f}x  "
          f"[proportional to what changed: 1.0x; {verdict}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
