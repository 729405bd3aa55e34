"""OME-Zarr export: one streamed, atomically renamed NGFF store per position.

``OUT/<dataset>/<position>.ome.zarr`` is a multiscale image (NGFF 0.5 on
Zarr v3 by default, NGFF 0.4 on Zarr v2 on request) of the same
:class:`~pyomero_upload.describe.ImageSpec` the OME-TIFF writer writes::

    zarr.json              group: multiscales (axes t, c, z, y, x; scales), omero (channels)
    0/zarr.json            full resolution, shape (T, C, Z, Y, X)
    0/c/<s>/0/0/0/0        one shard file per group of timepoints: their C x Z planes,
                           one chunk each (all the position's timepoints, up to 1 GiB
                           of pixels a shard: one shard for most positions)
    1/ ...                 pyramid sub-resolutions (each half the previous), if any
    OME/zarr.json          group: where bioformats2raw keeps the OME-XML
    OME/METADATA.ome.xml   the full OME-XML (UTF-8): annotations, per-plane facts

Zarr v2 has no sharding, so an NGFF 0.4 store holds one file per chunk
(``0/<t>/<c>/<z>/0/0``).  A chunk is one plane, cut into 2048 x 2048 tiles
only where a plane is larger than 4096 pixels on a side.

zarr-python writes every metadata document (``zarr.json``, ``.zarray``,
``.zattrs``).  The pixels are streamed: planes are decoded, measured and
compressed (Blosc, the codec zarr's metadata names) in the decode threads,
and the writer appends each compressed chunk to its shard file and writes
the shard index (the sharding codec's layout: offsets and lengths,
little-endian, CRC32C, at the end) when the shard's last timepoint is
complete.  zarr-python itself can only write a shard whole, from an array
holding all of it, which would put the shard's planes in memory at once.

The store is built as ``.<position>.ome.zarr.XXXXXXXX.part`` next to its
final name and renamed when complete, so an error or Ctrl-C never leaves
something that looks finished; a hard kill leaves the temporary, which the
next export into the folder removes (:func:`.folder.remove_stale_temporaries`).
This module is the writer's own part of an export; :mod:`.frame` does the rest.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import shutil
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import TOOL_NAME, __version__
from ..describe import ImageSpec
from ..errors import InputError
from ..layout import Experiment, Position
from ..model import ExperimentMetadata
from .folder import current_umask
from .frame import ExportResult, ImageWriter, run_export
from .ome_xml import image_xml
from .pyramid import PYRAMID_THRESHOLD, downsample, pyramid_shapes
from .writeback import StreamedFile, StreamedFiles

if TYPE_CHECKING:
    import numpy as np

    from ..engine import Engine

log = logging.getLogger(__name__)

ZARR_SUFFIX = ".ome.zarr"
NGFF_VERSIONS = ("0.5", "0.4")
DEFAULT_NGFF_VERSION = "0.5"
#: Blosc's compressors (``none``: chunks stored raw).
COMPRESSIONS = ("zstd", "lz4", "zlib", "none")
DEFAULT_COMPRESSION = "zstd"
#: Blosc compression level per compressor: the fastest zstd and zlib levels
#: (zstd 1 on shuffled 16-bit planes beats PNG's ratio at a fifth of its
#: decode time), lz4's middle one.
CLEVEL = {"zstd": 1, "lz4": 5, "zlib": 1}
#: Blosc block size: a 512 x 512 16-bit plane in one block compresses in 0.52 ms
#: against 0.61 ms with 256 KiB blocks and 0.9 ms with Blosc's automatic (small,
#: cache-sized) blocks at level 1, and 3% smaller.
BLOSC_BLOCKSIZE = 1 << 20
#: Planes larger than :data:`~.pyramid.PYRAMID_THRESHOLD` on a side are
#: chunked in tiles of this size; smaller planes are one chunk each.
TILE = 2048
#: Uncompressed bytes of full-resolution pixels a shard holds at most: a shard
#: holds as many whole timepoints as fit (at least one).  The whole position
#: for most experiments (the paper's 240 T x 15 planes of 512 x 512 x 16 bits is
#: 1.8 GB: two shards), so a store is a handful of files, whatever T is; a
#: reader still reads one chunk (plane) at a time through the shard's index.
SHARD_BYTES = 1 << 30
#: Where bioformats2raw (and so Bio-Formats' and OMERO's Zarr readers) looks
#: for the OME-XML, relative to the image.
OME_XML_PATH = "OME/METADATA.ome.xml"
#: Our key in the root group's attributes: tool, version, source fingerprint.
ATTRS_KEY = "pyomero_upload"
AXES = ("t", "c", "z", "y", "x")
#: An empty chunk in a shard index (the sharding codec's marker).
_EMPTY = 2**64 - 1


# --- the layout of one store --------------------------------------------------


@dataclass(frozen=True)
class Level:
    """One resolution: the plane shape (Y, X) and the chunk shape (Y, X) cut from it."""

    shape: tuple[int, int]
    chunk: tuple[int, int]

    @property
    def grid(self) -> tuple[int, int]:
        """Chunks per plane along (Y, X)."""
        return (math.ceil(self.shape[0] / self.chunk[0]), math.ceil(self.shape[1] / self.chunk[1]))


def timepoints_per_shard(spec: ImageSpec, levels: Sequence[Level]) -> int:
    """How many timepoints each shard holds (the last shard may hold fewer)."""
    import numpy as np

    _x, _y, size_z, size_c, size_t = spec.size
    ny, nx = levels[0].grid
    cy, cx = levels[0].chunk
    per_t = size_c * size_z * ny * cy * nx * cx * np.dtype(spec.dtype).itemsize
    return max(1, min(size_t, SHARD_BYTES // max(per_t, 1)))


def levels_for(shape: tuple[int, int], pyramid: bool | None) -> list[Level]:
    """The full resolution and its sub-resolutions, as the OME-TIFF writer makes them.

    ``pyramid`` None means automatic: only planes beyond
    :data:`~.pyramid.PYRAMID_THRESHOLD` pixels get sub-resolutions (and tiles).
    """
    tiled = max(shape) > PYRAMID_THRESHOLD
    out = []
    for y, x in [shape, *pyramid_shapes(shape, pyramid)]:
        out.append(Level((y, x), (min(y, TILE), min(x, TILE)) if tiled else (y, x)))
    return out


@dataclass(frozen=True)
class StoreFormat:
    """How a store is written: NGFF version (so Zarr format) and Blosc compressor."""

    ngff_version: str = DEFAULT_NGFF_VERSION
    compression: str = DEFAULT_COMPRESSION

    def __post_init__(self) -> None:
        if self.ngff_version not in NGFF_VERSIONS:
            raise ValueError(
                f"NGFF version must be one of {NGFF_VERSIONS}, not {self.ngff_version!r}")
        if self.compression not in COMPRESSIONS:
            raise ValueError(
                f"compression must be one of {COMPRESSIONS}, not {self.compression!r}")

    @property
    def zarr_format(self) -> int:
        return 3 if self.ngff_version == "0.5" else 2

    def blosc(self, itemsize: int) -> Any:
        """The numcodecs ``Blosc`` codec of the chunks (None for ``none``)."""
        if self.compression == "none":
            return None
        from numcodecs import Blosc

        return Blosc(cname=self.compression, clevel=CLEVEL[self.compression],
                     shuffle=Blosc.SHUFFLE if itemsize > 1 else Blosc.NOSHUFFLE,
                     blocksize=BLOSC_BLOCKSIZE)


# --- where the time goes ------------------------------------------------------------


class Profile:
    """Where an export's time goes, stage by stage; cheap enough to leave on.

    The decode threads add their own CPU time per plane (``time.thread_time``:
    a clock read a stage, one lock a plane) for decoding (read and decode),
    measuring (min and max) and compressing; the writing thread adds, per
    store, its CPU time writing chunks and shard indexes, and the metadata
    (zarr.json, OME-XML, rename), and its wall time waiting for planes.
    :meth:`line` sums it up beside the process's own CPU time ("everything
    else": start-up, the ``metadata/`` folder's thread, describing each
    image, handing planes between threads).
    """

    STAGES = ("decode", "measure", "compress")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.cpu = dict.fromkeys(self.STAGES, 0.0)
        self.planes = 0
        self.write_cpu = 0.0
        self.metadata_cpu = 0.0
        self.wait = 0.0
        self.start_cpu = _process_cpu()
        self.start = time.perf_counter()

    def __getstate__(self) -> dict[str, Any]:
        # The writer goes to Dask workers with its profile: a lock does not pickle.
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def add_plane(self, decode: float, measure: float, compress: float) -> None:
        with self._lock:
            self.cpu["decode"] += decode
            self.cpu["measure"] += measure
            self.cpu["compress"] += compress
            self.planes += 1

    def add_store(self, write: float, metadata: float, wait: float) -> None:
        """The writing thread's CPU time for one store's chunks and its metadata
        (zarr.json, OME-XML, rename), and its wall time waiting for planes."""
        self.write_cpu += write
        self.metadata_cpu += metadata
        self.wait += wait

    def line(self) -> str:
        """One line: each stage's CPU-seconds and ms a plane; the writing thread's share."""
        n = max(self.planes, 1)
        wall = time.perf_counter() - self.start
        total = _process_cpu() - self.start_cpu
        stages = ", ".join(f"{k} {v:.1f} CPU-s ({v / n * 1e3:.2f} ms a plane)"
                           for k, v in self.cpu.items())
        other = total - sum(self.cpu.values()) - self.write_cpu - self.metadata_cpu
        return (f"profile: {self.planes} planes in {wall:.1f} s, {total:.1f} CPU-s: {stages}; "
                f"writing thread: chunks {self.write_cpu:.1f} CPU-s "
                f"({self.write_cpu / n * 1e3:.2f} ms a plane), metadata "
                f"{self.metadata_cpu:.1f} CPU-s, waiting for planes {self.wait:.1f} s; "
                f"everything else {other:.1f} CPU-s")


def _process_cpu() -> float:
    t = os.times()
    return t.user + t.system


# --- decoding and compressing, in the worker threads ----------------------------


@dataclass
class EncodedPlane:
    """One plane, compressed: per level, its chunks in (Y, X) C-order; its value range."""

    chunks: list[list[bytes]]
    low: float
    high: float
    nbytes: int


class PlaneEncoder:
    """Decode a position's plane, measure its range, cut and compress its chunks at every level.

    Called from the decode threads (Blosc and the decoders release the GIL);
    holds no state between calls.
    """

    def __init__(self, levels: Sequence[Level], dtype: np.dtype, fmt: StoreFormat,
                 profile: Profile | None = None):
        self.levels = list(levels)
        self.dtype = dtype
        self.codec = fmt.blosc(dtype.itemsize)
        self.profile = profile

    def __call__(self, job: tuple[Position, Path | None]) -> EncodedPlane:
        position, path = job
        return self.read(position, path)

    def read(self, position: Position, path: Path | None) -> EncodedPlane:
        """Decode one of ``position``'s planes and compress it at every level."""
        t0 = time.thread_time()
        plane = position.read_plane(path)
        return self.encode(plane, time.thread_time() - t0)

    def encode(self, plane: np.ndarray, decoded: float = 0.0) -> EncodedPlane:
        """Compress one decoded plane (full resolution) at every level; ``decoded``
        is the CPU time its decoding took (for the profile)."""
        t0 = time.thread_time()
        low, high = value_range(plane)
        t1 = time.thread_time()
        nbytes = plane.nbytes
        chunks: list[list[bytes]] = []
        for k, level in enumerate(self.levels):
            if k:
                plane = downsample(plane)
            chunks.append([self._encode(tile) for tile in _tiles(plane, level)])
        if self.profile is not None:
            self.profile.add_plane(decoded, t1 - t0, time.thread_time() - t1)
        return EncodedPlane(chunks, low, high, nbytes)

    def _encode(self, tile: np.ndarray) -> bytes:
        import numpy as np

        data = np.ascontiguousarray(tile, dtype=self.dtype.newbyteorder("<"))
        return bytes(self.codec.encode(data)) if self.codec is not None else data.tobytes()


