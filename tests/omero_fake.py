"""An in-memory fake of exactly the omero-py services pyomero-upload calls.

It holds real ``omero.model`` objects and rtypes, assigns ids as a server
would, keeps every pixel byte (unless ``keep_pixels=False``), records every
remote call, and can be told to fail: wrong password, unknown host, refused
port, or an exception at the k-th call of a method.  The HQL it answers is
the fixed set of queries in ``pyomero_upload.omero_client``; any other query
is an error, so a new query cannot slip past the contract tests.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import Glacier2
import Ice
import omero
import omero.clients  # noqa: F401
import omero.cmd
from omero.model import (
    ChannelI,
    DimensionOrderI,
    ImageI,
    LogicalChannelI,
    OriginalFileI,
    PixelsI,
    PixelsTypeI,
)
from omero.rtypes import rint, rlong, rstring, unwrap

from pyomero_upload import omero_client as oc

BYTES_PER_PIXEL = {"int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "int32": 4, "uint32": 4,
                   "float": 4, "double": 8}
MAX_MESSAGE = 64 * 1024 * 1024


@dataclass
class FailAt:
    """Raise ``exc`` on calls ``first``..``first + times - 1`` of ``method``."""

    method: str
    first: int
    exc: Exception
    times: int = 1000


@dataclass
class FakeServer:
    host: str = "omero.test"
    port: int = 4064
    users: dict[str, str] = field(default_factory=lambda: {"alice": "secret"})
    sessions: dict[str, str] = field(default_factory=dict)
    tables_enabled: bool = True
    keep_pixels: bool = True
    fail: FailAt | None = None

    def __post_init__(self):
        self.lock = threading.RLock()
        self.ids = itertools.count(1)
        self.objects: dict[tuple[str, int], Any] = {}
        self.pixels: dict[int, bytearray] = {}
        self.pixel_bytes_received = 0
        self.files: dict[int, bytes] = {}
        self.tables: dict[int, dict[str, list]] = {}
        self.calls: list[tuple[str, str]] = []
        self.counts: Counter[str] = Counter()
        self.logins = 0
        self.open_clients = 0

    # bookkeeping -------------------------------------------------------------------
    def record(self, service: str, method: str) -> None:
        with self.lock:
            name = f"{service}.{method}"
            self.calls.append((service, method))
            self.counts[name] += 1
            f = self.fail
            if f and f.method == name and f.first <= self.counts[name] < f.first + f.times:
                raise f.exc

    def kind(self, cls: str) -> list:
        with self.lock:  # the client uploads positions from several threads
            items = sorted(self.objects.items())
        return [o for (k, _), o in items if k == cls]

    def get(self, cls: str, oid: int):
        return self.objects.get((cls, oid))

    def save(self, obj):
        with self.lock:
            cls = type(obj).__name__
            if obj.id is None:
                obj.setId(rlong(next(self.ids)))
                if hasattr(obj, "setVersion"):
                    obj.setVersion(rint(0))
                if obj.getDetails() is not None:
                    owner = omero.model.ExperimenterI(1, False)
                    obj.getDetails().setOwner(owner)
            else:
                old = self.objects.get((cls, obj.id.val))
                if old is None:
                    raise omero.ValidationException(None, None, f"no {cls}:{obj.id.val}")
                if hasattr(obj, "getVersion") and unwrap(obj.getVersion()) != unwrap(
                        old.getVersion()):
                    raise omero.OptimisticLockException(None, None, f"{cls}:{obj.id.val}")
                if hasattr(obj, "setVersion"):
                    obj.setVersion(rint(unwrap(old.getVersion()) + 1))
            self.objects[(cls, obj.id.val)] = obj
            return obj

    # views for the tests ----------------------------------------------------------------
    def links(self, cls: str, parent: int | None = None, child: int | None = None) -> list:
        return [
            link for link in self.kind(cls)
            if (parent is None or link.parent.id.val == parent)
            and (child is None or link.child.id.val == child)
        ]

    def annotations_of(self, kind: str, oid: int) -> list:
        cls = {"Image": "ImageAnnotationLinkI", "Dataset": "DatasetAnnotationLinkI"}[kind]
        out = []
        for link in self.links(cls, parent=oid):
            child_cls = type(link.child).__name__
            out.append(self.get(child_cls, link.child.id.val) or link.child)
        return out


class FakeQuery:
    def __init__(self, server: FakeServer):
        self.s = server

    def _p(self, params) -> dict:
        return {k: unwrap(v) for k, v in params.map.items()}

    def findAllByQuery(self, query, params, ctx=None):  # noqa: N802 - omero-py's name
        s = self.s
        s.record("IQuery", "findAllByQuery")
        p = self._p(params)
        if query == oc.Q_PROJECT:
            return [o for o in s.kind("ProjectI") if unwrap(o.name) == p["name"]]
        if query == oc.Q_DATASET:
            return [o for o in s.kind("DatasetI") if unwrap(o.name) == p["name"]]
        if query == oc.Q_DATASET_IN_PROJECT:
            ids = {link.child.id.val for link in s.links("ProjectDatasetLinkI", parent=p["pid"])}
            return [o for o in s.kind("DatasetI")
                    if unwrap(o.name) == p["name"] and o.id.val in ids]
        if query == oc.Q_TAG:
            return [o for o in s.kind("TagAnnotationI") if unwrap(o.textValue) == p["text"]]
        if query == oc.Q_IMAGES_OF_DATASET:
            ids = [link.child.id.val for link in s.links("DatasetImageLinkI", parent=p["did"])]
            return [s.get("ImageI", i) for i in sorted(ids) if s.get("ImageI", i)]
        if query == oc.Q_SOURCE_ANNOTATIONS:
            out = []
            for link in s.kind("ImageAnnotationLinkI"):
                child = s.get(type(link.child).__name__, link.child.id.val)
                if link.parent.id.val in p["ids"] and unwrap(child.ns) == p["ns"]:
                    link.setChild(child)
                    out.append(link)
            return out
        if query in (oc.Q_DATASET_ANNOTATIONS, oc.Q_DATASET_SOURCE_MARKS):
            out = []
            for link in s.links("DatasetAnnotationLinkI", parent=p["did"]):
                child = s.get(type(link.child).__name__, link.child.id.val)
                if "ns" not in p or unwrap(child.ns) == p["ns"]:
                    link.setChild(child)
                    out.append(link)
            return out
        raise omero.ApiUsageException(None, None, f"fake does not know query: {query}")

    def findByQuery(self, query, params, ctx=None):  # noqa: N802
        s = self.s
        s.record("IQuery", "findByQuery")
        p = self._p(params)
        if query == oc.Q_PIXELS_TYPE:
            if p["value"] not in BYTES_PER_PIXEL:
                return None
            t = PixelsTypeI(1, True)
            t.setValue(rstring(p["value"]))
            return t
        if query == oc.Q_PIXELS:
            return next((o for o in s.kind("PixelsI") if o.image.id.val == p["iid"]), None)
        if query == "select i from Image i where i.id = :iid":
            return s.get("ImageI", p["iid"])
        raise omero.ApiUsageException(None, None, f"fake does not know query: {query}")


class FakeUpdate:
    def __init__(self, server: FakeServer):
        self.s = server

    def saveAndReturnObject(self, obj, ctx=None):  # noqa: N802
        self.s.record("IUpdate", "saveAndReturnObject")
        return self.s.save(obj)

    def saveAndReturnArray(self, objs, ctx=None):  # noqa: N802
        self.s.record("IUpdate", "saveAndReturnArray")
        return [self.s.save(o) for o in objs]

    def saveArray(self, objs, ctx=None):  # noqa: N802
        self.s.record("IUpdate", "saveArray")
        for o in objs:
            self.s.save(o)


class FakePixelsService:
    def __init__(self, server: FakeServer):
        self.s = server

    def createImage(self, x, y, z, t, channels, ptype, name, description, ctx=None):  # noqa: N802
        s = self.s
        s.record("IPixels", "createImage")
        image = ImageI()
        image.setName(rstring(name))
        image.setDescription(rstring(description))
        image = s.save(image)
        px = PixelsI()
        px.setImage(ImageI(image.id.val, False))
        for attr, v in (("SizeX", x), ("SizeY", y), ("SizeZ", z), ("SizeC", len(channels)),
                        ("SizeT", t)):
            getattr(px, f"set{attr}")(rint(v))
        px.setPixelsType(ptype)
        order = DimensionOrderI()
        order.setValue(rstring("XYZCT"))
        px.setDimensionOrder(order)
        px = s.save(px)
        for _ in channels:
            ch = ChannelI()
            ch.setLogicalChannel(s.save(LogicalChannelI()))
            ch.setPixels(PixelsI(px.id.val, False))
            px.addChannel(s.save(ch))
        size = x * y * z * len(channels) * t * BYTES_PER_PIXEL[unwrap(ptype.value)]
        if s.keep_pixels:
            s.pixels[px.id.val] = bytearray(size)
        return rlong(image.id.val)

    def setChannelGlobalMinMax(self, pixels_id, c, lo, hi, ctx=None):  # noqa: N802
        self.s.record("IPixels", "setChannelGlobalMinMax")
        self.s.minmax = getattr(self.s, "minmax", {})
        self.s.minmax[(pixels_id, c)] = (lo, hi)


class FakeRawPixelsStore:
    def __init__(self, server: FakeServer):
        self.s = server
        self.px = None
        self.closed = False

    def setPixelsId(self, pid, bypass, ctx=None):  # noqa: N802
        self.s.record("RawPixelsStore", "setPixelsId")
        self.px = self.s.get("PixelsI", pid)

    def _geometry(self):
        px = self.px
        bpp = BYTES_PER_PIXEL[unwrap(px.pixelsType.value)]
        plane = unwrap(px.sizeX) * unwrap(px.sizeY) * bpp
        return plane, unwrap(px.sizeZ), unwrap(px.sizeC), bpp

    def _write(self, method, offset, buf, expected):
        s = self.s
        s.record("RawPixelsStore", method)
        if self.closed:
            raise Ice.ObjectNotExistException()
        if len(buf) > MAX_MESSAGE:
            raise Ice.MemoryLimitException()
        if len(buf) != expected:
            raise omero.ApiUsageException(None, None, f"{method}: {len(buf)} != {expected} bytes")
        with s.lock:
            s.pixel_bytes_received += len(buf)
            if s.keep_pixels:
                s.pixels[self.px.id.val][offset : offset + len(buf)] = buf

    def setPlane(self, buf, z, c, t, ctx=None):  # noqa: N802
        plane, sz, sc, _ = self._geometry()
        self._write("setPlane", ((t * sc + c) * sz + z) * plane, buf, plane)

    def setStack(self, buf, c, t, ctx=None):  # noqa: N802
        plane, sz, sc, _ = self._geometry()
        self._write("setStack", (t * sc + c) * sz * plane, buf, plane * sz)

    def setTimepoint(self, buf, t, ctx=None):  # noqa: N802
        plane, sz, sc, _ = self._geometry()
        self._write("setTimepoint", t * sc * sz * plane, buf, plane * sz * sc)

    def setTile(self, buf, z, c, t, x, y, w, h, ctx=None):  # noqa: N802
        plane, sz, sc, bpp = self._geometry()
        self.s.record("RawPixelsStore", "setTile")
        if len(buf) != w * h * bpp:
            raise omero.ApiUsageException(None, None, "setTile: wrong size")
        width = unwrap(self.px.sizeX)
        base = ((t * sc + c) * sz + z) * plane
        with self.s.lock:
            self.s.pixel_bytes_received += len(buf)
            if self.s.keep_pixels:
                data = self.s.pixels[self.px.id.val]
                for row in range(h):
                    off = base + ((y + row) * width + x) * bpp
                    data[off : off + w * bpp] = buf[row * w * bpp : (row + 1) * w * bpp]

    def save(self, ctx=None):
        self.s.record("RawPixelsStore", "save")
        return self.px

    def close(self, ctx=None):
        self.s.record("RawPixelsStore", "close")
        self.closed = True


class FakeRendering:
    def __init__(self, server):
        self.s = server

    def resetDefaultsInSet(self, kind, ids, ctx=None):  # noqa: N802
        self.s.record("IRenderingSettings", "resetDefaultsInSet")
        self.s.rendered = getattr(self.s, "rendered", []) + list(ids)


class FakeThumbnails:
    def __init__(self, server):
        self.s = server

    def setPixelsId(self, pid, ctx=None):  # noqa: N802
        self.s.record("ThumbnailStore", "setPixelsId")
        return True

    def getThumbnailByLongestSide(self, size, ctx=None):  # noqa: N802
        self.s.record("ThumbnailStore", "getThumbnailByLongestSide")
        self.s.thumbnails = getattr(self.s, "thumbnails", 0) + 1
        return b"\x89PNG fake"

    def close(self, ctx=None):
        self.s.record("ThumbnailStore", "close")


class FakeTable:
    def __init__(self, server, name):
        self.s, self.name, self.columns = server, name, None

    def initialize(self, cols, ctx=None):
        self.s.record("Table", "initialize")
        self.columns = {c.name: (type(c).__name__, []) for c in cols}

    def addData(self, cols, ctx=None):  # noqa: N802
        self.s.record("Table", "addData")
        for c in cols:
            self.columns[c.name][1].extend(c.values)

    def getOriginalFile(self, ctx=None):  # noqa: N802
        self.s.record("Table", "getOriginalFile")
        f = OriginalFileI()
        f.setName(rstring(self.name))
        f.setMimetype(rstring("OMERO.tables"))
        f = self.s.save(f)
        self.s.tables[f.id.val] = self.columns
        return f

    def close(self, ctx=None):
        self.s.record("Table", "close")


class FakeResources:
    def __init__(self, server):
        self.s = server

    def areTablesEnabled(self, ctx=None):  # noqa: N802
        self.s.record("SharedResources", "areTablesEnabled")
        return self.s.tables_enabled

    def newTable(self, repo, name, ctx=None):  # noqa: N802
        self.s.record("SharedResources", "newTable")
        return FakeTable(self.s, name) if self.s.tables_enabled else None


@dataclass
class EventContext:
    userId: int  # noqa: N815 - omero-py's names
    groupId: int  # noqa: N815
    userName: str  # noqa: N815


class FakeAdmin:
    def __init__(self, server, user):
        self.s, self.user = server, user

    def getEventContext(self, ctx=None):  # noqa: N802
        self.s.record("IAdmin", "getEventContext")
        return EventContext(1, 1, self.user)


class FakeSession:
    def __init__(self, server, user):
        self.s, self.user = server, user

    def getAdminService(self):  # noqa: N802
        return FakeAdmin(self.s, self.user)

    def getQueryService(self):  # noqa: N802
        return FakeQuery(self.s)

    def getUpdateService(self):  # noqa: N802
        return FakeUpdate(self.s)

    def getPixelsService(self):  # noqa: N802
        return FakePixelsService(self.s)

    def createRawPixelsStore(self):  # noqa: N802
        self.s.record("ServiceFactory", "createRawPixelsStore")
        return FakeRawPixelsStore(self.s)

    def getRenderingSettingsService(self):  # noqa: N802
        return FakeRendering(self.s)

    def createThumbnailStore(self):  # noqa: N802
        return FakeThumbnails(self.s)

    def sharedResources(self):  # noqa: N802
        return FakeResources(self.s)


class FakeClient:
    """Stands in for ``omero.client``; built by ``server.client_factory``."""

    def __init__(self, server: FakeServer, host=None, port=None, args=None):
        if host != server.host:
            raise Ice.DNSException()
        if port != server.port:
            raise Ice.ConnectionRefusedException()
        self.s = server
        self.session = None
        server.open_clients += 1

    def createSession(self, user, password):  # noqa: N802
        self.s.record("client", "createSession")
        if self.s.users.get(user) != password:
            raise Glacier2.PermissionDeniedException("Password check failed")
        self.s.logins += 1
        self.session = FakeSession(self.s, user)
        return self.session

    def joinSession(self, key):  # noqa: N802
        self.s.record("client", "joinSession")
        if key not in self.s.sessions:
            raise Glacier2.PermissionDeniedException("No such session")
        self.session = FakeSession(self.s, self.s.sessions[key])
        return self.session

    def getSession(self):  # noqa: N802
        return self.session

    def createClient(self, secure=True):  # noqa: N802
        """A second client on the same session (unencrypted when secure is False)."""
        self.s.record("client", f"createClient(secure={secure})")
        other = FakeClient(self.s, self.s.host, self.s.port)
        other.session = self.session
        return other

    def closeSession(self):  # noqa: N802
        self.s.record("client", "closeSession")
        self.session = None

    def __del__(self):
        if getattr(self, "s", None) is not None:
            self.s.open_clients -= 1
            self.s = None

    def upload(self, filename, name=None, path=None, type=None, ofile=None, block_size=1024):
        self.s.record("client", "upload")
        data = Path(filename).read_bytes()
        f = OriginalFileI()
        f.setName(rstring(name or Path(filename).name))
        f.setMimetype(rstring(type or "application/octet-stream"))
        f.setSize(rlong(len(data)))
        f = self.s.save(f)
        self.s.files[f.id.val] = data
        return f

    def submit(self, req, loops=10, ms=500, failonerror=True, ctx=None):
        self.s.record("client", "submit")
        assert isinstance(req, omero.cmd.Delete2)
        s = self.s
        for image_id in req.targetObjects.get("Image", []):
            with s.lock:
                for cls in ("DatasetImageLinkI", "ImageAnnotationLinkI"):
                    for key, link in list(s.objects.items()):
                        if key[0] != cls:
                            continue
                        ends = (link.parent.id.val if cls == "ImageAnnotationLinkI"
                                else link.child.id.val)
                        if ends == image_id:
                            del s.objects[key]
                            if cls == "ImageAnnotationLinkI" and not isinstance(
                                    link.child, omero.model.TagAnnotationI):
                                s.objects.pop((type(link.child).__name__, link.child.id.val),
                                              None)
                for px in [p for p in s.kind("PixelsI") if p.image.id.val == image_id]:
                    s.objects.pop(("PixelsI", px.id.val))
                    s.pixels.pop(px.id.val, None)
                    for info in [i for i in s.kind("PlaneInfoI")
                                 if i.pixels.id.val == px.id.val]:
                        s.objects.pop(("PlaneInfoI", info.id.val))
                s.objects.pop(("ImageI", image_id), None)


def client_factory(server: FakeServer):
    def make(host=None, port=None, args=None):
        return FakeClient(server, host, port, args)

    return make
