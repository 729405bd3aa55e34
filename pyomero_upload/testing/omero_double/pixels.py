"""The double's pixel services: IPixels, RawPixelsStore, IRenderingSettings and
ThumbnailStore, with omero-romio's pixel buffer rules."""

from __future__ import annotations

import copy

import omero
import omero.api
import omero.model as M
from omero.rtypes import rint, rlong, rstring, unwrap

from ._base import Servant, Stateful, implements
from .hql import Runner
from .model import PixelData, kind_of, now, shallow
from .update import save_graph

# Above this many pixels per plane the server writes a pyramid (omero-romio
# src/main/java/ome/io/nio/PixelsService.java requiresPixelsPyramid, with the
# omero.pixeldata.max_plane_width/height defaults 3192).
MAX_PLANE = 3192 * 3192
PYRAMID_TILE = 256  # omero.pixeldata.tile_width/height defaults


@implements(omero.api.IPixels)
class PixelsService(Servant):
    def createImage(self, sx, sy, sz, st, channels, ptype, name, description, current):
        # omero-server src/main/java/ome/logic/PixelsImpl.java createImage
        if not channels:
            raise omero.ValidationException(message="Channel list must be filled.")
        if min(sx, sy, sz, st) < 1:  # the pixels table's CHECK (size* > 0) constraints
            raise omero.ValidationException(message="Pixels sizes must be positive")
        ptype = self.load("PixelsType", unwrap(ptype.id))
        image = M.ImageI()
        image.setName(rstring(name))
        if description:
            image.setDescription(rstring(description))
        image.setAcquisitionDate(now())
        pixels = M.PixelsI()
        pixels.setImage(image)
        pixels.setPixelsType(M.PixelsTypeI(unwrap(ptype.id), False))
        order = next(o for o in self.db.of_kind("DimensionOrder") if unwrap(o.value) == "XYZCT")
        pixels.setDimensionOrder(M.DimensionOrderI(unwrap(order.id), False))
        for k, v in zip("XYZCT", (sx, sy, sz, len(channels), st), strict=True):
            getattr(pixels, f"setSize{k}")(rint(v))
        pixels.setSha1(rstring("Pending..."))
        objs = [image, pixels]
        for _ in channels:
            ch = M.ChannelI()
            ch.setPixels(pixels)
            ch.setLogicalChannel(M.LogicalChannelI())
            objs += [ch]
        saved = save_graph(self, [image, pixels] + objs[2:])
        pid = unwrap(saved[1].id)
        width = int(unwrap(ptype.bitSize)) // 8 or 1
        self.db.pixel_data[pid] = PixelData(
            self.db.workdir / "pixels" / str(pid), (sx, sy, sz, len(channels), st), width,
            unwrap(ptype.value), sx * sy > MAX_PLANE)
        return rlong(unwrap(saved[0].id))

    def setChannelGlobalMinMax(self, pid, c, lo, hi, current):
        # omero-server src/main/java/ome/logic/PixelsImpl.java setChannelGlobalMinMax:
        # the channel's StatsInfo (a new one if it has none) takes the global min and
        # max, and the channel is saved (OMERO.web's channel windows read them)
        px = self.load("Pixels", pid)
        channels = self.db.children(px, "channels")
        if not 0 <= c < len(channels):
            raise omero.ApiUsageException(message=f"no channel {c} in pixels {pid}")
        channel = shallow(channels[c])
        ref = getattr(channels[c], "_statsInfo", None)
        stored = self.db.get("StatsInfo", unwrap(ref.id)) if ref is not None else None
        stats = shallow(stored) if stored is not None else M.StatsInfoI()
        stats.setGlobalMin(omero.rtypes.rdouble(lo))
        stats.setGlobalMax(omero.rtypes.rdouble(hi))
        channel.setStatsInfo(stats)
        save_graph(self, [channel])

    def retrievePixDescription(self, pid, current):
        q = ("select p from Pixels p join fetch p.pixelsType join fetch p.channels c "
             "join fetch c.logicalChannel where p.id = :id")
        return Runner(self.db, self.visible).run(q, omero.sys.ParametersI().addId(pid))[0]


