"""Benchmark: the ``pyomero-upload export`` command against this machine's decode limit.

Everything is measured in one run, each figure next to its baseline:

* the experiment: 25 positions x 20 T x 3 C x 5 Z = 7,500 planes (512 x 512
  uint16 PNG, 3.9 GB of pixels), built from the real demo planes (copies,
  one file per plane, as a microscope writes them, plus the demo's Acq and
  log files) and cached under ``build/bench/``; a smaller one (2,250 planes)
  shows that memory does not grow with the data;
* the decode limit: plain ``imagecodecs.png_decode`` (read + decode every
  file) over all cores, once with a process pool and once with a thread
  pool, page cache warmed first, best of ``--runs`` each; the faster kind is
  the limit: nothing that has to decode these PNGs can be faster;
* the decode+write ceiling: the same, each decoded plane then ``os.pwrite``
  at its place in one raw file per position, from all the decode workers at
  once (no TIFF structure, no metadata), processes and threads, each plain
  and with write-behind (``posix_fadvise(DONTNEED)`` every 32 MiB a worker
  writes: writeback of what it just wrote started, what it wrote before that
  dropped from the page cache, so the kernel recycles pages instead of
  finding new ones, as the export does), best of ``--runs`` each, the
  fastest kind: what an uncompressed writer cannot beat;
* the export: the whole command a user runs, ``pyomero-upload export EXP -o
  OUT``, as a child process, wall time from spawn to exit, into a fresh
  output folder, best of ``--runs``; its peak RSS is the child's own
  (``wait4`` rusage), not shared with any other measurement; every other
  round runs it before the ceiling rather than after (what ran just before
  moves a figure by several per cent on a VM);
* the peer: Bio-Formats' own converter (``ImageConverter``, i.e. bfconvert)
  over a ``.pattern`` file per position (how ``omero import`` assembles a
  folder of planes), on a subset of positions, one JVM at a time and one per
  core at once; planes/s and the JVM's peak RSS;
* what Bio-Formats makes of a ``.pattern`` file for the demo's pos001 (its
  axes and metadata), next to what ``pyomero-upload plan`` finds;
* the original toolkit's method (one process, a whole position in memory,
  then written) on the small experiment, for reference.

Targets: export >= 0.95x the decode+write ceiling and >= 0.85x the decode
limit at 7,500 planes where the machine's writes leave that room (the
ceiling at >= 0.85 / 0.95 = 0.89x the decode limit; the ceiling's own ratio
is printed, and below that the second target is not required); peak RSS < 300 MB at
every size; >= 5x Bio-Formats' converter.  The exit code is 0 whether the
targets are met or not (this is a measurement); a miss prints FAIL.

    python benchmarks/bench_export.py [--positions 25 --timepoints 20 --runs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_DEMO = Path(os.environ.get("PYOMERO_DEMO_DATA", REPO.parent / "shared" / "data" / "demo"))
DEFAULT_WORKDIR = REPO / "build" / "bench"
PLANE_RE = re.compile(r"^(?P<prefix>.+)_(?P<T>\d+)_(?P<C>[^_]+)_(?P<Z>\d+)\.png$")

#: Where each measured child's output goes (read back on failure).
LOG = DEFAULT_WORKDIR / ".last-run.log"
TARGET_VS_DECODE = 0.85
TARGET_VS_CEILING = 0.95
TARGET_RSS_MB = 300
TARGET_VS_BIOFORMATS = 5.0


# --- the experiment ---------------------------------------------------------


def build_experiment(demo: Path, root: Path, positions: int, timepoints: int) -> int:
    """Copy demo planes into ``positions`` x ``timepoints`` x 3 C x 5 Z under ``root``.

    Reused when ``root`` is complete (its ``.json`` marker is written last).
    """
    marker = root.with_name(root.name + ".json")
    want = {"positions": positions, "timepoints": timepoints, "demo": str(demo.resolve())}
    if marker.is_file() and root.is_dir():
        done = json.loads(marker.read_text())
        if {k: done.get(k) for k in want} == want:
            return done["planes"]
    marker.unlink(missing_ok=True)
    shutil.rmtree(root, ignore_errors=True)
    part = root.with_name(root.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    sources = sorted(p for p in demo.iterdir() if p.is_dir() and p.name.startswith("pos"))
    by_pos = []
    for src in sources:
        planes: dict[int, list] = {}
        for f in src.iterdir():
            m = PLANE_RE.match(f.name)
            if m:
                planes.setdefault(int(m["T"]), []).append((m["C"], int(m["Z"]), f))
        by_pos.append(planes)
    n = 0
    for i in range(positions):
        folder = part / f"pos{i + 1:03d}"
        folder.mkdir()
        planes = by_pos[i % len(by_pos)]
        src_ts = sorted(planes)
        for t in range(1, timepoints + 1):
            for c, z, f in planes[src_ts[(t - 1) % len(src_ts)]]:
                shutil.copyfile(f, folder / f"microscope1_{t:06d}_{c}_{z:03d}.png")
                n += 1
    for f in demo.glob("*.txt"):  # the Acq and log files: a real export carries metadata
        shutil.copyfile(f, part / f.name)
    os.replace(part, root)
    marker.write_text(json.dumps({**want, "planes": n}))
    return n


def bench_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every export benchmark takes (the experiment, runs, workers)."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--demo", type=Path, default=DEFAULT_DEMO)
    parser.add_argument("--positions", type=int, default=25)
    parser.add_argument("--timepoints", type=int, default=20)
    parser.add_argument("--small-timepoints", type=int, default=6,
                        help="timepoints of the smaller experiment (RSS is flat)")
    parser.add_argument("--runs", type=int, default=2, help="best of this many runs (>= 2)")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)),
                        help="decode-limit workers (the export uses its own default: all cores)")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    return parser


def experiments(args: argparse.Namespace) -> tuple[tuple[Path, int], tuple[Path, int]]:
    """The big and the small experiment under ``args.workdir`` (built or reused):
    each folder and its plane count."""
    args.workdir.mkdir(parents=True, exist_ok=True)
    built = []
    for timepoints in (args.timepoints, args.small_timepoints):
        root = args.workdir / f"exp-{args.positions}x{timepoints}"
        built.append((root, build_experiment(args.demo, root, args.positions, timepoints)))
    return built[0], built[1]


def plane_files(root: Path) -> list[Path]:
    return sorted(f for d in sorted(root.glob("pos*")) for f in d.iterdir()
                  if PLANE_RE.match(f.name))


def warm_cache(paths: list[Path]) -> int:
    """Read every file once so that every measurement starts from a warm page cache."""
    return sum(len(p.read_bytes()) for p in paths)


# --- measurements -------------------------------------------------------------


def _decode_file(path: str) -> int:
    from imagecodecs import png_decode

    with open(path, "rb") as f:
        return png_decode(f.read()).nbytes


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def decode_all(paths: list[Path], workers: int, kind: str,
               fn: Callable[[str], int] | None = None) -> tuple[float, float]:
    """Wall and CPU seconds to read and ``png_decode`` every file (or to run
    ``fn`` on every file name) with ``workers`` processes or threads."""
    fn = fn or _decode_file
    names = [str(p) for p in paths]
    cpu = _cpu()
    start = time.perf_counter()
    if kind == "processes":
        with ProcessPoolExecutor(workers) as ex:
            nbytes = sum(ex.map(fn, names, chunksize=16))
    else:
        with ThreadPoolExecutor(workers) as ex:
            nbytes = sum(ex.map(fn, names))
    seconds = time.perf_counter() - start
    if nbytes <= 0:
        raise SystemExit("decoded nothing")
    return seconds, _cpu() - cpu


#: Each process's open raw outputs of the decode+write ceiling, by name.
_RAW_FDS: dict[str, int] = {}
#: The write-behind ceiling's window (the export's, ``writeback.WINDOW``).
BEHIND_WINDOW = 32 * 1024 * 1024
#: Per worker (process or thread): the planes it wrote since its last
#: write-behind step, and those of the step before, as (fd, offset, length).
_BEHIND = threading.local()


def _write_behind(fd: int, offset: int, length: int) -> None:
    """What the write-behind ceiling does after each ``pwrite``: every
    :data:`BEHIND_WINDOW` bytes this worker wrote, start the writeback of them
    and drop the window written before them (written back by then)."""
    state = _BEHIND.__dict__
    recent = state.setdefault("recent", [])
    recent.append((fd, offset, length))
    state["bytes"] = state.get("bytes", 0) + length
    if state["bytes"] < BEHIND_WINDOW:
        return
    for r in recent:
        os.posix_fadvise(*r, os.POSIX_FADV_DONTNEED)
    for r in state.get("older", []):
        os.posix_fadvise(*r, os.POSIX_FADV_DONTNEED)
    state["older"], state["recent"], state["bytes"] = recent, [], 0


def _decode_pwrite_file(job: tuple[str, str, int, int, bool]) -> int:
    """Read and ``png_decode`` one plane and ``os.pwrite`` it at its place in its
    position's raw file (plain library calls; the file is opened once per
    process), then, with write-behind, :func:`_write_behind`."""
    from imagecodecs import png_decode

    src, dst, index, nbytes, behind = job
    with open(src, "rb") as f:
        plane = png_decode(f.read())
    fd = _RAW_FDS.get(dst)
    if fd is None:
        fd = _RAW_FDS.setdefault(dst, os.open(dst, os.O_WRONLY))
    view = memoryview(plane).cast("B")
    offset = index * nbytes
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)
    if behind:
        _write_behind(fd, offset, len(view))
    return len(view)


def _close_raw() -> None:
    while _RAW_FDS:
        os.close(_RAW_FDS.popitem()[1])
    _BEHIND.__dict__.clear()


#: The ceiling's kinds: pool, and whether each worker writes behind.
CEILING_KINDS = {"processes": ("processes", False), "threads": ("threads", False),
                 "processes, write-behind": ("processes", True),
                 "threads, write-behind": ("threads", True)}


def decode_write_all(paths: list[Path], workers: int, kind: str, out: Path,
                     plane_nbytes: int, behind: bool = False) -> tuple[float, float]:
    """The decode+write ceiling: wall and CPU seconds to read, ``png_decode`` and
    ``os.pwrite`` every plane into one raw file per position (position folder),
    from all ``workers`` processes or threads at once: the bytes an uncompressed
    export writes, without TIFF structure or metadata; with ``behind``, each
    worker writes behind (:func:`_write_behind`).  ``out`` is emptied first and
    removed after (neither counted)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    jobs = []
    index: dict[str, int] = {}
    for p in paths:
        dst = str(out / f"{p.parent.name}.raw")
        if dst not in index:
            Path(dst).touch()
            index[dst] = 0
        jobs.append((str(p), dst, index[dst], plane_nbytes, behind))
        index[dst] += 1
    os.sync()
    cpu = _cpu()
    start = time.perf_counter()
    if kind == "processes":
        with ProcessPoolExecutor(workers, initializer=_close_raw) as ex:
            nbytes = sum(ex.map(_decode_pwrite_file, jobs, chunksize=16))
    else:
        try:
            with ThreadPoolExecutor(workers) as ex:
                nbytes = sum(ex.map(_decode_pwrite_file, jobs))
        finally:
            _close_raw()
    seconds = time.perf_counter() - start
    cpu = _cpu() - cpu
    if nbytes != len(jobs) * plane_nbytes:
        raise SystemExit(f"decode+write wrote {nbytes} bytes, expected {len(jobs) * plane_nbytes}")
    shutil.rmtree(out, ignore_errors=True)
    return seconds, cpu


