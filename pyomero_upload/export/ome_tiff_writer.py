"""OME-TIFF: one streamed, atomically renamed file per position.

The writer's own part of an export (:mod:`.frame` does the rest): tifffile
writes the decoded planes straight into ``OUT/<dataset>/.<position>.*.part``
with the image's OME-XML in the first page; only a complete file is renamed
to ``<position>.ome.tiff``.  Sub-resolutions, where there are any, go in
SubIFDs, built in memory-mapped temporaries beside the file as the planes
pass.  Any failure or Ctrl-C removes the partial file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from .. import TOOL_NAME, __version__
from ..describe import ImageSpec
from ..layout import Experiment
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
    import tifffile

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

    def fingerprint_options(self, provenance: bool) -> tuple[object, ...]:
        # A forced BigTIFF only: automatic choices follow from the planes.
        return (self.compression, self.pyramid, provenance) + (
            () if self.bigtiff is None else (self.bigtiff,))

    def read_fingerprint(self, target: Path) -> str | None:
        return read_fingerprint(target)

    def write(self, spec: ImageSpec, planes: Iterator[np.ndarray], target: Path,
              on_plane: Callable[[int], None] | None) -> None:
        write_image(spec, planes, target, compression=self.compression, pyramid=self.pyramid,
                    bigtiff=self.bigtiff, workers=self.workers, on_plane=on_plane)


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