def value_range(plane: np.ndarray) -> tuple[float, float]:
    """(min, max) of a plane, NaN ignored; (0, 0) where it holds no number."""
    import numpy as np

    if plane.dtype.kind == "f":
        ok = np.isfinite(plane)
        finite = plane if ok.all() else plane[ok]
        if finite.size == 0:
            return 0.0, 0.0
        return float(finite.min()), float(finite.max())
    return float(plane.min()), float(plane.max())


def _tiles(plane: np.ndarray, level: Level) -> Iterator[np.ndarray]:
    """The chunks of one plane in C order, edge tiles padded with zeros to the chunk shape."""
    import numpy as np

    cy, cx = level.chunk
    if plane.shape == (cy, cx):
        yield plane
        return
    for ty in range(0, plane.shape[0], cy):
        for tx in range(0, plane.shape[1], cx):
            tile = plane[ty : ty + cy, tx : tx + cx]
            if tile.shape != (cy, cx):
                padded = np.zeros((cy, cx), plane.dtype)
                padded[: tile.shape[0], : tile.shape[1]] = tile
                tile = padded
            yield tile


# --- writing the chunk files ------------------------------------------------------


class _ShardFile:
    """One shard of a Zarr v3 array, written chunk by chunk; the index follows on
    close.  What is written leaves the page cache as the shard grows
    (:class:`~.writeback.StreamedFile`)."""

    def __init__(self, path: Path, chunks_per_shard: tuple[int, ...]):
        import numpy as np

        os.makedirs(path.parent, exist_ok=True)
        self.path = path
        self.file = open(path, "wb")  # noqa: SIM115 (closed in close())
        self.behind = StreamedFile(self.file.fileno())
        self.index = np.full((*chunks_per_shard, 2), _EMPTY, dtype="<u8")
        self.offset = 0

    def add(self, where: tuple[int, ...], data: bytes) -> None:
        self.file.write(data)
        self.index[where] = (self.offset, len(data))
        self.offset += len(data)
        self.behind.advance(self.offset)

    def close(self) -> None:
        """Write the index and close."""
        import google_crc32c

        index = self.index.tobytes()
        self.file.write(index + struct.pack("<I", google_crc32c.value(index)))
        self.file.flush()  # all of it in the file before the last write-behind step
        self.behind.finish()
        self.file.close()


