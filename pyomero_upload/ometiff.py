"""OME-TIFF export: one streamed, atomically renamed file per position.

Planes are decoded in a thread pool a bounded number ahead of the writer,
so memory stays flat whatever the experiment's size, and written by
tifffile straight into ``OUT/<dataset>/.<position>.*.part``; only a
complete file is renamed to ``<position>.ome.tiff``.  Any failure or
Ctrl-C removes the partial file (and folders this run created, if empty).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import tifffile

from . import TOOL_NAME, __version__
from .describe import describe, fingerprint_settings, provenance_pairs, source_fingerprint
from .errors import InputError
from .layout import Experiment, Position
from .model import ExperimentMetadata, ImageSpec
from .ome_xml import fingerprint_in_xml, image_xml
from .parallel import default_workers, ordered_map, prefetch_window
from .writeback import StreamedFile

COMPRESSIONS = ("none", "zlib", "zstd")
#: Planes larger than this on either side get pyramid sub-resolutions.
PYRAMID_THRESHOLD = 4096
#: Sub-resolutions stop once the larger side is at most this.
PYRAMID_MIN_SIZE = 256
TILE = 256
OME_SUFFIX = ".ome.tiff"
#: Held (flock) while an export writes into a dataset folder; removed after.
LOCK_NAME = ".pyomero-upload.lock"
#: The temporary names our writers make in a dataset folder (mkstemp/mkdtemp
#: put 8 characters of [a-z0-9_] where the X are): ".<pos>.ome.tiff.XXXXXXXX.part"
#: files, ".<pos>.ome.zarr.XXXXXXXX.part" folders, ...; nothing else is ever removed.
_OUR_TEMPS = re.compile(
    r"^\.(?:.+\.ome\.(?:tiff|zarr)\.[a-z0-9_]{8}\.part|level\.[a-z0-9_]{8}\.npy"
    r"|metadata(?:-old)?\.[a-z0-9_]{8}|write-test\.[a-z0-9_]{8})$"
)

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    """What an export wrote (and skipped as already up to date)."""

    out_dir: Path
    files: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    metadata_dir: Path | None = None
    planes: int = 0
    nbytes: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        line = (
            f"wrote {len(self.files)} file(s), {self.planes} planes, "
            f"{self.nbytes / 1e6:.1f} MB in {self.seconds:.1f} s to {self.out_dir}"
        )
        if self.skipped:
            line += f"; {len(self.skipped)} up to date, skipped"
        return line


def pyramid_shapes(shape: tuple[int, int], pyramid: bool | None) -> list[tuple[int, int]]:
    """Shapes of the sub-resolutions (each half the previous).

    ``pyramid`` None means automatic: only planes beyond
    :data:`PYRAMID_THRESHOLD` get them.
    """
    y, x = shape
    if pyramid is False or (pyramid is None and max(y, x) <= PYRAMID_THRESHOLD):
        return []
    shapes = []
    while max(y, x) > PYRAMID_MIN_SIZE and min(y, x) >= 2:
        y, x = y // 2, x // 2
        shapes.append((y, x))
    return shapes


def downsample(plane: np.ndarray) -> np.ndarray:
    """Halve both sides by 2x2 averaging (odd edges dropped), same dtype."""
    y, x = plane.shape[0] // 2 * 2, plane.shape[1] // 2 * 2
    blocks = plane[:y, :x].reshape(y // 2, 2, x // 2, 2)
    mean = blocks.mean(axis=(1, 3), dtype=np.float64)
    if np.issubdtype(plane.dtype, np.integer):
        mean = np.rint(mean)
    return mean.astype(plane.dtype)


def _tiles(planes: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    for plane in planes:
        for ty in range(0, plane.shape[0], TILE):
            for tx in range(0, plane.shape[1], TILE):
                yield plane[ty : ty + TILE, tx : tx + TILE]


def read_fingerprint(path: Path) -> str | None:
    """The source fingerprint recorded in an OME-TIFF we wrote, if any."""
    try:
        with tifffile.TiffFile(path) as tif:
            xml = tif.ome_metadata
        return fingerprint_in_xml(xml) if xml else None
    except Exception:  # not a TIFF, not ours, damaged: not up to date
        return None


def _is_within(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def prepare_out_dir(exp: Experiment, out: Path, dataset: str) -> tuple[Path, list[Path]]:
    """Create ``out/dataset``; return it and the folders this call created."""
    root = exp.root.resolve()
    out_dir = (out / dataset).resolve()
    if _is_within(out_dir, root):
        raise InputError(
            out,
            f"output folder is inside the input folder {exp.root}; choose a folder "
            "outside it (the input is never modified)",
        )
    created: list[Path] = []
    missing = [p for p in [out_dir, *out_dir.parents] if not p.exists()]
    try:
        for p in reversed(missing):
            p.mkdir()
            created.append(p)
    except OSError as exc:
        remove_empty(created)
        raise InputError(out, f"cannot create output folder ({exc.strerror or exc})") from None
    if not out_dir.is_dir():
        raise InputError(out_dir, "exists and is not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=out_dir, prefix=".write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        remove_empty(created)
        problem = f"output folder is not writable ({exc.strerror or exc})"
        raise InputError(out_dir, problem) from None
    return out_dir, created


def current_umask() -> int:
    """The process's umask (outputs get ordinary permissions, not mkstemp's 0600)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_empty(folders: list[Path]) -> None:
    """Remove the folders a failed run created, deepest first, where they are empty."""
    for p in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            p.rmdir()