@dataclass
class Run:
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    returncode: int
    output: str


def run_measured(cmd: list[str], env: dict | None = None) -> Run:
    """Run ``cmd``; wall time from spawn to exit and the child's own peak RSS (wait4)."""
    with LOG.open("wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Run(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode,
               LOG.read_text(errors="replace"))


def fresh(path: Path) -> Path:
    """An empty, not yet existing output path; dirty pages of the last run flushed."""
    shutil.rmtree(path, ignore_errors=True)
    os.sync()
    return path


def run_export(cli: str, data: Path, out: Path, extra: tuple[str, ...] = ()) -> Run:
    run = run_measured([cli, "export", str(data), "-o", str(fresh(out)), *extra])
    if run.returncode:
        raise SystemExit(f"export failed ({run.returncode}):\n{run.output[-3000:]}")
    shutil.rmtree(out, ignore_errors=True)
    return run


# --- Bio-Formats --------------------------------------------------------------


def _range_block(values: list[str]) -> str:
    nums = sorted(int(v) for v in values)
    width = len(values[0])
    if nums != list(range(nums[0], nums[-1] + 1)):
        return "<" + ",".join(f"{v:0{width}d}" for v in nums) + ">"
    return f"<{nums[0]:0{width}d}-{nums[-1]:0{width}d}>"


