"""Benchmark: upload to the OMERO double over loopback, ours vs the original's method.

The 7,500-plane experiment of ``bench_export.py`` (25 positions x 20 T x 3 C
x 5 Z, 512 x 512 uint16 PNG built from the demo planes, cached under
``build/bench/``) goes to ``pyomero_upload.testing.omero_double`` (a real Ice
server, SSL on 127.0.0.1) three ways, each as its own process whose own
rusage (wait4) gives its CPU time:

* decode-only: read and ``imagecodecs.png_decode`` every plane, plain
  library calls on all cores (threads), send nothing: the floor;
* ours: ``pyomero-upload upload EXP --dataset ...`` as a user runs it;
* original: PyOmeroUpload's way, positions one after another, each plane read
  with Pillow, byte-swapped and sent with one ``setPlane`` call.

Each upload gets a fresh double (its pixel files are removed after).  Prints
planes/s, MB/s, pixel calls and client CPU per GB, and PASS/FAIL for the
targets: >= 10x fewer pixel calls than the original; client CPU per GB within
1.25x of decode-only.  Always exits 0 when it ran.  Needs omero-py.

    python benchmarks/bench_upload.py [--positions 25 --timepoints 20]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_export import (  # noqa: E402
    DEFAULT_DEMO,
    DEFAULT_WORKDIR,
    _decode_file,
    build_experiment,
    plane_files,
    run_measured,
    warm_cache,
)

TARGET_FEWER_CALLS = 10.0
TARGET_CPU_VS_DECODE = 1.25
PASSWORD = "bench-omero"


def child_decode(data: Path, workers: int) -> None:
    """Read and ``png_decode`` every plane with plain imagecodecs calls on all cores
    (a thread pool: the least CPU), send nothing; none of our code on the path."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as ex:
        n = sum(ex.map(_decode_file, [str(p) for p in plane_files(data)]))
    print(f"decoded {n} bytes")


def child_original(data: Path, host: str, port: int) -> None:
    """PyOmeroUpload's method: per plane, read with PIL, swap bytes, one setPlane."""
    import numpy as np
    from PIL import Image

    from pyomero_upload.describe import describe
    from pyomero_upload.layout import discover
    from pyomero_upload.omero.connection import Connection, ConnectionSettings
    from pyomero_upload.omero.containers import ensure_dataset
    from pyomero_upload.omero.images import create_image

    exp = discover(data)
    calls = 0
    settings = ConnectionSettings(host, port, "root", PASSWORD)
    with Connection.open(settings) as conn:
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
                calls += 1
            store.save()
            store.close()
    print(f"{calls} pixel calls")


def upload_run(cmd: list[str], work: Path, tag: str):
    """Start a fresh double, run ``cmd`` (with {host} and {port} filled in) measured,
    return (Run, pixel objects in the double's state)."""
    from pyomero_upload.testing.omero_double import running_double

    where = work / f"double-{tag}"
    shutil.rmtree(where, ignore_errors=True)
    try:
        with running_double(where, password=PASSWORD) as d:
            env = {**os.environ, "OMERO_PASSWORD": PASSWORD}
            for var in ("OMERO_HOST", "OMERO_USER", "OMERO_PORT", "OMERO_GROUP"):
                env.pop(var, None)
            env["OMERO_SESSIONDIR"] = str(where / "sessions")  # no stored session
            before = server_cpu(d.process.pid)
            run = run_measured([a.format(host=d.host, port=d.port) for a in cmd], env=env)
            run.server_cpu = server_cpu(d.process.pid) - before
            state = d.state(timeout_s=600)
    finally:
        shutil.rmtree(where, ignore_errors=True)
    return run, state