class FolderLock:
    """An exclusive lock on a dataset folder, so two exports never write into it at once.

    POSIX ``flock`` (``msvcrt.locking`` on Windows) on a hidden file that is
    removed on release.  After locking, the file is checked to be the one
    still at the path: a run that released and removed it meanwhile would
    otherwise leave us holding a lock on a deleted file.
    """

    def __init__(self, folder: Path):
        self.path = folder / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~current_umask())
            try:
                _lock_fd(fd)
            except OSError:
                os.close(fd)
                raise InputError(
                    self.path.parent, "another export is writing into this folder; "
                    f"wait for it to finish (or remove {LOCK_NAME} if none is running)"
                ) from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return self
            os.close(fd)
        raise InputError(self.path.parent, "cannot lock the folder (it keeps changing)")

    def __exit__(self, *exc: object) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            self.path.unlink()  # before the lock goes: a waiting run then sees a new file
        except FileNotFoundError:
            pass
        except PermissionError:  # Windows: an open file cannot be removed
            os.close(fd)
            with contextlib.suppress(OSError):
                self.path.unlink()
            return
        os.close(fd)  # closing releases the lock


def _lock_fd(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
    else:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _size(path: Path) -> int:
    if path.is_dir() and not path.is_symlink():
        return sum(f.lstat().st_size for f in path.rglob("*") if not f.is_dir())
    return path.lstat().st_size


def remove_stale_temporaries(out_dir: Path) -> list[Path]:
    """Remove what an export killed hard (SIGKILL, power loss) left in ``out_dir``.

    Call with the folder's :class:`FolderLock` held: then no other export is
    writing, and every file with one of our temporary names is an orphan.
    Returns what was removed; one log line names it with the space reclaimed.
    """
    import shutil

    stale = sorted(p for p in out_dir.iterdir() if _OUR_TEMPS.match(p.name))
    if not stale:
        return []
    nbytes = 0
    for p in stale:
        nbytes += _size(p)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    log.warning(
        "removed %d temporary file(s) an interrupted export left in %s, %.1f MB reclaimed: %s",
        len(stale), out_dir, nbytes / 1e6, ", ".join(p.name for p in stale),
    )
    return stale


def _decode(job: tuple[Position, Path | None]) -> np.ndarray:
    position, path = job
    return position.read_plane(path)


def _write_tiff(fh: BinaryIO, data: Iterator[np.ndarray], levels: list[tuple[int, int]],
                level_maps: list[np.memmap], spec: ImageSpec, bigtiff: bool,
                options: dict) -> None:
    """The TIFF itself: the full-resolution pages with the OME-XML, then the
    sub-resolutions as SubIFDs."""
    n = spec.n_planes
    y, x = spec.plane_shape
    with tifffile.TiffWriter(fh, bigtiff=bigtiff, byteorder="<", ome=False) as tw:
        tw.write(
            _tiles(data) if levels else data,
            shape=(n, y, x),
            description=image_xml(spec),
            software=f"{TOOL_NAME} {__version__}",
            subifds=len(levels) or None,
            **options,
        )
        for level in level_maps:
            tw.write(
                _tiles(iter(level)),
                shape=level.shape,
                subfiletype=1,
                **options,
            )


def write_image(
    spec: ImageSpec,
    planes: Iterator[np.ndarray],
    target: Path,
    *,
    compression: str = "none",
    pyramid: bool | None = None,
    bigtiff: bool | None = None,
    workers: int = 1,
    on_plane: Callable[[int], None] | None = None,
) -> None:
    """Write one image's planes (XYZCT order) and its OME-XML to ``target``, atomically.

    ``bigtiff`` None means automatic: BigTIFF where the file may pass 2 GB.
    """
    n = spec.n_planes
    y, x = spec.plane_shape
    dtype = np.dtype(spec.dtype)
    levels = pyramid_shapes((y, x), pyramid)
    codec = None if compression == "none" else compression
    options: dict = {
        "dtype": dtype,
        "photometric": "minisblack",
        "metadata": None,
        "compression": codec,
        "maxworkers": workers,
    }
    if codec and np.issubdtype(dtype, np.integer):
        options["predictor"] = True
    if levels:
        options["tile"] = (TILE, TILE)

    fd, tmp_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".part"
    )
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; outputs are ordinary files
    level_files: list[Path] = []
    level_maps: list[np.memmap] = []
    try:
        for ly, lx in levels:
            fd, name = tempfile.mkstemp(dir=target.parent, prefix=".level.", suffix=".npy")
            os.close(fd)
            level_files.append(Path(name))
            level_maps.append(
                np.lib.format.open_memmap(name, mode="w+", dtype=dtype, shape=(n, ly, lx))
            )

        def full_resolution() -> Iterator[np.ndarray]:
            count = 0
            for i, plane in enumerate(planes):
                small = plane
                for level in level_maps:
                    small = downsample(small)
                    level[i] = small[: level.shape[1], : level.shape[2]]
                count += 1
                yield plane
                behind.advance(fh.tell())  # the plane is written
                if on_plane:
                    on_plane(plane.nbytes)
            if count != n:
                raise RuntimeError(f"{spec.name}: got {count} planes, expected {n}")

        data = full_resolution()
        if bigtiff is None:
            bigtiff = n * y * x * dtype.itemsize * 4 // 3 > 2**31
        with open(tmp, "r+b") as fh:
            behind = StreamedFile(fh.fileno())
            _write_tiff(fh, data, levels, level_maps, spec, bigtiff, options)
            fh.flush()
            behind.finish()
        os.replace(tmp, target)
    finally:
        level_maps.clear()  # unmap before unlinking (required on Windows)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        for f in level_files:
            with contextlib.suppress(FileNotFoundError):
                f.unlink()