def pattern_for(folder: Path) -> str:
    """The Bio-Formats file pattern that names every plane of a position folder."""
    matches = [m for f in sorted(folder.iterdir()) if (m := PLANE_RE.match(f.name))]
    prefix = matches[0]["prefix"]
    ts = sorted({m["T"] for m in matches})
    cs = sorted({m["C"] for m in matches})
    zs = sorted({m["Z"] for m in matches})
    return (f"{folder.resolve()}/{prefix}_{_range_block(ts)}_<{','.join(cs)}>_"
            f"{_range_block(zs)}.png")


def write_pattern(folder: Path, where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{folder.name}.pattern"
    path.write_text(pattern_for(folder) + "\n")
    return path


def bioformats_java() -> tuple[list[str], dict] | str:
    """The java command prefix the tests use (same jar and options), or why there is none."""
    try:
        sys.path.insert(0, str(REPO))
        from pyomero_upload.testing import bioformats as bf
    except ImportError as exc:
        return f"pyomero_upload.testing.bioformats not importable ({exc})"
    reason = bf.unavailable_reason()
    if reason:
        return reason
    env = {**os.environ, "JAVA_TOOL_OPTIONS": "-Djava.awt.headless=true"}
    return [bf.java_executable(), *bf.JAVA_OPTIONS, "-cp", str(bf.jar_path())], env


def bfconvert(java: list[str], env: dict, pattern: Path, out: Path) -> Run:
    out.unlink(missing_ok=True)
    run = run_measured([*java, "loci.formats.tools.ImageConverter", "-no-upgrade",
                        str(pattern), str(out)], env=env)
    if run.returncode:
        raise SystemExit(f"ImageConverter failed ({run.returncode}):\n{run.output[-3000:]}")
    out.unlink(missing_ok=True)
    return run


def bfconvert_parallel(java: list[str], env: dict, patterns: list[Path], out_dir: Path) -> float:
    """Wall seconds for one ImageConverter per pattern, all at once."""
    procs = []
    fresh(out_dir).mkdir(parents=True)
    start = time.perf_counter()
    for p in patterns:
        cmd = [*java, "loci.formats.tools.ImageConverter", "-no-upgrade", str(p),
               str(out_dir / f"{p.stem}.ome.tiff")]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, env=env))
    codes = [p.wait() for p in procs]
    seconds = time.perf_counter() - start
    shutil.rmtree(out_dir, ignore_errors=True)
    if any(codes):
        raise SystemExit(f"ImageConverter failed: exit codes {codes}")
    return seconds


