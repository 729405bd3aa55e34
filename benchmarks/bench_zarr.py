"""Benchmark: ``pyomero-upload export --format ome-zarr`` against this machine's decode limit.

Everything is measured in one run, each figure next to its baseline:

* the experiment: 25 positions x 20 T x 3 C x 5 Z = 7,500 planes (512 x 512
  uint16 PNG, 3.9 GB of pixels), built from the real demo planes (copies,
  one file per plane, plus the demo's Acq and log files) and cached under
  ``build/bench/`` (the same experiment ``bench_export.py`` builds); a
  smaller one (2,250 planes) shows that memory does not grow with the data;
* the decode limit: plain ``imagecodecs.png_decode`` (read + decode every
  file) over all cores, once with a process pool and once with a thread
  pool, page cache warmed first, best of ``--runs`` each; the faster kind is
  the limit: nothing that has to decode these PNGs can be faster;
* the export: the whole command a user runs, ``pyomero-upload export EXP -o
  OUT --format ome-zarr`` (NGFF 0.5, Blosc/zstd: the defaults), as a child
  process, wall time from spawn to exit, into a fresh output folder, best of
  ``--runs``, interleaved with the decode-limit rounds; its peak RSS is the
  child's own (``wait4`` rusage); then NGFF 0.4 once, for its file count;
* the codec's ceiling, in the same rounds: every file read, decoded and
  compressed with Blosc/zstd at the export's settings (plain imagecodecs and
  numcodecs calls on all cores, processes and threads, the faster kind):
  nothing that writes these chunks can be faster here;
* for reference, in the same rounds: the OME-Zarr export with Blosc/lz4
  (the faster, lighter compressor) and the OME-TIFF export (uncompressed);
* the export's own profile (``-v``: decode, measure, compress CPU in the
  decode threads; the writing thread's chunks, metadata and waiting), from
  its best round;
* the other NGFF writers on the same planes (``zarr_peers.py``: ome-zarr-py's
  ``write_image``, ngff-zarr's ``to_ngff_zarr``, bioio-ome-zarr's
  ``OMEZarrWriter``; a dask array over the same files, decoded the same way,
  their default chunks and compressors, NGFF 0.5), each its own process,
  measured as the export is: whole-command wall time, peak RSS (``wait4``),
  the files written.

Targets: export >= 0.92x the decode + Blosc/zstd ceiling and >= 0.85x the
decode limit at 7,500 planes; peak RSS < 300 MB at every size; against the
peers: >= 1.5x the fastest one's planes/s, <= 0.5x the peak RSS of the
leanest one, no more files than any of them.  The exit code is 0 whether the
targets are met or not (this is a measurement); a miss prints FAIL.

    python benchmarks/bench_zarr.py [--positions 25 --timepoints 20 --runs 3]
                                    [--peer-runs 1] [--no-peers] [--no-references]
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_export import (  # noqa: E402  (the experiment and the decode limit, shared)
    DEFAULT_WORKDIR,
    REPO,
    TARGET_RSS_MB,
    TARGET_VS_DECODE,
    bench_parser,
    byte_compile,
    decode_all,
    experiments,
    plane_files,
    verdict,
    warm_cache,
)

#: Where each measured child's output goes (read back on failure).
LOG = DEFAULT_WORKDIR / ".last-zarr-run.log"
HERE = Path(__file__).resolve().parent
#: The export against the decode + Blosc/zstd ceiling (best of runs each).
TARGET_VS_CODEC = 0.92
#: Against the other NGFF writers: planes/s over the fastest, peak RSS over the leanest.
TARGET_VS_PEERS = 1.5
TARGET_RSS_VS_PEERS = 0.5
#: What each peer does differently from our export (printed beside its figures).
PEER_NOTES = {
    "ome-zarr-py": "no sharding (not by default); chunks as the dask array's: one plane",
    "ngff-zarr": "no sharding (chunks_per_shard unset); rechunked to its default 1x1x5x128x128",
    "bioio-ome-zarr": "no sharding (shard_shape unset); ~16 MiB chunks: 2 T x 3 C x 5 Z planes",
}


# --- measurements -----------------------------------------------------------------------


@functools.cache
def _export_codec() -> Any:
    """Blosc at the export's default settings (plain numcodecs, one thread)."""
    import numcodecs.blosc
    from numcodecs import Blosc

    from pyomero_upload.export.ome_zarr_writer import StoreFormat

    numcodecs.blosc.use_threads = False
    ours = StoreFormat().blosc(2)  # only its settings are used; the planes are uint16
    return Blosc(cname=ours.cname, clevel=ours.clevel, shuffle=ours.shuffle,
                 blocksize=ours.blocksize)


