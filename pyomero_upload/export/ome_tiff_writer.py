"""OME-TIFF: one atomically renamed file per position.

The writer's own part of an export (:mod:`.frame` does the rest).  Each file
is made as ``OUT/<dataset>/.<position>.*.part`` and renamed to
``<position>.ome.tiff`` only when complete; any failure or Ctrl-C removes it.

Uncompressed files without sub-resolutions (the default) are laid out first:
tifffile writes the whole structure (every IFD, the OME-XML in the first
page) around an empty, contiguous pixel block, and each decode thread then
``os.pwrite``s its plane at that plane's offset (:class:`_Placement`), in
parallel, with no writer thread and no further copy.  The file is
byte-for-byte the one tifffile writes from the planes.  Compressed files,
pyramids (tiles and SubIFDs), hosts without ``os.pwrite`` and big-endian
hosts keep the streamed path: tifffile writes the decoded planes in order,
and sub-resolutions are built in memory-mapped temporaries beside the file
as the planes pass.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from .. import TOOL_NAME, __version__
from ..describe import ImageSpec
from ..layout import Experiment, Position
from ..model import ExperimentMetadata
from .folder import current_umask
from .frame import ExportResult, ImageWriter, run_export
from .ome_xml import fingerprint_in_xml, image_xml
from .pyramid import downsample, pyramid_shapes
from .writeback import StreamedFile

if TYPE_CHECKING:
    from ..engine import Engine

COMPRESSIONS = ("none", "zlib", "zstd")
TILE = 256
OME_SUFFIX = ".ome.tiff"


def _tiles(planes: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    for plane in planes:
        for ty in range(0, plane.shape[0], TILE):
            for tx in range(0, plane.shape[1], TILE):
                yield plane[ty : ty + TILE, tx : tx + TILE]


def read_fingerprint(path: Path) -> str | None:
    """The source fingerprint recorded in an OME-TIFF we wrote, if any."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            xml = tif.ome_metadata
        return fingerprint_in_xml(xml) if xml else None
    except Exception:  # not a TIFF, not ours, damaged: not up to date
        return None


def _write_tiff(fh: BinaryIO, data: Iterator[np.ndarray], levels: list[tuple[int, int]],
                level_maps: list[np.memmap], spec: ImageSpec, bigtiff: bool,
                options: dict) -> None:
    """The TIFF itself: the full-resolution pages with the OME-XML, then the
    sub-resolutions as SubIFDs."""
    n = spec.n_planes
    y, x = spec.plane_shape
    with tifffile_writer(fh, bigtiff) as tw:
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


def _pwrite(fd: int, plane: np.ndarray, offset: int) -> None:
    view = np.ascontiguousarray(plane).data.cast("B")
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


class _Placement:
    """Where one image's planes go once its file is laid out.

    The decode threads call :meth:`place` with each decoded plane: while the
    file is open (between :meth:`open` and :meth:`close`) the plane is
    ``pwrite``n at its offset there and its byte count returned; before (the
    first planes, decoded while the previous file is being finished) or after
    (the file was abandoned), the plane itself is returned for the writer to
    place.  :meth:`close` waits for the writes under way, so the file
    descriptor is never used after it is closed.
    """

    def __init__(self, plane_nbytes: int) -> None:
        self.plane_nbytes = plane_nbytes
        self._cond = threading.Condition()
        self._fd = -1
        self._offset = 0
        self._busy = 0

    def place(self, index: int, plane: np.ndarray) -> int | np.ndarray:
        with self._cond:
            if self._fd < 0:
                return plane
            fd = self._fd
            self._busy += 1
        try:
            _pwrite(fd, plane, self._offset + index * self.plane_nbytes)
        finally:
            with self._cond:
                self._busy -= 1
                if not self._busy:
                    self._cond.notify_all()
        return plane.nbytes

    def open(self, fd: int, offset: int) -> None:
        with self._cond:
            self._fd, self._offset = fd, offset

    def close(self) -> None:
        with self._cond:
            self._fd = -1
            self._cond.wait_for(lambda: not self._busy)