def pattern_guess(java: list[str], env: dict, demo: Path, where: Path) -> dict:
    """What Bio-Formats makes of a ``.pattern`` file for the demo's first position."""
    folder = sorted(p for p in demo.iterdir() if p.is_dir() and p.name.startswith("pos"))[0]
    pattern = write_pattern(folder, where)
    run = run_measured([*java, "loci.formats.tools.ImageInfo", "-nopix", "-no-upgrade",
                        "-omexml", str(pattern)], env=env)
    out = run.output

    def grab(key: str) -> str:
        m = re.search(rf"^\s*{re.escape(key)} = (.+)$", out, re.M)
        return m.group(1).strip() if m else "?"

    xml = out[out.find("<?xml"):] if "<?xml" in out else ""
    found = {
        "physical Z size": "PhysicalSizeZ=" in xml,
        "time increment": "TimeIncrement=" in xml,
        "per-plane times": "DeltaT=" in xml,
        "exposures": "ExposureTime=" in xml,
        "stage positions": "PositionX=" in xml,
        "annotations": "MapAnnotation" in xml,
    }
    return {"pattern": pattern.read_text().strip(), "file": pattern.name,
            "reader": (re.search(r"^Checking file format \[(.+?)\]", out, re.M) or [0, "?"])[1],
            "Z": grab("SizeZ"), "T": grab("SizeT"), "C": grab("SizeC"),
            "order": grab("Dimension order"), "found": found, "rc": run.returncode}