def _decode_compress_file(path: str) -> int:
    """Read, ``png_decode`` and Blosc-compress one plane with the codec the export
    uses by default (plain imagecodecs and numcodecs calls, one core each)."""
    from imagecodecs import png_decode

    with open(path, "rb") as f:
        plane = png_decode(f.read())
    return len(_export_codec().encode(plane))


@dataclass
class Run:
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    returncode: int
    output: str
    files: int = 0
    stores: int = 0
    nbytes: int = 0


def run_measured(cmd: list[str], env: dict | None = None) -> Run:
    """Run ``cmd``; wall time from spawn to exit and the child's own peak RSS (wait4)."""
    with LOG.open("wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    return Run(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024,
               os.waitstatus_to_exitcode(status), LOG.read_text(errors="replace"))


def cli_command() -> tuple[list[str], dict]:
    """This checkout's command line (``python -m pyomero_upload``, the repository first
    on the path), so the code measured is the code next to this file."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return [sys.executable, "-m", "pyomero_upload"], env


def _count(run: Run, stores: list[Path]) -> None:
    run.stores = len(stores)
    files = [f for s in stores for f in s.rglob("*") if f.is_file()]
    run.files = len(files)
    run.nbytes = sum(f.stat().st_size for f in files)


def run_export(data: Path, out: Path, *extra: str, fmt: str = "ome-zarr",
               profile: bool = False) -> Run:
    """One whole ``export --format FMT`` into a fresh folder; counts what it wrote.
    With ``profile``, ``-v``: the export's profile line is in ``run.output``."""
    shutil.rmtree(out, ignore_errors=True)
    os.sync()  # the last run's dirty pages are not this run's work
    cmd, env = cli_command()
    run = run_measured([*cmd, *(["-v"] if profile else []), "export", str(data), "-o", str(out),
                        "--format", fmt, *extra], env)
    if run.returncode:
        raise SystemExit(f"export failed ({run.returncode}):\n{run.output[-3000:]}")
    _count(run, sorted(out.glob("*/*.ome.zarr" if fmt == "ome-zarr" else "*/*.ome.tiff")))
    shutil.rmtree(out, ignore_errors=True)
    return run


def peer_available(peer: str) -> str | None:
    """None if the peer's library imports here, else why not."""
    module = {"ome-zarr-py": "ome_zarr.writer", "ngff-zarr": "ngff_zarr",
              "bioio-ome-zarr": "bioio_ome_zarr.writers"}[peer]
    probe = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                           text=True)
    return None if probe.returncode == 0 else (probe.stderr.strip().splitlines() or ["?"])[-1]


def run_peer(peer: str, data: Path, out: Path) -> Run:
    """One whole ``zarr_peers.py PEER`` run into a fresh folder; counts what it wrote."""
    shutil.rmtree(out, ignore_errors=True)
    os.sync()
    run = run_measured([sys.executable, str(HERE / "zarr_peers.py"), peer, str(data), str(out)])
    if run.returncode:
        raise SystemExit(f"{peer} failed ({run.returncode}):\n{run.output[-3000:]}")
    _count(run, sorted(out.glob("*.ome.zarr")))
    shutil.rmtree(out, ignore_errors=True)
    return run


def profile_line(output: str) -> str:
    """The export's ``profile:`` debug line, or a note that it printed none."""
    lines = [ln for ln in output.splitlines() if "profile:" in ln]
    return lines[-1].split("profile:", 1)[1].strip() if lines else "(no profile line printed)"