def placeable(shape: tuple[int, int], dtype: np.dtype, compression: str,
              pyramid: bool | None) -> bool:
    """Whether an image's planes can be ``pwrite``n straight into a laid-out file:
    uncompressed, no sub-resolutions, pixels already in the file's byte order."""
    return (compression == "none" and not pyramid_shapes(shape, pyramid)
            and hasattr(os, "pwrite")
            and (sys.byteorder == "little" or np.dtype(dtype).itemsize == 1))


@contextlib.contextmanager
def _part_file(target: Path) -> Iterator[Path]:
    """A new hidden temporary beside ``target`` (an ordinary file's permissions),
    removed unless it was renamed into place."""
    fd, tmp_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".part"
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _auto_bigtiff(spec: ImageSpec, bigtiff: bool | None) -> bool:
    if bigtiff is not None:
        return bigtiff
    y, x = spec.plane_shape
    return spec.n_planes * y * x * np.dtype(spec.dtype).itemsize * 4 // 3 > 2**31


def write_placed(
    spec: ImageSpec,
    planes: Iterator[int | np.ndarray],
    target: Path,
    placement: _Placement,
    *,
    bigtiff: bool | None = None,
    on_plane: Callable[[int], None] | None = None,
) -> None:
    """Write one uncompressed image, atomically, whose planes the decode threads
    place themselves (:class:`_Placement`).

    ``planes`` yields, in XYZCT order, each plane's byte count once it is in
    the file, or the plane itself where the decode thread handed it back.
    """
    n = spec.n_planes
    y, x = spec.plane_shape
    dtype = np.dtype(spec.dtype)
    plane_nbytes = y * x * dtype.itemsize
    with _part_file(target) as tmp:
        with open(tmp, "r+b") as fh:
            try:
                with tifffile_writer(fh, _auto_bigtiff(spec, bigtiff)) as tw:
                    placed = tw.write(None, shape=(n, y, x), description=image_xml(spec),
                                      software=f"{TOOL_NAME} {__version__}", returnoffset=True,
                                      **_tiff_options(dtype, "none", False, 1))
                if placed is None:
                    raise RuntimeError(f"{spec.name}: tifffile laid out no contiguous pixels")
                offset = placed[0]
                fh.flush()  # nothing of the layout may reach the file after the planes
                fd = fh.fileno()
                placement.open(fd, offset)
                behind = StreamedFile(fd)
                count = 0
                for i, plane in enumerate(planes):
                    if isinstance(plane, np.ndarray):  # decoded before the file was laid out
                        _pwrite(fd, plane, offset + i * plane_nbytes)
                    count += 1
                    behind.advance(offset + count * plane_nbytes)  # planes 0..i are written
                    if on_plane:
                        on_plane(plane_nbytes)
                if count != n:
                    raise RuntimeError(f"{spec.name}: got {count} planes, expected {n}")
            finally:
                placement.close()
            behind.finish()
        os.replace(tmp, target)


def _tiff_options(dtype: np.dtype, compression: str, tiled: bool, workers: int) -> dict:
    """tifffile's ``write`` options for every page, whichever path writes the file."""
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
    if tiled:
        options["tile"] = (TILE, TILE)
    return options


def tifffile_writer(fh: BinaryIO, bigtiff: bool) -> Any:
    """The TiffWriter every OME-TIFF is written with (little-endian, our own OME-XML)."""
    import tifffile

    return tifffile.TiffWriter(fh, bigtiff=bigtiff, byteorder="<", ome=False)


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
    options = _tiff_options(dtype, compression, bool(levels), workers)
    level_files: list[Path] = []
    level_maps: list[np.memmap] = []
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(_part_file(target))
        stack.callback(_remove_levels, level_maps, level_files)
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
        with open(tmp, "r+b") as fh:
            behind = StreamedFile(fh.fileno())
            _write_tiff(fh, data, levels, level_maps, spec, _auto_bigtiff(spec, bigtiff),
                        options)
            fh.flush()
            behind.finish()
        os.replace(tmp, target)


def _remove_levels(level_maps: list[np.memmap], level_files: list[Path]) -> None:
    level_maps.clear()  # unmap before unlinking (required on Windows)
    for f in level_files:
        with contextlib.suppress(FileNotFoundError):
            f.unlink()