# --- the original toolkit's method (child process) ----------------------------


def job_original(data: Path, out: Path) -> None:
    """One process, the whole position stacked in memory, then written (as the original)."""
    import numpy as np
    import tifffile
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    for pos in sorted(p for p in data.iterdir() if p.is_dir()):
        files = sorted(f for f in pos.iterdir() if PLANE_RE.match(f.name))
        keys = [PLANE_RE.match(f.name) for f in files]
        ts = sorted({int(k["T"]) for k in keys})
        cs = sorted({k["C"] for k in keys})
        zs = sorted({int(k["Z"]) for k in keys})
        cube = None
        for f, k in zip(files, keys, strict=True):
            with Image.open(f) as im:
                plane = np.asarray(im)
            if cube is None:
                cube = np.zeros((len(ts), len(cs), len(zs), *plane.shape), plane.dtype)
            cube[ts.index(int(k["T"])), cs.index(k["C"]), zs.index(int(k["Z"]))] = plane
        tifffile.imwrite(out / f"{pos.name}.ome.tif", cube, metadata={"axes": "TCZYX"})
        del cube


# --- report -------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def default_cli() -> str:
    here = Path(sys.executable).parent / "pyomero-upload"
    return str(here) if here.exists() else (shutil.which("pyomero-upload") or "pyomero-upload")