def _safe_name(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "table"


class MetadataFolder:
    """``out_dir/metadata/``: each table as HDF5 (PyTables) and CSV, the raw files copied.

    Built in a hidden temporary folder by a thread of its own, so that
    pandas and PyTables load while the pixels are being written, and put in
    place (replacing an older one) by :meth:`commit` only when the export
    has succeeded; :meth:`discard` removes it otherwise.  It is never seen
    half-written.
    """

    def __init__(self, metadata: ExperimentMetadata, out_dir: Path) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.out_dir = out_dir
        self.tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=".metadata."))
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="metadata")
        self._built = self._pool.submit(self._build, metadata)

    def _build(self, metadata: ExperimentMetadata) -> None:
        import shutil

        self.tmp.chmod(0o777 & ~current_umask())
        for name, df in metadata.tables.items():
            stem = _safe_name(name)
            df.to_csv(self.tmp / f"{stem}.csv", index=False)
            df.to_hdf(self.tmp / f"{stem}.h5", key="table", format="table", mode="w",
                      index=False)
        for src in metadata.attachments:
            shutil.copyfile(src, self.tmp / src.name)  # contents only: no read-only bits

    def commit(self) -> Path:
        """Wait for the folder (its error, if any, is raised here) and rename it into place."""
        import shutil

        self._built.result()
        final = self.out_dir / "metadata"
        if final.exists():
            old = Path(tempfile.mkdtemp(dir=self.out_dir, prefix=".metadata-old."))
            os.replace(final, old / "metadata")
            os.replace(self.tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, final)
        return final

    def discard(self) -> None:
        """Wait for the thread; remove the folder unless committed."""
        import shutil

        self._pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    @classmethod
    def start(cls, metadata: ExperimentMetadata | None, out_dir: Path) -> MetadataFolder | None:
        """Start one where there is something to put in it."""
        if metadata is None or not (metadata.tables or metadata.attachments):
            return None
        return cls(metadata, out_dir)


