"""Benchmark: OMERO upload against the in-memory fake server, ours vs the original's method.

For the demo data and for a large experiment built from it (hard links),
measures in one run:

* decode-only: client CPU per GB to decode every plane (the floor);
* ours: ``upload_experiment`` (pixels per timepoint/stack, parallel positions);
* original: one ``setPlane`` call per plane, positions one after another,
  planes read with Pillow and byte-swapped, as PyOmeroUpload did.

Prints remote pixel calls, all remote calls, client CPU seconds per GB and the
ratios.  Targets: >= 10x fewer pixel calls; CPU per GB within 1.2x of
decode-only.  Needs omero-py (``make install-omero``).

    python benchmarks/bench_upload.py [--positions 25 --timepoints 20]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from bench_export import DEFAULT_DEMO, build_experiment  # noqa: E402

PIXEL_METHODS = ("setPlane", "setStack", "setTimepoint", "setTile")


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(fn) -> tuple[float, float]:
    cpu, wall = cpu_seconds(), time.perf_counter()
    fn()
    return cpu_seconds() - cpu, time.perf_counter() - wall


def run_ours(data: Path, workers: int):
    from omero_fake import FakeServer, client_factory
    from pyomero_upload.layout import discover
    from pyomero_upload.omero.connection import Connection, ConnectionSettings
    from pyomero_upload.upload import UploadOptions, upload_experiment

    server = FakeServer(keep_pixels=False)
    exp = discover(data)
    settings = ConnectionSettings("omero.test", 4064, "alice", "secret")

    def job():
        with Connection.open(settings, client_factory(server)) as conn:
            upload_experiment(conn, exp, None, UploadOptions("bench", workers=workers))

    cpu, wall = measure(job)
    return server, cpu, wall, exp.nbytes


def run_original(data: Path):
    """PyOmeroUpload's way: per plane, read with PIL, swap bytes, one setPlane."""
    import numpy as np
    from PIL import Image

    from omero_fake import FakeServer, client_factory
    from pyomero_upload.describe import describe
    from pyomero_upload.layout import discover
    from pyomero_upload.omero.connection import Connection, ConnectionSettings
    from pyomero_upload.omero.containers import ensure_dataset
    from pyomero_upload.omero.images import create_image

    server = FakeServer(keep_pixels=False)
    exp = discover(data)
    settings = ConnectionSettings("omero.test", 4064, "alice", "secret")

    def job():
        with Connection.open(settings, client_factory(server)) as conn:
            dataset_id, _ = ensure_dataset(conn, "original")
            for pos in exp.positions:  # one after another
                new = create_image(conn, dataset_id, describe(exp, pos))
                store = conn.sf.createRawPixelsStore()
                store.setPixelsId(new.pixels_id, True)
                for i, path in enumerate(exp.plane_paths(pos)):
                    with Image.open(path) as im:
                        plane = np.asarray(im)
                    z = i % exp.size_z
                    c = (i // exp.size_z) % exp.size_c
                    t = i // (exp.size_z * exp.size_c)
                    store.setPlane(plane.byteswap().tobytes(), z, c, t)
                store.close()

    cpu, wall = measure(job)
    return server, cpu, wall, exp.nbytes


def run_decode(data: Path, workers: int):
    from pyomero_upload.layout import discover
    from pyomero_upload.parallel import ordered_map, prefetch_window
    from pyomero_upload.planes import read_plane

    exp = discover(data)
    paths = [p for pos in exp.positions for p in exp.plane_paths(pos)]
    window = prefetch_window(workers, exp.nbytes // len(paths))

    def job():
        for _ in ordered_map(read_plane, paths, workers, window):
            pass

    cpu, wall = measure(job)
    return None, cpu, wall, exp.nbytes


def report(label: str, data: Path, workers: int) -> None:
    dec = run_decode(data, workers)
    ours = run_ours(data, workers)
    orig = run_original(data)
    print(f"\n{label}: {ours[3] / 1e9:.2f} GB")
    print(f"{'method':<22}{'pixel calls':>12}{'all calls':>10}{'CPU s':>8}{'CPU s/GB':>10}"
          f"{'wall s':>8}")
    rows = {"decode-only": dec, "ours": ours, "original (setPlane)": orig}
    calls = {}
    for name, (server, cpu, wall, nbytes) in rows.items():
        pixel = sum(server.counts[f"RawPixelsStore.{m}"] for m in PIXEL_METHODS) if server else 0
        total = len(server.calls) if server else 0
        calls[name] = pixel
        print(f"{name:<22}{pixel:>12}{total:>10}{cpu:>8.1f}{cpu / (nbytes / 1e9):>10.1f}"
              f"{wall:>8.1f}")
    fewer = calls["original (setPlane)"] / max(calls["ours"], 1)
    cpu_ratio = ours[1] / dec[1]
    print(f"pixel calls, original / ours: {fewer:.0f}x (target >= 10) "
          f"{'PASS' if fewer >= 10 else 'FAIL'}")
    print(f"client CPU per GB, ours / decode-only: {cpu_ratio:.2f} (target <= 1.2) "
          f"{'PASS' if cpu_ratio <= 1.2 else 'FAIL'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=DEFAULT_DEMO)
    parser.add_argument("--positions", type=int, default=25)
    parser.add_argument("--timepoints", type=int, default=20)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    try:
        import omero  # noqa: F401
    except ImportError:
        print("omero-py is not installed: make install-omero", file=sys.stderr)
        return 1
    if not (args.demo / "pos001").is_dir():
        print(f"demo data not found at {args.demo}", file=sys.stderr)
        return 1
    report("demo data (3 positions x 3 T x 3 C x 5 Z)", args.demo, args.workers)
    tmp = Path(tempfile.mkdtemp(prefix="pyomero-bench-upload-"))
    try:
        n = build_experiment(args.demo, tmp / "big", args.positions, args.timepoints)
        report(f"large experiment ({args.positions} x {args.timepoints} T x 3 C x 5 Z = {n} "
               "planes)", tmp / "big", args.workers)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