def load() -> str:
    return "load average " + ", ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--no-references", action="store_true",
                        help="skip the Blosc/lz4 and OME-TIFF reference exports")
    parser.add_argument("--no-peers", action="store_true",
                        help="skip ome-zarr-py, ngff-zarr and bioio-ome-zarr")
    parser.add_argument("--peer-runs", type=int, default=1,
                        help="runs of each peer (best of; they are slow)")
    args = parser.parse_args()
    if not (args.demo / "pos001").is_dir():
        print(f"demo data not found at {args.demo}", file=sys.stderr)
        return 1
    runs = max(2, args.runs)
    work = args.workdir
    global LOG
    LOG = work / ".last-zarr-run.log"

    t0 = time.perf_counter()
    (big, n_big), (small, n_small) = experiments(args)
    big_files = plane_files(big)
    nbytes_big = n_big * 512 * 512 * 2
    read = warm_cache(big_files) + warm_cache(plane_files(small))
    print(f"machine: {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), "
          f"Python {sys.version.split()[0]}; load average {os.getloadavg()[0]:.1f}; "
          f"package byte-compiled: {byte_compile(env=cli_command()[1])}")
    print(f"experiment: {args.positions} positions x {args.timepoints} T x 3 C x 5 Z = "
          f"{n_big} planes ({nbytes_big / 1e9:.1f} GB of pixels) at {big}; small: "
          f"{n_small} planes; built/reused and {read / 1e9:.1f} GB of PNG read into the page "
          f"cache in {time.perf_counter() - t0:.0f} s")

    # Interleaved rounds: a slow spell of the machine hits each kind alike.
    decode: dict[str, list[tuple[float, float]]] = {"processes": [], "threads": []}
    # the same, plus compressing every plane as the export does: the most any
    # writer of Blosc/zstd chunks can do here, whatever it does besides
    codec: dict[str, list[tuple[float, float]]] = {"processes": [], "threads": []}
    export_big: list[Run] = []
    lz4: list[Run] = []
    tiff: list[Run] = []
    out = work / "zarr-out"
    for i in range(runs):
        for kind in decode:
            os.sync()
            decode[kind].append(decode_all(big_files, args.workers, kind))
            print(f"  round {i + 1}: decode limit ({kind}) "
                  f"{n_big / decode[kind][-1][0]:.0f} planes/s")
            os.sync()
            codec[kind].append(decode_all(big_files, args.workers, kind, _decode_compress_file))
            print(f"  round {i + 1}: decode + Blosc/zstd limit ({kind}) "
                  f"{n_big / codec[kind][-1][0]:.0f} planes/s")
        export_big.append(run_export(big, out, profile=True))
        print(f"  round {i + 1}: OME-Zarr export {n_big / export_big[-1].seconds:.0f} planes/s, "
              f"peak RSS {export_big[-1].peak_rss_mb:.0f} MB; {load()}")
        if not args.no_references:
            lz4.append(run_export(big, out, "--compression", "lz4"))
            tiff.append(run_export(big, out, fmt="ome-tiff"))
            print(f"  round {i + 1}: references: OME-Zarr with Blosc/lz4 "
                  f"{n_big / lz4[-1].seconds:.0f} planes/s, OME-TIFF export "
                  f"{n_big / tiff[-1].seconds:.0f} planes/s")
    export_small = [run_export(small, out) for _ in range(runs)]
    v04 = run_export(big, out, "--ngff-version", "0.4")
    print(f"  NGFF 0.4: {n_big / v04.seconds:.0f} planes/s, peak RSS {v04.peak_rss_mb:.0f} MB")
    peers: dict[str, list[Run]] = {}
    missing: dict[str, str] = {}
    lean: Run | None = None
    if not args.no_peers:
        # like for like: the peers read no metadata and write no metadata/ folder
        lean = run_export(big, out, "--ignore-metadata")
        print(f"  OME-Zarr export --ignore-metadata: {n_big / lean.seconds:.0f} planes/s, "
              f"peak RSS {lean.peak_rss_mb:.0f} MB; {load()}")
        from zarr_peers import PEERS

        for peer in PEERS:
            why = peer_available(peer)
            if why:
                missing[peer] = why
                print(f"  peer {peer}: not installed here ({why})")
        for i in range(max(1, args.peer_runs)):
            for peer in PEERS:
                if peer in missing:
                    continue
                peers.setdefault(peer, []).append(run_peer(peer, big, out))
                r = peers[peer][-1]
                print(f"  peer run {i + 1}: {peer} {n_big / r.seconds:.0f} planes/s, peak RSS "
                      f"{r.peak_rss_mb:.0f} MB, {r.files} files; {load()}")

    best_kind = min(decode, key=lambda k: min(decode[k]))
    limit_s, limit_cpu = min(decode[best_kind])
    limit = n_big / limit_s
    exp_run = min(export_big, key=lambda r: r.seconds)
    exp_rate = n_big / exp_run.seconds
    rss_big = max(r.peak_rss_mb for r in export_big)
    rss_small = max(r.peak_rss_mb for r in export_small)

    print()
    print("runs (seconds): " + "; ".join(
        f"{k} decode {', '.join(f'{s:.2f}' for s, _ in v)}" for k, v in decode.items())
        + f"; OME-Zarr export {', '.join(f'{r.seconds:.2f}' for r in export_big)}"
        + f"; small {', '.join(f'{r.seconds:.2f}' for r in export_small)}")
    print(f"decode limit: {limit:.0f} planes/s ({best_kind}; processes "
          f"{n_big / min(decode['processes'])[0]:.0f}, threads "
          f"{n_big / min(decode['threads'])[0]:.0f}), {nbytes_big / 1e6 / limit_s:.0f} MB/s of "
          f"pixels, {limit_cpu:.1f} CPU-s")
    codec_kind = min(codec, key=lambda k: min(codec[k]))
    codec_s, codec_cpu = min(codec[codec_kind])
    codec_limit = n_big / codec_s
    print(f"decode + Blosc/zstd limit: {codec_limit:.0f} planes/s ({codec_kind}), "
          f"{codec_cpu:.1f} CPU-s: compressing alone costs "
          f"{codec_cpu / limit_cpu - 1:.0%} of the decoding CPU, so no Blosc/zstd writer can "
          f"pass {codec_limit / limit:.2f}x the decode limit on this machine")
    print(f"export CPU: {exp_run.cpu_seconds:.1f} CPU-s for {n_big} planes vs "
          f"{limit_cpu:.1f} CPU-s to decode them ({exp_run.cpu_seconds / limit_cpu:.2f}x) and "
          f"{codec_cpu:.1f} to decode and compress them ({exp_run.cpu_seconds / codec_cpu:.2f}x)")
    print()
    ratio = exp_rate / limit
    print(f"OME-Zarr export throughput (NGFF 0.5, Blosc/zstd), {n_big} planes: "
          f"{exp_rate:.0f} planes/s ({nbytes_big / 1e6 / exp_run.seconds:.0f} MB/s, "
          f"{exp_run.seconds:.1f} s whole command) vs decode limit {limit:.0f} planes/s: "
          f"{ratio:.2f}x (target >= {TARGET_VS_DECODE}x) {verdict(ratio >= TARGET_VS_DECODE)}; "
          f"vs the decode + Blosc/zstd limit {codec_limit:.0f} planes/s: "
          f"{exp_rate / codec_limit:.2f}x")
    vs_codec = exp_rate / codec_limit
    print(f"OME-Zarr export against its codec's ceiling: {exp_rate:.0f} planes/s vs decode + "
          f"Blosc/zstd {codec_limit:.0f} planes/s ({codec_kind}), best of {runs} each: "
          f"{vs_codec:.2f}x (target >= {TARGET_VS_CODEC}x) {verdict(vs_codec >= TARGET_VS_CODEC)}")
    print(f"OME-Zarr export profile (its best round, -v): {profile_line(exp_run.output)}")
    rss = max(rss_big, rss_small, v04.peak_rss_mb)
    print(f"OME-Zarr export peak RSS: {rss_big:.0f} MB at {n_big} planes, {rss_small:.0f} MB "
          f"at {n_small} planes, {v04.peak_rss_mb:.0f} MB for NGFF 0.4 "
          f"(target < {TARGET_RSS_MB} MB) {verdict(rss < TARGET_RSS_MB)}")
    if lz4 and tiff:
        lz4_run, tiff_run = (min(r, key=lambda x: x.seconds) for r in (lz4, tiff))
        print(f"references, same run: OME-Zarr with Blosc/lz4 {n_big / lz4_run.seconds:.0f} "
              f"planes/s ({n_big / lz4_run.seconds / limit:.2f}x the decode limit, "
              f"{lz4_run.cpu_seconds:.1f} CPU-s, {lz4_run.nbytes / 1e9:.2f} GB); OME-TIFF "
              f"export (uncompressed) {n_big / tiff_run.seconds:.0f} planes/s "
              f"({n_big / tiff_run.seconds / limit:.2f}x, {tiff_run.cpu_seconds:.1f} CPU-s)")
    per_store = exp_run.files / exp_run.stores
    meta_05 = 4  # the group, the array, the OME group and the OME-XML
    meta_04 = (v04.files - n_big) / v04.stores
    print(f"files: NGFF 0.5 {exp_run.files} in {exp_run.stores} stores for {n_big} planes "
          f"({per_store:.0f} per store: {per_store - meta_05:.0f} shard(s) of whole "
          f"timepoints and {meta_05} metadata files), {exp_run.nbytes / 1e9:.2f} GB "
          f"({nbytes_big / exp_run.nbytes:.2f}x smaller than the pixels); NGFF 0.4 "
          f"{v04.files} (one per plane and {meta_04:.0f} metadata files per store), "
          f"{v04.nbytes / 1e9:.2f} GB")
    if peers or missing:
        report_peers(peers, missing, n_big, nbytes_big, exp_run, rss_big, lean)
    print(f"finished: {load()}")
    return 0