@implements(omero.api.IRenderingSettings)
class RenderingSettings(Servant):
    """Rendering settings exist per (pixels, user) once reset; they need the pixels on disk
    (omero-server ome/logic/RenderingSettingsImpl.java reads them through
    PixelsService.getPixelBuffer(pixels, false), which refuses missing pixels)."""

    def _pixels_of(self, kind: str, oid: int) -> list[int]:
        kind = kind_of(kind)
        obj = self.load(kind, oid)
        if kind == "Pixels":
            return [oid]
        if kind == "Image":
            return [unwrap(p.id) for p in self.db.children(obj, "pixels")]
        if kind == "Dataset":
            return [pid for li in self.db.children(obj, "imageLinks")
                    for pid in self._pixels_of("Image", unwrap(li.child.id))]
        raise omero.ApiUsageException(message=f"resetDefaults on {kind} is not supported")

    def _reset(self, pid: int) -> None:
        d = self.db.pixel_data.get(pid)
        if d is None or not d.exists:  # PixelsService._getPixelBuffer, read mode
            raise omero.LockTimeout(
                message="Pixels pyramid missing, being created or import in progress."
                if d is not None and d.pyramid else "Import in progress.",
                backOff=15000, seconds=0)
        self.db.rendering.add((pid, self.session.user_id))
        self.db.rendering_defs.pop((pid, self.session.user_id), None)  # back to defaults

    def resetDefaultsInSet(self, kind, ids, current):
        done = []
        for oid in ids:
            for pid in self._pixels_of(kind, oid):
                self._reset(pid)
            done.append(oid)
        return done

    def resetDefaultsInImage(self, iid, current):
        for pid in self._pixels_of("Image", iid):
            self._reset(pid)

    def resetDefaultsForPixels(self, pid, current):
        self._pixels_of("Pixels", pid)
        self._reset(pid)