def server_cpu(pid: int) -> float:
    """CPU seconds the double's process has used so far (/proc/PID/stat utime + stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def check_state(state: dict, planes: int) -> str:
    """How many planes the double holds written (not all-zero), as a sanity line."""
    import hashlib

    zero = hashlib.sha1(bytes(512 * 512 * 2)).hexdigest()
    held = [h for p in state["pixels"].values() for h in p["planes"].values()]
    written = sum(h != zero for h in held)
    return f"{written}/{planes} planes written in the double"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=DEFAULT_DEMO)
    parser.add_argument("--positions", type=int, default=25)
    parser.add_argument("--timepoints", type=int, default=20)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, data, *rest = args.child
        if kind == "decode":
            child_decode(Path(data), int(rest[0]))
        else:
            child_original(Path(data), rest[0], int(rest[1]))
        return 0
    try:
        import omero  # noqa: F401
    except ImportError:
        print("omero-py is not installed: make install-omero", file=sys.stderr)
        return 1
    if not (args.demo / "pos001").is_dir():
        print(f"demo data not found at {args.demo}", file=sys.stderr)
        return 1
    # every child (the upload, the double) runs this checkout's package
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(HERE.parent)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    import bench_export

    bench_export.LOG = work / ".last-upload-run.log"  # where run_measured keeps output
    data = work / f"exp-{args.positions}x{args.timepoints}"
    n = build_experiment(args.demo, data, args.positions, args.timepoints)
    warm_cache(plane_files(data))
    gb = n * 512 * 512 * 2 / 1e9
    print(f"machine: {len(os.sched_getaffinity(0))} usable cores, load average "
          f"{os.getloadavg()[0]:.1f}; experiment {n} planes ({gb:.2f} GB of pixels) at {data}")
    print("server: the OMERO double (pyomero_upload.testing.omero_double) on 127.0.0.1 over "
          "SSL, one fresh double per upload; it runs on the same cores")

    me = [sys.executable, str(Path(__file__).resolve())]
    decode = run_measured([*me, "--child", "decode", str(data), str(args.workers)])
    if decode.returncode:
        print(decode.output, file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    ours, ours_state = upload_run(
        [sys.executable, "-m", "pyomero_upload", "upload", str(data), "--dataset", "bench",
         "--host", "{host}", "--port", "{port}", "--user", "root"], work, "ours")
    if ours.returncode:
        print(ours.output, file=sys.stderr)
        return 1
    m = re.search(r"\((\d+) pixel calls\)", ours.output)
    ours_calls = int(m.group(1)) if m else -1
    orig, orig_state = upload_run([*me, "--child", "original", str(data), "{host}", "{port}"],
                                  work, "original")
    if orig.returncode:
        print(orig.output, file=sys.stderr)
        return 1
    orig_calls = int(re.search(r"(\d+) pixel calls", orig.output).group(1))
    print(f"ours: {check_state(ours_state, n)}; original: {check_state(orig_state, n)} "
          f"({time.perf_counter() - t0:.0f} s for both uploads)")

    print(f"\n{'method':<24}{'planes/s':>9}{'MB/s':>8}{'pixel calls':>12}{'CPU s':>8}"
          f"{'CPU s/GB':>9}{'wall s':>8}{'server CPU s':>13}")
    for name, run, calls in (("decode-only", decode, 0), ("ours (pyomero-upload)", ours,
                                                            ours_calls),
                             ("original (setPlane)", orig, orig_calls)):
        server = getattr(run, "server_cpu", None)
        print(f"{name:<24}{n / run.seconds:>9.0f}{gb * 1e3 / run.seconds:>8.0f}{calls:>12}"
              f"{run.cpu_seconds:>8.1f}{run.cpu_seconds / gb:>9.1f}{run.seconds:>8.1f}"
              f"{'-' if server is None else f'{server:.1f}':>13}")
    fewer = orig_calls / max(ours_calls, 1)
    ratio = ours.cpu_seconds / decode.cpu_seconds
    print(f"\npixel calls, original / ours: {orig_calls} / {ours_calls} = {fewer:.0f}x "
          f"(target >= {TARGET_FEWER_CALLS:.0f}x) {verdict(fewer >= TARGET_FEWER_CALLS)}")
    print(f"client CPU per GB, ours / decode-only: {ours.cpu_seconds / gb:.1f} / "
          f"{decode.cpu_seconds / gb:.1f} = {ratio:.2f}x (target <= {TARGET_CPU_VS_DECODE}x) "
          f"{verdict(ratio <= TARGET_CPU_VS_DECODE)}")
    print(f"ours vs original: {orig.seconds / ours.seconds:.2f}x the throughput; client CPU "
          f"original / ours {orig.cpu_seconds / ours.cpu_seconds:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