def run_export(
    exp: Experiment,
    out: str | os.PathLike[str],
    dataset: str | None,
    body: Callable[[ExportResult], None],
    metadata: ExperimentMetadata | None = None,
) -> ExportResult:
    """What every export does around its writer: make ``out/<dataset>``, lock it,
    remove an earlier killed run's temporaries, build the ``metadata/`` folder
    beside ``body`` (put in place only if it succeeds), and on failure remove
    the folders this run created if nothing was written or kept."""
    if any(p.shape is None for p in exp.positions):
        raise ValueError("experiment was discovered without probing; shapes are unknown")
    start = time.perf_counter()
    dataset = dataset or exp.root.resolve().name
    out_dir, created = prepare_out_dir(exp, Path(out), dataset)
    result = ExportResult(out_dir)
    try:
        with FolderLock(out_dir):
            remove_stale_temporaries(out_dir)
            folder = MetadataFolder.start(metadata, out_dir)
            try:
                body(result)
                if folder is not None:
                    result.metadata_dir = folder.commit()
            finally:
                if folder is not None:
                    folder.discard()
    except BaseException:
        if not result.files and not result.skipped:
            remove_empty(created)
        raise
    result.seconds = time.perf_counter() - start
    return result


def outputs_to_write(
    exp: Experiment,
    result: ExportResult,
    settings: str,
    suffix: str,
    fingerprint_of: Callable[[Path], str | None],
    overwrite: bool,
    present: Callable[[Path], bool] = Path.exists,
) -> list[tuple[Position, Path, str]]:
    """(position, target, fingerprint) of each output to write.

    An existing output with the same fingerprint is up to date (recorded as
    skipped); one made from other data is replaced only with ``overwrite``,
    else an error before anything is written.
    """
    todo = []
    for pos in exp.positions:
        target = result.out_dir / f"{pos.name}{suffix}"
        fingerprint = source_fingerprint(exp, pos, settings)
        if present(target):
            if fingerprint_of(target) == fingerprint:
                result.skipped.append(target)
                continue
            if not overwrite:
                raise InputError(
                    target,
                    "exists and was written from other source planes or settings; "
                    "use --overwrite to replace it",
                )
        todo.append((pos, target, fingerprint))
    return todo


def export_ome_tiff(
    exp: Experiment,
    out: str | os.PathLike[str],
    dataset: str | None = None,
    *,
    metadata: ExperimentMetadata | None = None,
    provenance: bool = True,
    workers: int | None = None,
    compression: str = "none",
    pyramid: bool | None = None,
    bigtiff: bool | None = None,
    overwrite: bool = False,
    on_plane: Callable[[int], None] | None = None,
) -> ExportResult:
    """Write ``OUT/<dataset>/<position>.ome.tiff`` for every position.

    A file that already exists is skipped when it was written from the same
    source planes (same fingerprint), replaced when ``overwrite``, and
    otherwise an error before anything is written.  The dataset folder is
    locked while the export runs; temporary files that an earlier, killed
    export left there are removed first.
    """
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS}, not {compression!r}")
    # What else decides the file's content, besides the source planes (a
    # forced BigTIFF only: automatic choices follow from the planes).
    options = (compression, pyramid, provenance) + (() if bigtiff is None else (bigtiff,))
    settings = fingerprint_settings(metadata, *options)
    return run_export(exp, out, dataset, lambda result: _export_locked(
        exp, result, settings, metadata=metadata, provenance=provenance,
        workers=workers or default_workers(), compression=compression, pyramid=pyramid,
        bigtiff=bigtiff, overwrite=overwrite, on_plane=on_plane), metadata)


def _export_locked(
    exp: Experiment,
    result: ExportResult,
    settings: str,
    *,
    metadata: ExperimentMetadata | None,
    provenance: bool,
    workers: int,
    compression: str,
    pyramid: bool | None,
    bigtiff: bool | None,
    overwrite: bool,
    on_plane: Callable[[int], None] | None,
) -> None:
    """The body of :func:`export_ome_tiff`, run with the dataset folder locked."""
    todo = outputs_to_write(exp, result, settings, OME_SUFFIX, read_fingerprint, overwrite)
    jobs = ((pos, path) for pos, _, _ in todo for path in exp.plane_paths(pos))
    plane_bytes = max(
        (exp.position_nbytes(p) // exp.planes_per_position for p, _, _ in todo), default=1
    )
    stream = ordered_map(_decode, jobs, workers, prefetch_window(workers, plane_bytes))
    prov = provenance_pairs(exp) if provenance else None
    try:
        for pos, target, fingerprint in todo:
            spec = describe(exp, pos, metadata, provenance=prov, fingerprint=fingerprint)
            planes = itertools.islice(stream, spec.n_planes)
            write_image(
                spec, planes, target, compression=compression, pyramid=pyramid,
                bigtiff=bigtiff, workers=workers, on_plane=on_plane,
            )
            result.files.append(target)
            result.planes += spec.n_planes
            result.nbytes += exp.position_nbytes(pos)
    finally:
        stream.close()
