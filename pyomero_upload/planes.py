"""Reading single-plane image files: cheap header probes and full decodes.

PNG goes through imagecodecs (libpng, releases the GIL, so a thread pool
scales over the cores), TIFF through tifffile, and anything else Pillow can
open through Pillow.  Every failure becomes an :class:`InputError` naming
the file.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from .errors import InputError

#: Pixel types that OME (and OMERO) can store, by numpy name.
SUPPORTED_DTYPES = (
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "float32",
    "float64",
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TIFF_SUFFIXES = (".tif", ".tiff")

_PNG_DTYPES: dict[int, np.dtype] = {8: np.dtype("uint8"), 16: np.dtype("uint16")}
_PNG_COLOUR_TYPES = {0: "greyscale", 2: "RGB", 3: "palette", 4: "greyscale+alpha", 6: "RGBA"}


@dataclass(frozen=True)
class PlaneInfo:
    """What a plane file's header says, without decoding the pixels."""

    shape: tuple[int, int]
    dtype: np.dtype


def _check_dtype(path: Path, dtype: np.dtype | None) -> np.dtype:
    if dtype is None:
        raise InputError(path, "no pixel type in the file")
    dtype = np.dtype(dtype)
    if dtype.name not in SUPPORTED_DTYPES:
        raise InputError(path, f"pixel type {dtype.name} is not supported by OME")
    return dtype.newbyteorder("=") if dtype.byteorder not in "=|" else dtype


def _probe_png(path: Path) -> PlaneInfo:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:  # unbuffered: a buffered file would read (and copy) 8 KiB for these 33 bytes
        head = os.read(fd, 33)
    finally:
        os.close(fd)
    if len(head) < 33 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise InputError(path, "not a readable PNG file (bad or truncated header)")
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    if colour != 0:
        kind = _PNG_COLOUR_TYPES.get(colour, f"colour type {colour}")
        raise InputError(path, f"{kind} PNG; planes must be single-channel greyscale")
    if depth not in (8, 16):
        raise InputError(path, f"{depth}-bit PNG; only 8- and 16-bit planes are supported")
    return PlaneInfo((height, width), _PNG_DTYPES[depth])


def _probe_tiff(path: Path) -> PlaneInfo:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if len(tif.pages) != 1:
                raise InputError(
                    path, f"TIFF has {len(tif.pages)} pages; planes must be single-page"
                )
            page = tif.pages[0]
            shape, dtype = page.shape, page.dtype
    except InputError:
        raise
    except Exception as exc:  # tifffile raises many types for damaged files
        raise InputError(path, f"not a readable TIFF file ({exc})") from None
    if len(shape) != 2:
        raise InputError(path, f"plane has shape {shape}; planes must be 2-D greyscale")
    return PlaneInfo((int(shape[0]), int(shape[1])), _check_dtype(path, dtype))


def _probe_pillow(path: Path) -> PlaneInfo:
    from PIL import Image

    try:
        with Image.open(path) as im:
            mode, size = im.mode, im.size
    except Exception as exc:
        raise InputError(path, f"not a readable image ({exc})") from None
    dtypes = {"L": "uint8", "I;16": "uint16", "I;16B": "uint16", "I": "int32", "F": "float32"}
    if mode not in dtypes:
        raise InputError(path, f"image mode {mode}; planes must be single-channel greyscale")
    return PlaneInfo((size[1], size[0]), np.dtype(dtypes[mode]))


#: Bytes read at a time by :func:`png_time`: the chunks before the pixels
#: (header, time, text) fit in one read in most files.
PNG_HEAD_READ = 4096


def png_time(path: Path) -> datetime | None:
    """The PNG ``tIME`` chunk (last modification, UTC), if the file has one before its pixels.

    Read unbuffered, :data:`PNG_HEAD_READ` bytes at a time: one read for
    most files (the buffered walk took a read and a seek per chunk, and
    describing each position reads this from every stack's first plane).
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError:
        return None
    try:
        buf = os.read(fd, PNG_HEAD_READ)
        if buf[:8] != PNG_SIGNATURE:
            return None
        base, at = 0, 8  # ``buf`` holds the file from offset ``base``; a chunk starts at ``at``
        while True:
            if at + 15 > base + len(buf):  # this chunk's head and a tIME's 7 bytes
                buf, base = os.pread(fd, PNG_HEAD_READ, at), at
            length, kind = struct.unpack_from(">I4s", buf, at - base)
            if kind == b"tIME" and length == 7:
                y, mo, d, h, mi, s = struct.unpack_from(">HBBBBB", buf, at - base + 8)
                return datetime(y, mo, d, h, mi, s)
            if kind in (b"IDAT", b"IEND"):
                return None
            at += 12 + length  # head, data and CRC
    except (OSError, ValueError, struct.error):  # truncated or damaged: no time
        return None
    finally:
        os.close(fd)


def probe_plane(path: Path) -> PlaneInfo:
    """Read only the header of a plane file: its 2-D shape and pixel type."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".png":
            return _probe_png(path)
        if suffix in TIFF_SUFFIXES:
            return _probe_tiff(path)
        return _probe_pillow(path)
    except OSError as exc:
        raise InputError(path, f"cannot read file ({exc.strerror or exc})") from None


def read_plane(path: Path) -> np.ndarray:
    """Decode one plane file to a 2-D array in native byte order."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".png":
            import imagecodecs

            with open(path, "rb") as fh:
                data = fh.read()
            try:
                arr = imagecodecs.png_decode(data)
            except Exception as exc:
                raise InputError(path, f"damaged or truncated PNG ({exc})") from None
        elif suffix in TIFF_SUFFIXES:
            import tifffile

            try:
                arr = tifffile.imread(path, key=0)
            except Exception as exc:
                raise InputError(path, f"damaged or truncated TIFF ({exc})") from None
        else:
            from PIL import Image

            try:
                with Image.open(path) as im:
                    arr = np.asarray(im)
            except Exception as exc:
                raise InputError(path, f"damaged or unreadable image ({exc})") from None
    except OSError as exc:
        raise InputError(path, f"cannot read file ({exc.strerror or exc})") from None
    if arr.ndim != 2:
        raise InputError(path, f"plane has shape {arr.shape}; planes must be 2-D greyscale")
    dtype = _check_dtype(path, arr.dtype)
    return arr.astype(dtype, copy=False)