class _ShardWriter:
    """Every chunk of a run of ``per_shard`` timepoints from ``t0``, at every level:
    one shard per level (v3), or one file per chunk (v2, where ``per_shard`` is 1)."""

    def __init__(self, root: Path, levels: Sequence[Level], fmt: StoreFormat,
                 t0: int, per_shard: int, size_c: int, size_z: int, behind: StreamedFiles):
        self.root = root
        self.behind = behind
        self.levels = levels
        self.fmt = fmt
        self.t0 = t0
        self._folders: set[Path] = set()
        self.shards: list[_ShardFile] = []
        if fmt.zarr_format == 3:
            self.shards = [
                _ShardFile(root / str(k) / "c" / str(t0 // per_shard) / "0" / "0" / "0" / "0",
                           (per_shard, size_c, size_z, *level.grid))
                for k, level in enumerate(levels)
            ]

    def add(self, t: int, c: int, z: int, plane: EncodedPlane) -> None:
        for k, (level, chunks) in enumerate(zip(self.levels, plane.chunks, strict=True)):
            nx = level.grid[1]
            for i, data in enumerate(chunks):
                iy, ix = divmod(i, nx)
                if self.shards:
                    self.shards[k].add((t - self.t0, c, z, iy, ix), data)
                else:
                    folder = self.root / str(k) / str(t) / str(c) / str(z) / str(iy)
                    if folder not in self._folders:
                        os.makedirs(folder, exist_ok=True)
                        self._folders.add(folder)
                    with open(folder / str(ix), "wb") as f:
                        f.write(data)
                    self.behind.add(folder / str(ix), len(data))

    def close(self) -> None:
        for shard in self.shards:
            shard.close()

    def abort(self) -> None:
        for shard in self.shards:
            with contextlib.suppress(OSError):
                shard.file.close()


# --- metadata -----------------------------------------------------------------------


def _hex_color(rgb: tuple[int, int, int] | None) -> str:
    r, g, b = rgb or (255, 255, 255)
    return f"{r:02X}{g:02X}{b:02X}"


def multiscale(spec: ImageSpec, levels: Sequence[Level], ngff_version: str) -> dict[str, Any]:
    """The ``multiscales`` entry: axes with types and units, one scale per level.

    A spatial or time axis has a unit, and its scale a physical value, where
    the metadata gives one (pixel size, z spacing, time increment); otherwise
    the scale is 1 (one pixel, one step) and the unit is left out.
    """
    known = {
        "t": spec.time_increment_s,
        "z": spec.z_spacing_um,
        "y": spec.pixel_size_um,
        "x": spec.pixel_size_um,
    }
    axes: list[dict[str, str]] = []
    for name in AXES:
        if name == "c":
            axes.append({"name": "c", "type": "channel"})
            continue
        axis = {"name": name, "type": "time" if name == "t" else "space"}
        if known[name]:
            axis["unit"] = "second" if name == "t" else "micrometer"
        axes.append(axis)
    datasets = []
    for k in range(len(levels)):
        # Sub-resolutions drop odd edges (2 x 2 means): each pixel covers 2^k.
        factor = 2.0**k
        scale = [
            float(known["t"] or 1.0),
            1.0,
            float(known["z"] or 1.0),
            float(known["y"] or 1.0) * factor,
            float(known["x"] or 1.0) * factor,
        ]
        datasets.append(
            {"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    entry: dict[str, Any] = {"name": spec.name, "axes": axes, "datasets": datasets}
    if len(levels) > 1:
        entry["type"] = "mean"
        entry["metadata"] = {
            "description": "each sub-resolution is the 2 x 2 mean of the one before "
                           "(odd last row or column dropped), in the pixel type",
            "method": "pyomero_upload.export.pyramid.downsample",
            "version": __version__,
        }
    if ngff_version == "0.4":
        entry = {"version": "0.4", **entry}
    return entry


def omero_block(
    spec: ImageSpec, windows: Sequence[tuple[float, float]], ngff_version: str
) -> dict[str, Any]:
    """The ``omero`` rendering block: channel names, colours, and windows from the
    channels' real (min, max); ``window.min/max`` is the pixel type's range
    (the data's own range for floating point)."""
    import numpy as np

    dtype = np.dtype(spec.dtype)
    channels = []
    for ch, (low, high) in zip(spec.channels, windows, strict=True):
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            lo_range, hi_range = float(info.min), float(info.max)
        else:
            lo_range, hi_range = low, high
        channels.append({
            "active": True,
            "coefficient": 1.0,
            "color": _hex_color(ch.color),
            "family": "linear",
            "inverted": False,
            "label": ch.name,
            "window": {"start": low, "end": high, "min": lo_range, "max": hi_range},
        })
    block: dict[str, Any] = {
        "name": spec.name,
        "channels": channels,
        "rdefs": {"defaultT": 0, "defaultZ": spec.size[2] // 2, "model": "color"},
    }
    if ngff_version == "0.4":
        block["version"] = "0.4"
    return block


def group_attributes(
    spec: ImageSpec,
    levels: Sequence[Level],
    windows: Sequence[tuple[float, float]],
    ngff_version: str,
) -> dict[str, Any]:
    """The image group's attributes: NGFF ``multiscales`` and ``omero`` (under
    ``ome`` for 0.5), and our record with the source fingerprint."""
    ngff = {
        "multiscales": [multiscale(spec, levels, ngff_version)],
        "omero": omero_block(spec, windows, ngff_version),
    }
    ours = {"tool": f"{TOOL_NAME} {__version__}", "source_fingerprint": spec.fingerprint,
            "ome_xml": OME_XML_PATH}
    if ngff_version == "0.5":
        return {"ome": {"version": "0.5", **ngff}, ATTRS_KEY: ours}
    return {**ngff, ATTRS_KEY: ours}


def store_xml(spec: ImageSpec) -> bytes:
    """The image's OME-XML (UTF-8) for ``OME/METADATA.ome.xml``.

    The same document the OME-TIFF carries, except that the pixels are not in
    TIFF pages here: ``TiffData`` becomes ``MetadataOnly``, as the OME schema
    has it for metadata kept apart from the pixels.
    """
    return image_xml(spec, tiff=False)


def read_fingerprint(store: Path) -> str | None:
    """The source fingerprint recorded in an OME-Zarr store we wrote, if any."""
    for name in ("zarr.json", ".zattrs"):
        try:
            doc = json.loads((store / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        attrs = doc.get("attributes", {}) if name == "zarr.json" else doc
        ours = attrs.get(ATTRS_KEY) if isinstance(attrs, dict) else None
        if isinstance(ours, dict) and isinstance(ours.get("source_fingerprint"), str):
            return ours["source_fingerprint"]
    return None


# --- one store --------------------------------------------------------------------------


def _create_arrays(root: Path, spec: ImageSpec, levels: Sequence[Level], fmt: StoreFormat,
                   per_shard: int) -> Any:
    """The group and one array per level, their metadata written by zarr-python."""
    import numpy as np
    import zarr
    from zarr.codecs import BloscCodec

    _x, _y, size_z, size_c, size_t = spec.size
    group = zarr.open_group(root, mode="w", zarr_format=fmt.zarr_format)  # type: ignore[arg-type]
    itemsize = np.dtype(spec.dtype).itemsize
    for k, level in enumerate(levels):
        y, x = level.shape
        cy, cx = level.chunk
        ny, nx = level.grid
        shape = (size_t, size_c, size_z, y, x)
        chunks = (1, 1, 1, cy, cx)
        options: dict[str, Any] = {"fill_value": 0}
        codec = fmt.blosc(itemsize)
        if fmt.zarr_format == 3:
            options["shards"] = (per_shard, size_c, size_z, ny * cy, nx * cx)
            options["dimension_names"] = AXES
            options["compressors"] = None if codec is None else BloscCodec(
                cname=fmt.compression,  # type: ignore[arg-type]  # one of COMPRESSIONS
                clevel=codec.clevel,
                shuffle="shuffle" if codec.shuffle else "noshuffle",
                typesize=itemsize, blocksize=codec.blocksize)
        else:
            options["compressors"] = codec
            options["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
        group.create_array(str(k), shape=shape, chunks=chunks, dtype=spec.dtype, **options)
    ome = group.create_group("OME")
    if fmt.zarr_format == 3:
        ome.attrs.put({"ome": {"version": "0.5"}})
    return group


def write_store(
    spec: ImageSpec,
    planes: Iterator[EncodedPlane],
    target: Path,
    levels: Sequence[Level],
    fmt: StoreFormat,
    *,
    on_plane: Callable[[int], None] | None = None,
    profile: Profile | None = None,
) -> None:
    """Write one image's compressed planes (XYZCT order) as the store ``target``, atomically.

    Built as ``.<name>.XXXXXXXX.part`` in the same folder and renamed when
    complete (an existing ``target`` is replaced); on any error the
    temporary is removed.  ``profile`` gets the writing thread's CPU time
    for the chunks and its wall time waiting for planes.
    """
    _x, _y, size_z, size_c, size_t = spec.size
    m0 = time.thread_time()
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part"))
    behind = StreamedFiles()  # v2 chunk files leave the page cache as they are written
    try:
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes 0700; outputs are ordinary folders
        per_shard = timepoints_per_shard(spec, levels) if fmt.zarr_format == 3 else 1
        group = _create_arrays(tmp, spec, levels, fmt, per_shard)
        windows = [(math.inf, -math.inf)] * size_c
        count = 0
        waited = 0.0
        w0 = time.thread_time()
        for t0 in range(0, size_t, per_shard):
            writer = _ShardWriter(tmp, levels, fmt, t0, per_shard, size_c, size_z, behind)
            try:
                for t, c, z in itertools.product(range(t0, min(t0 + per_shard, size_t)),
                                                 range(size_c), range(size_z)):
                    n0 = time.perf_counter()
                    plane = next(planes, None)
                    waited += time.perf_counter() - n0
                    if plane is None:
                        raise RuntimeError(
                            f"{spec.name}: got {count} planes, expected {spec.n_planes}")
                    writer.add(t, c, z, plane)
                    low, high = windows[c]
                    windows[c] = (min(low, plane.low), max(high, plane.high))
                    count += 1
                    if on_plane:
                        on_plane(plane.nbytes)
            except BaseException:
                writer.abort()
                raise
            writer.close()
        w1 = time.thread_time()
        group.attrs.put(group_attributes(spec, levels, windows, fmt.ngff_version))
        (tmp / OME_XML_PATH).write_bytes(store_xml(spec))
        _replace_folder(tmp, target)
        behind.finish()
        if profile is not None:
            # thread_time does not run while the thread waits: no need to subtract it
            profile.add_store(write=w1 - w0, metadata=(w0 - m0) + (time.thread_time() - w1),
                              wait=waited)
    finally:
        behind.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _replace_folder(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``; an existing ``target`` is first moved to a
    temporary name of ours (removed after, or by the next export if killed)."""
    if not target.exists() and not target.is_symlink():
        os.replace(tmp, target)
        return
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part"))
    if target.is_dir() and not target.is_symlink():
        os.replace(target, old)  # onto the empty folder mkdtemp made
    else:
        os.replace(target, old / target.name)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


# --- the export -----------------------------------------------------------------------


def export_ome_zarr(
    exp: Experiment,
    out: str | os.PathLike[str],
    dataset: str | None = None,
    *,
    metadata: ExperimentMetadata | None = None,
    provenance: bool = True,
    workers: int | None = None,
    compression: str = DEFAULT_COMPRESSION,
    pyramid: bool | None = None,
    ngff_version: str = DEFAULT_NGFF_VERSION,
    overwrite: bool = False,
    on_plane: Callable[[int], None] | None = None,
    engine: Engine | None = None,
) -> ExportResult:
    """Write ``OUT/<dataset>/<position>.ome.zarr`` for every position.

    Args:
        exp: The experiment, discovered (and probed).
        out: The output folder; the dataset is a sub-folder of it.
        dataset: The dataset folder's name (default: the experiment folder's).
        metadata: The experiment's metadata, for the OME-XML, the channels'
            names and colours, the physical sizes and the ``metadata/`` folder.
        provenance: Record the tool, version and time in the OME-XML.
        workers: Decode and compress threads (default: all cores).
        compression: Blosc's compressor: ``zstd`` (default), ``lz4``,
            ``zlib``, or ``none``.
        pyramid: Write sub-resolutions (None: only for planes beyond 4096 pixels).
        ngff_version: ``0.5`` (Zarr v3, sharded; default) or ``0.4`` (Zarr v2).
        overwrite: Replace stores written from other source planes or settings.
        on_plane: Called with the byte count of each plane written.
        engine: Write each position as a task on Dask (:mod:`pyomero_upload.engine`).

    Returns:
        What was written and skipped.

    Raises:
        InputError: The output cannot be written, or a store exists that was
            written from other data (without ``overwrite``); raised before
            anything is written.

    A store that already exists is skipped when it was written from the same
    source planes and settings (same fingerprint).  The dataset folder is
    locked while the export runs (:func:`.frame.run_export`).
    """
    from ..parallel import default_workers

    fmt = StoreFormat(ngff_version, compression)
    _require_zarr()
    writer = OmeZarrWriter(fmt, pyramid)
    result = run_export(exp, out, dataset, writer, metadata=metadata,
                        provenance=provenance, workers=workers or default_workers(),
                        overwrite=overwrite, on_plane=on_plane, engine=engine)
    if writer.profile.planes:  # none with an engine: the planes were written elsewhere
        log.debug("%s", writer.profile.line())
    return result


def _require_zarr() -> None:
    """zarr-python 3 is there, or one line that says how to get it."""
    try:
        from zarr import __version__ as version
    except ImportError:
        version = "0"
    if int(version.split(".")[0]) < 3:
        raise InputError(None, "OME-Zarr export needs zarr-python 3 (Python 3.11 or later): "
                               "pip install 'zarr>=3.1'")


class OmeZarrWriter(ImageWriter):
    """OME-Zarr stores: NGFF 0.5 on sharded Zarr v3 (default) or 0.4 on Zarr v2."""

    format = "ome-zarr"
    suffix = ZARR_SUFFIX
    #: ".<pos>.ome.zarr.XXXXXXXX.part" folders (a store being built, or one being replaced).
    temporaries = (r".+\.ome\.zarr\.[a-z0-9_]{8}\.part",)
    # A shard is assembled in memory: with pandas and PyTables loading beside the
    # last one, the peak went from 105 to 117 MB (7,500 planes, 4 Dec).
    metadata_with_last_position = False

    def __init__(self, fmt: StoreFormat, pyramid: bool | None = None):
        self.fmt = fmt
        self.pyramid = pyramid
        #: Where this export's time went (the planes written in this process).
        self.profile = Profile()

    def fingerprint_options(self, provenance: bool) -> tuple[object, ...]:
        return ("ome-zarr", self.fmt.ngff_version, self.fmt.compression, self.pyramid,
                provenance)

    def read_fingerprint(self, target: Path) -> str | None:
        return read_fingerprint(target)

    def present(self, target: Path) -> bool:
        # A store is a folder: a link in its place (even a dangling one) counts as there.
        return target.exists() or target.is_symlink()

    def plane_work(self, position: Position) -> Callable[[int, Path | None], EncodedPlane]:
        shape, dtype = position.shape, position.dtype
        if shape is None or dtype is None:
            raise ValueError(f"{position.name}: discovered without probing")
        encoder = PlaneEncoder(levels_for(shape, self.pyramid), dtype, self.fmt, self.profile)
        return lambda index, path: encoder.read(position, path)

    def write(self, spec: ImageSpec, planes: Iterator[EncodedPlane], target: Path,
              on_plane: Callable[[int], None] | None) -> None:
        levels = levels_for(spec.plane_shape, self.pyramid)
        write_store(spec, planes, target, levels, self.fmt, on_plane=on_plane,
                    profile=self.profile)


def count_files(store: Path) -> int:
    """How many files a store holds (what a file system or object store sees)."""
    return sum(1 for p in store.rglob("*") if p.is_file())