class OmeTiffWriter(ImageWriter):
    """OME-TIFF files: uncompressed (default), zlib or zstd; BigTIFF where needed."""

    format = "ome-tiff"
    suffix = OME_SUFFIX
    #: ".<pos>.ome.tiff.XXXXXXXX.part" files and ".level.XXXXXXXX.npy" sub-resolutions.
    temporaries = (r".+\.ome\.tiff\.[a-z0-9_]{8}\.part", r"level\.[a-z0-9_]{8}\.npy")

    def __init__(self, compression: str = "none", pyramid: bool | None = None,
                 bigtiff: bool | None = None, workers: int = 1):
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS}, not {compression!r}")
        self.compression = compression
        self.pyramid = pyramid
        self.bigtiff = bigtiff
        self.workers = workers
        #: Each position's placement while its planes are decoded (by name).
        self._placements: dict[str, _Placement] = {}

    def __getstate__(self) -> dict:
        # Sent to Dask workers before any position starts: placements stay local.
        return {**self.__dict__, "_placements": {}}

    def fingerprint_options(self, provenance: bool) -> tuple[object, ...]:
        # A forced BigTIFF only: automatic choices follow from the planes.
        return (self.compression, self.pyramid, provenance) + (
            () if self.bigtiff is None else (self.bigtiff,))

    def read_fingerprint(self, target: Path) -> str | None:
        return read_fingerprint(target)

    def plane_work(self, position: Position) -> Callable[[int, Path | None], Any]:
        read = position.read_plane
        if position.shape is None or position.dtype is None or not placeable(
                position.shape, position.dtype, self.compression, self.pyramid):
            return lambda index, path: read(path)
        y, x = position.shape
        placement = _Placement(y * x * np.dtype(position.dtype).itemsize)
        self._placements[position.name] = placement
        return lambda index, path: placement.place(index, read(path))

    def write(self, spec: ImageSpec, planes: Iterator[Any], target: Path,
              on_plane: Callable[[int], None] | None) -> None:
        placement = self._placements.pop(spec.name, None)
        if placement is not None:
            write_placed(spec, planes, target, placement, bigtiff=self.bigtiff,
                         on_plane=on_plane)
        else:
            write_image(spec, planes, target, compression=self.compression,
                        pyramid=self.pyramid, bigtiff=self.bigtiff, workers=self.workers,
                        on_plane=on_plane)


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
    engine: Engine | None = None,
) -> ExportResult:
    """Write ``OUT/<dataset>/<position>.ome.tiff`` for every position.

    Args:
        exp: The experiment, discovered (and probed).
        out: The output folder; the dataset is a sub-folder of it.
        dataset: The dataset folder's name (default: the experiment folder's).
        metadata: The experiment's metadata, for the OME-XML, the channels'
            names and colours, the physical sizes and the ``metadata/`` folder.
        provenance: Record the tool, version and time in the OME-XML.
        workers: Decode threads (default: all cores).
        compression: ``none`` (default), ``zlib`` or ``zstd``.
        pyramid: Write sub-resolutions (None: only for planes beyond 4096 pixels).
        bigtiff: Write BigTIFF (None: only where a file may pass 2 GB).
        overwrite: Replace files written from other source planes or settings.
        on_plane: Called with the byte count of each plane written.
        engine: Write each position as a task on Dask (:mod:`pyomero_upload.engine`).

    Returns:
        What was written and skipped.

    Raises:
        InputError: The output cannot be written, or a file exists that was
            written from other data (without ``overwrite``); raised before
            anything is written.

    A file that already exists is skipped when it was written from the same
    source planes and settings (same fingerprint).  The dataset folder is
    locked while the export runs (:func:`.frame.run_export`).
    """
    from ..parallel import default_workers

    workers = workers or default_workers()
    writer = OmeTiffWriter(compression, pyramid, bigtiff, workers)
    return run_export(exp, out, dataset, writer, metadata=metadata, provenance=provenance,
                      workers=workers, overwrite=overwrite, on_plane=on_plane, engine=engine)