def byte_compile(cli: str | None = None, env: dict | None = None) -> str:
    """Byte-compile the package that ``cli`` (a console script; default: this
    interpreter, with ``env``) runs, as ``pip install`` does for a user.  An
    editable install leaves that to the first run, and where
    PYTHONDONTWRITEBYTECODE is set (as on this project's VMs) to no run: each
    measured command would compile the package again (about 60 ms).
    Returns the folder compiled, for the report."""
    python = sys.executable
    script = Path(shutil.which(cli) or cli) if cli else None
    if script is not None and script.is_file():
        first = script.read_bytes()[:512].split(b"\n", 1)[0]
        if first.startswith(b"#!"):
            python = first[2:].decode().split()[0]
    find = "import os, pyomero_upload; print(os.path.dirname(pyomero_upload.__file__))"
    where = subprocess.run([python, "-c", find], capture_output=True, text=True, env=env,
                           cwd="/", check=True).stdout.strip()
    subprocess.run([python, "-m", "compileall", "-q", where], env=env, check=True)
    return where


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--cli", default=default_cli(), help="the pyomero-upload executable")
    parser.add_argument("--bf-positions", type=int, default=2,
                        help="positions converted by Bio-Formats (0: skip the peer)")
    parser.add_argument("--no-original", action="store_true",
                        help="skip the original toolkit's method")
    parser.add_argument("--child-original", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_original:
        job_original(*args.child_original)
        return 0
    if not (args.demo / "pos001").is_dir():
        print(f"demo data not found at {args.demo}", file=sys.stderr)
        return 1
    runs = max(2, args.runs)
    work = args.workdir
    global LOG
    LOG = work / ".last-run.log"

    t0 = time.perf_counter()
    (big, n_big), (small, n_small) = experiments(args)
    tiny = work / "exp-1x1"  # one position, one timepoint: the command's fixed cost
    n_tiny = build_experiment(args.demo, tiny, 1, 1)
    big_files, small_files = plane_files(big), plane_files(small)
    nbytes_big = n_big * 512 * 512 * 2
    read = warm_cache(big_files) + warm_cache(small_files)
    compiled = byte_compile(args.cli)
    print(f"machine: {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), "
          f"load average {os.getloadavg()[0]:.1f} (other jobs slow every figure), "
          f"Python {sys.version.split()[0]}; CLI {args.cli} (package byte-compiled: "
          f"{compiled})")
    print(f"experiment: {args.positions} positions x {args.timepoints} T x 3 C x 5 Z = "
          f"{n_big} planes ({nbytes_big / 1e9:.1f} GB of pixels) at {big}; small: "
          f"{n_small} planes; built/reused and {read / 1e9:.1f} GB of PNG read into the page "
          f"cache in {time.perf_counter() - t0:.0f} s")

    # Interleaved rounds: a slow spell of the machine hits each kind alike.  What
    # ran just before a measurement matters too: on the 2-core VMs of 4 Dec an
    # export right after another export was 0.6 to 1.5 s faster (of 15) than one
    # right after the ceiling, in 7 of 8 alternating pairs.  So every other round
    # runs the export before the ceiling instead of after it.
    decode: dict[str, list[tuple[float, float]]] = {"processes": [], "threads": []}
    ceiling: dict[str, list[tuple[float, float]]] = {k: [] for k in CEILING_KINDS}
    export_big: list[Run] = []
    out = work / "out"

    def measure_ceiling(i: int) -> None:
        for kind, (pool, behind) in CEILING_KINDS.items():
            ceiling[kind].append(decode_write_all(big_files, args.workers, pool,
                                                  work / "raw", 512 * 512 * 2, behind))
            print(f"  round {i + 1}: decode+write ceiling ({kind}) "
                  f"{n_big / ceiling[kind][-1][0]:.0f} planes/s")

    def measure_export(i: int) -> None:
        export_big.append(run_export(args.cli, big, out))
        print(f"  round {i + 1}: export {n_big / export_big[-1].seconds:.0f} planes/s, "
              f"peak RSS {export_big[-1].peak_rss_mb:.0f} MB")

    for i in range(runs):
        for kind in decode:
            os.sync()
            decode[kind].append(decode_all(big_files, args.workers, kind))
            print(f"  round {i + 1}: decode limit ({kind}) "
                  f"{n_big / decode[kind][-1][0]:.0f} planes/s")
        for step in (measure_ceiling, measure_export)[:: 1 if i % 2 == 0 else -1]:
            step(i)
    export_small = [run_export(args.cli, small, out) for _ in range(runs)]
    export_tiny = [run_export(args.cli, tiny, out) for _ in range(runs)]

    best_kind = min(decode, key=lambda k: min(decode[k]))
    limit_s, limit_cpu = min(decode[best_kind])
    limit = n_big / limit_s
    ceil_kind = min(ceiling, key=lambda k: min(ceiling[k]))
    ceil_s, ceil_cpu = min(ceiling[ceil_kind])
    ceil = n_big / ceil_s
    exp_run = min(export_big, key=lambda r: r.seconds)
    exp_rate = n_big / exp_run.seconds
    rss_big = max(r.peak_rss_mb for r in export_big)
    rss_small = max(r.peak_rss_mb for r in export_small)
    small_rate = n_small / min(r.seconds for r in export_small)

    bf = None
    guess = None
    if args.bf_positions > 0:
        java = bioformats_java()
        if isinstance(java, str):
            print(f"Bio-Formats peer skipped: {java}")
        else:
            cmd, env = java
            pos_dirs = sorted(big.glob("pos*"))[: args.bf_positions]
            patterns = [write_pattern(d, work / "patterns") for d in pos_dirs]
            per_pos = len(plane_files(big)) // args.positions
            seq = []
            for p in patterns:
                seq.append(bfconvert(cmd, env, p, work / "bf-out.ome.tiff"))
                print(f"  Bio-Formats ImageConverter {p.name}: {per_pos / seq[-1].seconds:.1f} "
                      f"planes/s, peak RSS {seq[-1].peak_rss_mb:.0f} MB")
            par_s = bfconvert_parallel(cmd, env, patterns, work / "bf-out")
            bf = {
                "one": per_pos / min(r.seconds for r in seq),
                "rss": max(r.peak_rss_mb for r in seq),
                "parallel": per_pos * len(patterns) / par_s,
                "n": len(patterns), "per_pos": per_pos,
            }
            guess = pattern_guess(cmd, env, args.demo, work / "demo-patterns")

    original = None
    if not args.no_original:
        run = run_measured([sys.executable, __file__, "--child-original", str(small),
                            str(fresh(out))])
        shutil.rmtree(out, ignore_errors=True)
        if run.returncode == 0:
            original = {"rate": n_small / run.seconds, "rss": run.peak_rss_mb}

    # --- the figures, each with its baseline from this run ---
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    print("runs (seconds): " + "; ".join(
        f"{k} decode {', '.join(f'{s:.2f}' for s, _ in v)}" for k, v in decode.items())
        + "; " + "; ".join(f"{k} decode+write {', '.join(f'{s:.2f}' for s, _ in v)}"
                           for k, v in ceiling.items())
        + f"; export {', '.join(f'{r.seconds:.2f}' for r in export_big)}"
        + f"; export small {', '.join(f'{r.seconds:.2f}' for r in export_small)}")
    print(f"decode limit: {limit:.0f} planes/s ({best_kind}; processes "
          f"{n_big / min(decode['processes'])[0]:.0f}, threads "
          f"{n_big / min(decode['threads'])[0]:.0f}), {nbytes_big / 1e6 / limit_s:.0f} MB/s of "
          f"pixels, {limit_cpu:.1f} CPU-s ({limit_cpu / n_big * 1000:.1f} ms of CPU a plane: "
          f"this machine's decode speed; ratios, not planes/s, carry across machines)")
    print(f"decode+write ceiling: {ceil:.0f} planes/s ({ceil_kind}; " + ", ".join(
          f"{k} {n_big / min(v)[0]:.0f} ({min(v)[1]:.1f} CPU-s)" for k, v in ceiling.items())
          + f"), {ceil_cpu:.1f} CPU-s; "
          f"{ceil / limit:.2f}x the decode limit")
    tiny_s = min(r.seconds for r in export_tiny)
    print(f"export CPU: {exp_run.cpu_seconds:.1f} CPU-s for {n_big} planes vs "
          f"{limit_cpu:.1f} CPU-s to decode them ({exp_run.cpu_seconds / limit_cpu:.2f}x); "
          f"fixed cost of the command ({n_tiny} planes, 1 position): {tiny_s:.2f} s wall, "
          f"{min(r.cpu_seconds for r in export_tiny):.2f} CPU-s")
    print()
    ratio = exp_rate / limit
    vs_ceil = exp_rate / ceil
    print(f"export throughput, {n_big} planes: {exp_rate:.0f} planes/s "
          f"({nbytes_big / 1e6 / exp_run.seconds:.0f} MB/s, {exp_run.seconds:.1f} s whole "
          f"command)")
    print(f"  vs decode+write ceiling {ceil:.0f} planes/s: {vs_ceil:.2f}x "
          f"(target >= {TARGET_VS_CEILING}x) {verdict(vs_ceil >= TARGET_VS_CEILING)}")
    # The machine allows the decode-limit target where an export at the ceiling
    # target would meet it: the ceiling at >= 0.85 / 0.95 = 0.89x the limit.
    allowed = ceil / limit >= TARGET_VS_DECODE / TARGET_VS_CEILING
    print(f"  vs decode limit {limit:.0f} planes/s: {ratio:.2f}x "
          f"(target >= {TARGET_VS_DECODE}x where the machine allows: the ceiling itself is "
          f"{ceil / limit:.2f}x) " + (verdict(ratio >= TARGET_VS_DECODE) if allowed else
          f"not required here: the machine's write cost keeps the ceiling "
          f"({ceil / limit:.3f}x) below {TARGET_VS_DECODE / TARGET_VS_CEILING:.3f}x the limit"))
    print("  round by round (each round's own baselines): " + ", ".join(
        f"{n_big / r.seconds / (n_big / min(p[i][0] for p in ceiling.values())):.2f}x ceiling "
        f"/ {n_big / r.seconds / (n_big / min(p[i][0] for p in decode.values())):.2f}x limit"
        for i, r in enumerate(export_big)))
    rss = max(rss_big, rss_small)
    print(f"export peak RSS: {rss_big:.0f} MB at {n_big} planes, {rss_small:.0f} MB at "
          f"{n_small} planes ({small_rate:.0f} planes/s) (target < {TARGET_RSS_MB} MB) "
          f"{verdict(rss < TARGET_RSS_MB)}")
    if bf:
        peer = max(bf["one"], bf["parallel"])
        vs = exp_rate / peer
        print(f"Bio-Formats ImageConverter over a .pattern per position ({bf['per_pos']} "
              f"planes each): {bf['one']:.1f} planes/s one JVM, {bf['parallel']:.1f} planes/s "
              f"with {bf['n']} JVMs at once; peak RSS {bf['rss']:.0f} MB per JVM")
        print(f"export vs Bio-Formats' converter (its better figure, {peer:.1f} planes/s): "
              f"{vs:.1f}x (target >= {TARGET_VS_BIOFORMATS:.0f}x) "
              f"{verdict(vs >= TARGET_VS_BIOFORMATS)}; memory {rss_big:.0f} vs {bf['rss']:.0f} MB")
    else:
        print(f"export vs Bio-Formats' converter: not measured (target >= "
              f"{TARGET_VS_BIOFORMATS:.0f}x) FAIL")
    if original:
        print(f"original toolkit's method, {n_small} planes: {original['rate']:.0f} planes/s, "
              f"peak RSS {original['rss']:.0f} MB; export on the same: {small_rate:.0f} planes/s "
              f"({small_rate / original['rate']:.1f}x)")
    if guess:
        print()
        print(f"Bio-Formats on the demo's {guess['file']} ({guess['pattern']}):")
        print(f"  reader [{guess['reader']}]: SizeZ = {guess['Z']}, SizeT = {guess['T']}, "
              f"SizeC = {guess['C']}, Dimension order = {guess['order']}")
        missing = [k for k, v in guess["found"].items() if not v]
        print(f"  missing from its OME-XML: {', '.join(missing) or 'nothing'}")
        plan = subprocess.run([args.cli, "plan", str(args.demo), "--json"],
                              capture_output=True, text=True)
        try:
            ours = json.loads(plan.stdout)
            print(f"  pyomero-upload plan: SizeZ = {ours['size_z']}, SizeT = {ours['size_t']}, "
                  f"SizeC = {ours['size_c']}, written XYZCT with the Acq/log metadata")
        except (ValueError, KeyError):
            print(f"  pyomero-upload plan --json: {(plan.stdout or plan.stderr)[:300]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
