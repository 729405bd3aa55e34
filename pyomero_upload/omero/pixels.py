"""Sending pixels through RawPixelsStore in as few calls as the server allows.

The store decides how it can be written (omero-romio):

* no pyramid (sizeX * sizeY <= omero.pixeldata.max_plane_width * height,
  3192 * 3192 by default: PixelsService.requiresPixelsPyramid): the ROMIO file
  takes a whole timepoint, stack or plane at once, and tiles only as full-width
  row strips at x = 0 (RomioPixelBuffer.setTile refuses anything else);
* pyramid: only setTile works ("Non-tile based writing unsupported",
  BfPyramidPixelBuffer.setPlane/setStack/setTimepoint); tiles follow the store's
  getTileSize grid, plane after plane (the TIFF IFD takes its tile size from the
  first tile of each plane, BfPyramidPixelBuffer.getIFD).

So the writer asks the store (``requiresPixelsPyramid``, ``getTileSize``)
instead of guessing from byte sizes.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConnectionLostError, OmeroError

if TYPE_CHECKING:
    from .connection import Connection

#: Bytes per pixel call.  omero-py's client allows 250000 KB a message
#: (Ice.MessageSizeMax from omero-blitz Constants.ice MESSAGESIZEMAX, set in
#: omero/clients.py); the server's own limit is its grid configuration's
#: (64 MiB in OMERO's templates) and may be lower.  16 MiB stays well inside
#: both, with room for the request envelope, and keeps each call short to retry.
MAX_CALL_BYTES = 16 * 1024 * 1024


def pixel_unit(size_x: int, size_y: int, size_z: int, size_c: int, itemsize: int,
               pyramid: bool = False) -> str:
    """The largest block one call may carry: 'timepoint', 'stack', 'plane', 'rows' or 'tiles'."""
    if pyramid:
        return "tiles"
    plane = size_x * size_y * itemsize
    if plane * size_z * size_c <= MAX_CALL_BYTES:
        return "timepoint"
    if plane * size_z <= MAX_CALL_BYTES:
        return "stack"
    if plane <= MAX_CALL_BYTES:
        return "plane"
    return "rows"


class PixelWriter:
    """Send one image's planes (in XYZCT order) through its own RawPixelsStore.

    Args:
        conn: the :class:`~pyomero_upload.omero.connection.Connection`.
        pixels_id: the Pixels to fill.
        size_z, size_c, size_t: the image's dimensions.
    """

    def __init__(self, conn: Connection, pixels_id: int, size_z: int, size_c: int, size_t: int):
        self.conn = conn
        self.pixels_id = pixels_id
        self.size_z, self.size_c, self.size_t = size_z, size_c, size_t
        self.calls = 0
        self.unit: str | None = None
        self.pyramid = False
        self.tile_size: tuple[int, int] | None = None
        self.store: Any = None
        self._generation = -1
        self._attempted = False
        self._buffer: np.ndarray | None = None  # one unit of planes, big-endian
        self._fill = 0
        self._index = 0
        self.minmax = [[np.inf, -np.inf] for _ in range(size_c)]
        conn.retry(self._open, "opening the pixel store")
        self.pyramid = bool(self._call("requiresPixelsPyramid"))
        if self.pyramid:
            w, h = self._call("getTileSize")
            self.tile_size = (int(w), int(h))

    def _open(self) -> None:
        if self.store is not None:
            with contextlib.suppress(Exception):  # on a dead session
                self.store.close()
        self._generation = self.conn.generation
        self.store = self.conn.sf.createRawPixelsStore()
        self.store.setPixelsId(self.pixels_id, True)

    def _call(self, method: str, *args: Any) -> Any:
        """A store call, retried; on a new session (after a lost connection) the old
        store is gone, so open another first."""
        def call() -> Any:
            if self._generation != self.conn.generation:
                # Pixels are written once: a store opened on pixels whose file exists is
                # read-only ("Pixel buffer file exists returning read-only ROMIO pixel
                # buffer", omero-romio ome/io/nio/PixelsService.java _getPixelBuffer,
                # and RomioPixelBuffer "Write-method not permitted"), and a pyramid is a
                # temporary TIFF until its store closes (BfPyramidPixelBuffer).  So once
                # a pixel write was attempted, a new session cannot finish the image:
                # stop, and the next run replaces it (it is marked incomplete).
                if self._attempted:
                    s = self.conn.settings
                    what = "a pyramid image" if self.pyramid else "the pixels of an image"
                    raise ConnectionLostError(
                        f"lost the connection to {s.host}:{s.port} while writing {what}; "
                        "run the same command again to replace it")
                self._open()
            return getattr(self.store, method)(*args)

        return self.conn.retry(call, f"RawPixelsStore.{method}")

    def _send(self, method: str, *args: Any) -> None:
        self._attempted = True  # from here on the server may hold some of the pixels
        self._call(method, *args)
        self.calls += 1

    def add(self, plane: np.ndarray) -> None:
        """Queue the next plane; send when a whole unit is complete."""
        if self.unit is None:
            y, x = plane.shape
            self.unit = pixel_unit(x, y, self.size_z, self.size_c, plane.itemsize, self.pyramid)
            planes = {"timepoint": self.size_z * self.size_c, "stack": self.size_z}
            self._buffer = np.empty((planes.get(self.unit, 1), y, x),
                                    plane.dtype.newbyteorder(">"))
        z = self._index % self.size_z
        c = (self._index // self.size_z) % self.size_c
        t = self._index // (self.size_z * self.size_c)
        self._index += 1
        if plane.size:
            mm = self.minmax[c]
            mm[0] = min(mm[0], float(plane.min()))
            mm[1] = max(mm[1], float(plane.max()))
        buffer = self._buffer
        if buffer is None:  # pragma: no cover - set above
            raise RuntimeError("no buffer")
        buffer[self._fill] = plane  # byte order converted in the same pass
        self._fill += 1
        if self.unit == "tiles":
            self._send_tiles(buffer[0], z, c, t)
        elif self.unit == "rows":
            self._send_rows(buffer[0], z, c, t)
        elif self.unit == "plane":
            self._send_unit("setPlane", z, c, t)
        elif self.unit == "stack" and z == self.size_z - 1:
            # setStack(buf, z, c, t): the z is ignored by ROMIO (RomioPixelBuffer
            # setStack uses getStackOffset(c, t)) but is part of the signature.
            self._send_unit("setStack", 0, c, t)
        elif self.unit == "timepoint" and z == self.size_z - 1 and c == self.size_c - 1:
            self._send_unit("setTimepoint", t)

    def _send_unit(self, method: str, *where: int) -> None:
        data = _wire(self._buffer) if self._buffer is not None else b""
        self._fill = 0
        self._send(method, data, *where)

    def _send_rows(self, plane: np.ndarray, z: int, c: int, t: int) -> None:
        self._fill = 0
        height, width = plane.shape
        rows = max(1, MAX_CALL_BYTES // (width * plane.itemsize))
        for y in range(0, height, rows):
            strip = plane[y : y + rows]  # whole rows: contiguous already
            self._send("setTile", _wire(strip), z, c, t, 0, y, width, strip.shape[0])

    def _send_tiles(self, plane: np.ndarray, z: int, c: int, t: int) -> None:
        self._fill = 0
        tw, th = self.tile_size or (256, 256)
        height, width = plane.shape
        for y in range(0, height, th):
            for x in range(0, width, tw):
                tile = np.ascontiguousarray(plane[y : y + th, x : x + tw])
                h, w = tile.shape
                self._send("setTile", _wire(tile), z, c, t, x, y, w, h)

    def finish(self) -> None:
        """Check that every plane came, then save and close the store.

        ``save()`` sets the Pixels' SHA-1 and a new update event (RawPixelsBean.save,
        UpdateEventListener), so any Pixels loaded before it is stale: reload it.
        """
        expected = self.size_z * self.size_c * self.size_t
        if self._index != expected:
            raise OmeroError(f"sent {self._index} planes, expected {expected}")
        try:
            self.store.save()
        finally:
            self.abort()

    def abort(self) -> None:
        """Close the store (best effort: the call may already be failing)."""
        with contextlib.suppress(Exception):
            self.store.close()


def _wire(block: np.ndarray) -> memoryview:
    """The bytes of a C-contiguous array without a copy: IcePy marshals a
    ``sequence<byte>`` from any buffer, and the call is synchronous, so the array
    is not reused before the bytes are on their way (``tobytes()`` would copy
    every pixel once more)."""
    return np.ascontiguousarray(block).data.cast("B")


def read_plane(conn: Connection, pixels_id: int, z: int, c: int, t: int, dtype: Any,
               shape: tuple[int, int]) -> np.ndarray:
    """One plane back from the server (big-endian on the wire), as ``dtype``."""
    store = conn.sf.createRawPixelsStore()
    try:
        store.setPixelsId(pixels_id, True)
        data = store.getPlane(z, c, t)
    finally:
        store.close()
    return np.frombuffer(data, np.dtype(dtype).newbyteorder(">")).reshape(shape).astype(dtype)


__all__ = ["MAX_CALL_BYTES", "PixelWriter", "pixel_unit", "read_plane"]