def report_peers(peers: dict[str, list[Run]], missing: dict[str, str], n: int, nbytes: int,
                 ours: Run, our_rss: float, lean: Run | None) -> None:
    """The peers' figures beside ours, and the three targets against them."""
    print()
    print(f"other NGFF writers on the same {n} planes (whole command each, best of its runs):")
    best = {peer: min(runs, key=lambda r: r.seconds) for peer, runs in peers.items()}
    for peer, r in best.items():
        print(f"  {peer}: {n / r.seconds:.0f} planes/s ({r.seconds:.1f} s, {r.cpu_seconds:.1f} "
              f"CPU-s), peak RSS {max(x.peak_rss_mb for x in peers[peer]):.0f} MB, "
              f"{r.files} files in {r.stores} stores, {r.nbytes / 1e9:.2f} GB "
              f"({nbytes / r.nbytes:.2f}x smaller than the pixels); {PEER_NOTES[peer]}")
    for peer, why in missing.items():
        print(f"  {peer}: not measured: {why}")
    if not best:
        return
    ours_rate = n / ours.seconds
    fastest = min(best, key=lambda p: best[p].seconds)
    leanest = min(peers, key=lambda p: max(x.peak_rss_mb for x in peers[p]))
    leanest_rss = max(x.peak_rss_mb for x in peers[leanest])
    fewest = min(best, key=lambda p: best[p].files)
    speed = ours_rate * best[fastest].seconds / n
    mem = our_rss / leanest_rss
    thriftiest = min(best, key=lambda p: best[p].cpu_seconds)
    print(f"CPU (steadier than wall time on a shared machine): OME-Zarr export "
          f"{ours.cpu_seconds:.1f} CPU-s, the thriftiest peer ({thriftiest}) "
          f"{best[thriftiest].cpu_seconds:.1f} CPU-s: "
          f"{best[thriftiest].cpu_seconds / ours.cpu_seconds:.2f}x fewer")
    print(f"OME-Zarr export vs the fastest peer ({fastest}, {n / best[fastest].seconds:.0f} "
          f"planes/s): {ours_rate:.0f} planes/s, {speed:.2f}x (target >= {TARGET_VS_PEERS}x) "
          f"{verdict(speed >= TARGET_VS_PEERS)}")
    print(f"OME-Zarr export peak RSS vs the leanest peer ({leanest}, {leanest_rss:.0f} MB): "
          f"{our_rss:.0f} MB, {mem:.2f}x (target <= {TARGET_RSS_VS_PEERS}x) "
          f"{verdict(mem <= TARGET_RSS_VS_PEERS)}")
    if lean is not None:
        print(f"  like for like (--ignore-metadata: no metadata read, no metadata/ folder, whose "
              f"pandas and PyTables the peers do not load): {n / lean.seconds:.0f} planes/s, "
              f"peak RSS {lean.peak_rss_mb:.0f} MB ({lean.peak_rss_mb / leanest_rss:.2f}x the "
              f"leanest peer's)")
    print(f"OME-Zarr export files vs the fewest of a peer ({fewest}, {best[fewest].files}): "
          f"{ours.files} (target: no more) {verdict(ours.files <= best[fewest].files)}")


if __name__ == "__main__":
    sys.exit(main())