@implements(omero.api.RawPixelsStore)
class RawPixelsStore(Stateful):
    """Pixel rules from omero-romio: RomioPixelBuffer (no pyramid) and
    BfPyramidPixelBuffer (pyramid), chosen by PixelsService.requiresPixelsPyramid."""

    pid: int | None = None
    modified = wrote = False
    writable = False

    def _data(self) -> PixelData:
        if self.pid is None:
            raise omero.ApiUsageException(message="setPixelsId has not been called")
        return self.db.pixel_data[self.pid]

    def _bytes(self) -> PixelData:
        """The buffer, for an operation that reads or writes pixel bytes."""
        d = self._data()
        if not d.pyramid and self.writable:
            d.exists = True  # RomioPixelBuffer opens (creates) its file on first access
        return d

    def setPixelsId(self, pid, bypass, current):
        obj = self.db.get("Pixels", pid)
        if obj is None or not self.visible(obj) or pid not in self.db.pixel_data:
            raise omero.ValidationException(message=f"Cannot read pixels id={pid}")
        # PixelsService.java _getPixelBuffer: pixels already on disk (ROMIO file or
        # pyramid) come back read-only; only a new pixels set is written.
        self.writable = not self.db.pixel_data[pid].exists
        self.pid = pid
        self.modified = False

    def _writable(self, d: PixelData) -> None:
        if not self.writable:
            raise omero.ApiUsageException(message=(
                "In read-only mode!" if d.pyramid  # BfPyramidPixelBuffer.setTile
                else "Write-method not permitted."))  # RomioPixelBuffer.throwIfReadOnly

    def getPixelsId(self, current):
        return self._data() and self.pid

    def requiresPixelsPyramid(self, current):
        return self._data().pyramid

    def getTileSize(self, current):
        d = self._data()
        if d.pyramid:
            return [PYRAMID_TILE, PYRAMID_TILE]
        # RomioPixelBuffer.getTileSize: full rows, as many as fit 1 MiB (at least one)
        rows = max(1, min(d.size_y, (1024 * 1024) // (d.size_x * d.byte_width)))
        return [d.size_x, rows]

    def getResolutionLevels(self, current):
        return 1

    def getByteWidth(self, current):
        return self._data().byte_width

    def getPlaneSize(self, current):
        return self._data().plane_size

    def getStackSize(self, current):
        return self._data().plane_size * self._data().size_z

    def getTimepointSize(self, current):
        d = self._data()
        return d.plane_size * d.size_z * d.size_c

    def getTotalSize(self, current):
        d = self._data()
        return d.plane_size * d.size_z * d.size_c * d.size_t

    def isSigned(self, current):
        return self._data().pixels_type.startswith("int") or self._data().pixels_type in (
            "float", "double")

    def isFloat(self, current):
        return self._data().pixels_type in ("float", "double")

    def _no_pyramid(self) -> PixelData:
        d = self._bytes()
        self._writable(d)
        if d.pyramid:  # BfPyramidPixelBuffer.setPlane/setStack/setTimepoint
            raise omero.InternalException(message=(
                "java.lang.UnsupportedOperationException: Non-tile based writing unsupported."))
        return d

    def _write(self, d: PixelData, buf: bytes, planes: list[tuple[int, int, int]]) -> None:
        if len(buf) != d.plane_size * len(planes):
            # RomioPixelBuffer.setPlane/setStack/setTimepoint: buffer length checked
            raise omero.InternalException(message=(
                f"java.nio.BufferOverflowException: buffer of {len(buf)} bytes for "
                f"{len(planes)} plane(s) of {d.plane_size} bytes"))
        # the planes of one call are contiguous in XYZCT order
        d.write(d.offset(*planes[0]), buf)
        self.modified = self.wrote = True

    def setPlane(self, buf, z, c, t, current):
        d = self._no_pyramid()
        self._write(d, buf, [(z, c, t)])

    def setStack(self, buf, z, c, t, current):
        d = self._no_pyramid()
        self._write(d, buf, [(zz, c, t) for zz in range(d.size_z)])

    def setTimepoint(self, buf, t, current):
        d = self._no_pyramid()
        self._write(d, buf, [(z, c, t) for c in range(d.size_c) for z in range(d.size_z)])

    def setTile(self, buf, z, c, t, x, y, w, h, current):
        d = self._bytes()
        self._writable(d)
        if not d.pyramid and x != 0:  # RomioPixelBuffer.setTile
            raise omero.InternalException(message=(
                "java.lang.UnsupportedOperationException: ROMIO pixel buffer only supports "
                "0 offseted tile writes."))
        if not d.pyramid and w != d.size_x:
            raise omero.InternalException(message=(
                "java.lang.UnsupportedOperationException: ROMIO pixel buffer only supports "
                "full row writes."))
        if x < 0 or y < 0 or w < 1 or h < 1 or x + w > d.size_x or y + h > d.size_y:
            raise omero.ApiUsageException(message=f"tile {x},{y} {w}x{h} outside the plane")
        bw = d.byte_width
        if len(buf) != w * h * bw:
            raise omero.InternalException(message="java.nio.BufferOverflowException")
        base, row = d.offset(z, c, t), d.size_x * bw
        if w == d.size_x:  # full rows: one contiguous write
            d.write(base + y * row, buf)
        else:
            for r in range(h):
                d.write(base + (y + r) * row + x * bw, buf[r * w * bw:(r + 1) * w * bw])
        self.modified = self.wrote = True

    def getPlane(self, z, c, t, current):
        return self._bytes().plane(z, c, t)

    def getStack(self, c, t, current):
        d = self._bytes()
        return d.read(d.offset(0, c, t), d.plane_size * d.size_z)

    def getTimepoint(self, t, current):
        d = self._bytes()
        return d.read(d.offset(0, 0, t), d.plane_size * d.size_z * d.size_c)

    def getTile(self, z, c, t, x, y, w, h, current):
        d = self._bytes()
        if x < 0 or y < 0 or x + w > d.size_x or y + h > d.size_y:
            raise omero.ApiUsageException(message=f"tile {x},{y} {w}x{h} outside the plane")
        base, bw, row = d.offset(z, c, t), d.byte_width, d.size_x * d.byte_width
        if w == d.size_x:
            return d.read(base + y * row, h * row)
        return b"".join(d.read(base + (y + r) * row + x * bw, w * bw) for r in range(h))

    def calculateMessageDigest(self, current):
        return bytes.fromhex(self._bytes().sha1())

    def save(self, current):
        # RawPixelsBean.save: sha1 of the buffer, and the Pixels row's update event
        # moves on (UpdateEventListener.java), so earlier-loaded copies are stale.
        if not self.modified or self.pid is None:
            return None
        d = self._data()
        stored = self.db.get("Pixels", self.pid)
        row = copy.copy(stored)
        row.setSha1(rstring(d.sha1()))
        row._details = copy.copy(stored.details)
        row._details.setUpdateEvent(M.EventI(self.db.new_event(), False))
        self.db.objects[("Pixels", self.pid)] = row
        self.modified = False
        return shallow(row)

    def close(self, current):
        self.save(current)  # RawPixelsBean.close calls save()
        if self.pid is not None and self.writable and self.db.pixel_data[self.pid].pyramid \
                and self.wrote:
            # BfPyramidPixelBuffer writes a temporary file, renamed to the pyramid on close
            self.db.pixel_data[self.pid].exists = True
        Stateful.close(self, current)


@implements(omero.api.ThumbnailStore)
class ThumbnailStore(Stateful):
    """omero-server src/main/java/ome/services/ThumbnailBean.java: setPixelsId says
    whether rendering settings exist (the user's or the owner's); thumbnails need them."""

    pid: int | None = None

    def setPixelsId(self, pid, current):
        px = self.load("Pixels", pid)
        self.pid = pid
        owner = unwrap(px.details.owner.id)
        return bool({(pid, self.session.user_id), (pid, owner)} & self.db.rendering)

    def _thumb(self, size: int) -> bytes:
        """A JPEG of the middle plane, channel 0 (what OMERO renders by default, roughly)."""
        import io

        import numpy as np
        from PIL import Image

        if self.pid is None:
            raise omero.ApiUsageException(message="Thumbnail service not ready: Pixels not set.")
        if not self.setPixelsId(self.pid, None):  # ThumbnailBean.errorIfNullRenderingDef
            raise omero.InternalException(message=(
                "Fatal error retrieving rendering settings or settings not loaded for Pixels "
                f"set id:{self.pid}"))
        d = self.db.pixel_data[self.pid]
        dtype = {"float": ">f4", "double": ">f8"}.get(
            d.pixels_type, f">{'u' if d.pixels_type.startswith('u') else 'i'}{d.byte_width}")
        plane = np.frombuffer(d.plane(d.size_z // 2, 0, 0), dtype).reshape(
            d.size_y, d.size_x).astype(float)
        lo, hi = float(plane.min()), float(plane.max())
        img = Image.fromarray(((plane - lo) / ((hi - lo) or 1) * 255).astype("uint8"))
        img.thumbnail((size, size))
        out = io.BytesIO()
        img.save(out, "JPEG")
        return out.getvalue()

    def getThumbnailByLongestSide(self, size, current):
        return self._thumb(unwrap(size) or 96)

    def getThumbnail(self, sx, sy, current):
        return self._thumb(max(unwrap(sx) or 96, unwrap(sy) or 96))

    def getThumbnailByLongestSideSet(self, size, ids, current):
        out = {}
        for pid in ids:
            self.setPixelsId(pid, current)
            out[pid] = self._thumb(unwrap(size) or 96)
        return out

    def thumbnailExists(self, sx, sy, current):
        return self.pid is not None

    def resetDefaults(self, current):
        pass

    def createThumbnails(self, current):
        pass

    def isInProgress(self, current):
        return False
