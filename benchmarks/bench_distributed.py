"""Benchmark: export and upload on Dask distributed, against the same command in one process.

The 7,500-plane experiment of ``bench_export.py`` (25 positions x 20 T x 3 C x
5 Z, cached under ``build/bench/``), page cache warm, best of ``--runs``:

* in-process: ``pyomero-upload export EXP -o OUT --workers 2`` (the baseline);
* ``--cluster local:1`` with 2 decoders, ``--cluster local:2`` with 1 each;
* a lab's set-up: ``dask scheduler`` and ``dask worker --nworkers 2`` started
  here as their own processes on 127.0.0.1, joined by ``--scheduler-file``;
* the one-node Slurm of ``pyomero_upload.testing.slurm`` (where Slurm is
  installed and this runs as root).

After the ``local:2`` row, what one task per position allows at all: the
engine's fixed cost per command (2 positions, one per worker, against the same
in one process) and the tail (25 positions in 13 rounds of 2 leave a worker
idle for the last), as the bound ``tail x T / (T + fixed)``.

Each row: wall time, planes/s, the ratio to the in-process baseline, the CPU
seconds of every process (the command with its children; the scheduler and
workers started apart from it, read from /proc), the largest peak RSS.  Then
uploads to the OMERO double in one process and with ``--cluster local:2``,
with the sessions the double saw; the overhead of an empty task (a no-op per
position through the same engine); and one export where a worker is killed
(SIGKILL) a third of the way in: the added wall time and the duplicates and
temporaries left (must be 0).

Targets on 2 cores, where the point is overhead, not speed-up: ``local:2``
>= 0.95x the in-process throughput for export and upload, <= 50 ms of
overhead per position, 1 OMERO session per run, 0 duplicates.  Exits 0 when
it ran (this is a measurement); a miss prints FAIL.

    python benchmarks/bench_distributed.py [--positions 25 --timepoints 20 --runs 3]
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_export  # noqa: E402
from bench_export import (  # noqa: E402
    Run,
    bench_parser,
    build_experiment,
    byte_compile,
    default_cli,
    fresh,
    plane_files,
    run_measured,
    verdict,
    warm_cache,
)

TARGET_RATIO = 0.95
TARGET_OVERHEAD_MS = 50.0


def proc_cpu(pid: int) -> float:
    """CPU seconds a process and its reaped children have used (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")


def tree_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += proc_cpu(pid)
    return total


def best(runs: list[Run]) -> Run:
    return min(runs, key=lambda r: r.seconds)


def export_row(label: str, cli: str, data: Path, out: Path, extra: list[str], n: int,
               runs: int, baseline: float | None, outside: list[int] | None = None) -> Run:
    results = []
    for _ in range(runs):
        before = tree_cpu(outside or [])
        run = run_measured([cli, "export", str(data), "-o", str(fresh(out)), "-n", "bench",
                            *extra])
        if run.returncode:
            raise SystemExit(f"{label} failed ({run.returncode}):\n{run.output[-3000:]}")
        run.cpu_seconds += tree_cpu(outside or []) - before
        results.append(run)
        shutil.rmtree(out, ignore_errors=True)
    r = best(results)
    rate = n / r.seconds
    ratio = "" if baseline is None else f"  {rate / baseline:.2f}x in-process"
    print(f"{label:<38} {r.seconds:6.1f} s  {rate:6.0f} planes/s  {r.cpu_seconds:6.1f} CPU-s  "
          f"peak RSS {r.peak_rss_mb:5.0f} MB{ratio}")
    return r


def start_lab(work: Path) -> tuple[list[subprocess.Popen], Path]:
    """`dask scheduler` and `dask worker --nworkers 2` on 127.0.0.1, as a lab starts them."""
    dask = str(Path(sys.executable).parent / "dask")
    sched = work / "scheduler.json"
    sched.unlink(missing_ok=True)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", str(sched)], **quiet)]
    deadline = time.monotonic() + 60
    while not sched.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    procs.append(subprocess.Popen([dask, "worker", "--scheduler-file", str(sched),
                                   "--nworkers", "2", "--nthreads", "1", "--host", "127.0.0.1",
                                   "--no-dashboard"], **quiet))
    import distributed

    with distributed.Client(scheduler_file=str(sched), timeout=60) as client:
        client.wait_for_workers(2, timeout=120)
    return procs, sched


def stop(procs: list[subprocess.Popen]) -> None:
    for p in reversed(procs):
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


def descendants(pid: int) -> list[int]:
    """A process and every process below it (``dask worker --nworkers`` starts
    nannies, each nanny its worker process)."""
    out = [pid]
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():  # each thread's own children
            with contextlib.suppress(OSError):
                for kid in (task / "children").read_text().split():
                    out += descendants(int(kid))
    return out


def all_pids(procs: list[subprocess.Popen]) -> list[int]:
    """The processes and all their descendants."""
    return [pid for p in procs for pid in descendants(p.pid)]


def empty_task_overhead(positions: int) -> float:
    """Milliseconds per position of the engine itself: a no-op task per position."""
    from pyomero_upload.engine import Engine, EngineSpec

    with Engine(EngineSpec(cluster="local:2")) as engine:
        list(engine.map_ordered(int, [("1",)] * 4, [f"warm-{i}" for i in range(4)]))
        start = time.perf_counter()
        list(engine.map_ordered(int, [("1",)] * positions,
                                [f"noop-{i}" for i in range(positions)]))
        return (time.perf_counter() - start) * 1000 / positions


def killed_worker_run(cli: str, data: Path, out: Path, baseline_s: float,
                      positions: int) -> tuple[float, int, int]:
    """An export on local:2 with one worker SIGKILLed a third of the way in; (added
    seconds, duplicate or missing outputs, temporaries left)."""
    fresh(out)
    start = time.perf_counter()
    proc = subprocess.Popen([cli, "-q", "export", str(data), "-o", str(out), "-n", "bench",
                             "--cluster", "local:2", "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill_one() -> None:
        time.sleep(baseline_s / 3)
        for pid in descendants(proc.pid)[1:]:  # a worker process (the nanny spawns it)
            with contextlib.suppress(OSError):
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
                    return

    threading.Thread(target=kill_one, daemon=True).start()
    code = proc.wait()
    seconds = time.perf_counter() - start
    if code:
        raise SystemExit(f"the export with a killed worker failed ({code})")
    files = list((out / "bench").glob("*.ome.tiff"))
    temps = [p for p in (out / "bench").iterdir() if p.name.startswith(".")]
    shutil.rmtree(out, ignore_errors=True)
    return seconds - baseline_s, abs(len(files) - positions), len(temps)


def upload_rows(cli: str, data: Path, work: Path, n: int) -> None:
    try:
        import omero  # noqa: F401
    except ImportError:
        print("upload rows: omero-py is not installed (make install-omero)")
        return
    import bench_upload

    rates = {}
    for label, extra in (("upload in-process (--workers 2)", ["--workers", "2"]),
                         ("upload --cluster local:2", ["--cluster", "local:2", "--workers",
                                                        "1"])):
        cmd = [cli, "-q", "upload", str(data), "--dataset", "bench", "--host", "{host}",
               "--port", "{port}", "--user", "root", "-x", *extra]
        run, state = bench_upload.upload_run(cmd, work, "dist")
        if run.returncode:
            raise SystemExit(f"{label} failed:\n{run.output[-3000:]}")
        sessions = len(state["sessions"])
        images = sum(1 for o in state["objects"] if o["class"] == "Image")
        rates[label] = n / run.seconds
        print(f"{label:<38} {run.seconds:6.1f} s  {n / run.seconds:6.0f} planes/s  "
              f"{run.cpu_seconds:6.1f} CPU-s (+ the double {run.server_cpu:.1f})  "
              f"{sessions} OMERO session(s) (the double's own login check included: "
              f"{sessions - 1} by the run)  {images} images")
    a, b = rates.values()
    print(f"  upload local:2 / in-process: {b / a:.2f}x  "
          f"{verdict(b / a >= TARGET_RATIO)} (>= {TARGET_RATIO}x)")


def one_task_bound(args, work: Path, base_s: float, two_s: float) -> None:
    """What one task per position allows on ``local:2``: the engine's fixed cost per
    command (a 2-position export, one position per worker, against the same in one
    process with 2 decoders) and the tail (the last round of positions leaves a
    worker idle)."""
    workers = 2
    small = work / f"exp-{workers}x{args.timepoints}"
    m = build_experiment(args.demo, small, workers, args.timepoints)
    warm_cache(plane_files(small))
    out = work / "out-distributed-small"
    times = {
        label: export_row(f"  {workers} positions, {label}", args.cli, small, out, extra, m,
                          args.runs, None).seconds
        for label, extra in (("in-process", ["--workers", str(workers)]),
                             ("local:2", ["--cluster", f"local:{workers}", "--workers", "1"]))}
    fixed = times["local:2"] - times["in-process"]
    rounds = -(-args.positions // workers)
    tail = args.positions / (rounds * workers)
    bound = tail * base_s / (base_s + fixed)
    print(f"  the engine's fixed cost per command: +{fixed:.2f} s ({workers} positions, {m} "
          f"planes: {times['in-process']:.2f} s in one process, {times['local:2']:.2f} s on "
          f"local:{workers})")
    print(f"  one task per position allows at most {tail:.3f} (the tail: {args.positions} "
          f"positions in {rounds} rounds of {workers}) x {base_s:.1f} / ({base_s:.1f} + "
          f"{fixed:.2f}) = {bound:.2f}x; measured {base_s / two_s:.2f}x "
          f"({base_s / two_s / bound:.2f} of that bound)")


def main() -> int:
    parser = bench_parser(__doc__)
    parser.set_defaults(runs=3)
    parser.add_argument("--cli", default=default_cli(), help="the pyomero-upload executable")
    parser.add_argument("--no-upload", action="store_true", help="leave out the upload rows")
    args = parser.parse_args()
    try:
        import distributed  # noqa: F401
    except ImportError:
        print("Dask distributed is not installed: pip install '.[distributed]'")
        return 1
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    bench_export.LOG = work / ".last-distributed-run.log"
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(HERE.parent)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    data = work / f"exp-{args.positions}x{args.timepoints}"
    n = build_experiment(args.demo, data, args.positions, args.timepoints)
    warm_cache(plane_files(data))
    print(f"machine: {len(os.sched_getaffinity(0))} usable cores, load average "
          f"{os.getloadavg()[0]:.1f}; experiment {n} planes, {args.positions} positions; "
          f"best of {args.runs}; package byte-compiled: {byte_compile(args.cli)}")
    out = work / "out-distributed"
    base = export_row("export in-process (--workers 2)", args.cli, data, out,
                      ["--workers", "2"], n, args.runs, None)
    rate = n / base.seconds
    export_row("export --cluster local:1 (2 decoders)", args.cli, data, out,
               ["--cluster", "local:1", "--workers", "2"], n, args.runs, rate)
    two = export_row("export --cluster local:2 (1 decoder each)", args.cli, data, out,
                     ["--cluster", "local:2", "--workers", "1"], n, args.runs, rate)
    print(f"  export local:2 / in-process: {n / two.seconds / rate:.2f}x  "
          f"{verdict(n / two.seconds / rate >= TARGET_RATIO)} (>= {TARGET_RATIO}x)")
    one_task_bound(args, data.parent, base.seconds, two.seconds)
    procs, sched = start_lab(work)
    try:
        export_row("export via dask scheduler + 2 workers", args.cli, data, out,
                   ["--scheduler-file", str(sched), "--workers", "1"], n, args.runs, rate,
                   outside=all_pids(procs))
    finally:
        stop(procs)
    from pyomero_upload.testing import slurm

    reason = slurm.unavailable_reason()
    if reason:
        print(f"export --cluster slurm: skipped ({reason})")
    else:
        where = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
        with slurm.running_slurm(where) as env:
            os.environ["SLURM_CONF"] = env["SLURM_CONF"]
            os.chdir(where)  # where sbatch puts the jobs' slurm-N.out
            # (the job's worker is slurmd's child, not ours: its CPU is not in the row)
            export_row("export --cluster slurm (1 job, 2 cores)", args.cli, data, out,
                       ["--cluster", "slurm", "--jobs", "1", "--job-cores", "2", "--job-mem",
                        "2GB", "--walltime", "0:30:00", "--workers", "2"], n, args.runs, rate)
    ms = empty_task_overhead(args.positions)
    print(f"overhead of an empty position (a no-op task on local:2): {ms:.1f} ms  "
          f"{verdict(ms <= TARGET_OVERHEAD_MS)} (<= {TARGET_OVERHEAD_MS:.0f} ms)")
    added, dupes, temps = killed_worker_run(args.cli, data, out, two.seconds, args.positions)
    print(f"a worker SIGKILLed a third of the way in: +{added:.1f} s, {dupes} duplicate or "
          f"missing outputs, {temps} temporaries left  {verdict(dupes == 0 and temps == 0)}")
    if not args.no_upload:
        upload_rows(args.cli, data, work, n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
