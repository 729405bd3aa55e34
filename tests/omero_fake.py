"""An in-memory fake of exactly the omero-py services pyomero-upload calls.

It holds real ``omero.model`` objects and rtypes, assigns ids as a server
would, keeps every pixel byte (unless ``keep_pixels=False``), records every
remote call, and can be told to fail: wrong password, unknown host, refused
port, a login timeout, or an exception at the k-th call of a method.  The HQL
it answers is the fixed set of queries in ``pyomero_upload.omero.queries``; any
other query is an error, so a new query cannot slip past the contract tests.

Where the client depends on a server rule, the fake enforces it as OMERO does
(each rule names its source) -- these are what the real API does, not what
the client happens to do:

* objects cross "the wire" as copies: a client's object changes nothing
  until saved, and a saved object whose version is older than the server's
  fails (OmeroInterceptor optimistic lock);
* ``RawPixelsStore.save()`` gives the Pixels a new update event and SHA-1
  (RawPixelsBean.save, UpdateEventListener), so a Pixels loaded before it is stale;
* method signatures as in the Ice stubs (``setStack(buf, z, c, t)``);
* the pyramid threshold (PixelsService.requiresPixelsPyramid, 3192 x 3192) and the
  tile rules of RomioPixelBuffer.setTile (x = 0, full width) and
  BfPyramidPixelBuffer (tiles only, on the getTileSize grid, plane by plane);
* session reference counts: closing a client ends the session when its count
  reaches zero unless that client called detachOnDestroy (omero-blitz
  omero/cmd/SessionI.java); a lost connection destroys the router session;
* links are UNIQUE (parent, child, owner_id) (OMERO's schema.sql);
* IAdmin.lookupGroup / ServiceFactory.setSecurityContext;
* a login that times out surfaces as ``omero.ClientError("Obtained null object
  prox")`` (omero-py clients.py createSession).
"""

from __future__ import annotations

import copy
import itertools
import threading
import uuid
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

from pyomero_upload.omero import queries as q

BYTES_PER_PIXEL = {"int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "int32": 4, "uint32": 4,
                   "float": 4, "double": 8}
MAX_MESSAGE = 64 * 1024 * 1024
NULL_PROXY = "Obtained null object prox"  # sic, omero-py 5.23.0 clients.py


@dataclass
class ServerSession:
    """A server-side session: its user, reference count and security context."""

    user: str
    refs: int = 0
    group_id: int = 1


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
    sessions: dict[str, ServerSession] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=lambda: {"user": 1, "lab": 5})
    tables_enabled: bool = True
    keep_pixels: bool = True
    fail: FailAt | None = None
    #: omero.pixeldata.max_plane_width/height and tile_width/height (omero-romio
    #: ConfiguredTileSizes defaults).
    max_plane: tuple[int, int] = (3192, 3192)
    tile_size: tuple[int, int] = (256, 256)
    login_timeout: bool = False

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
        self.upload_block_sizes: list[int] = []
        self.pyramid: dict[int, bool] = {}
        self.sha1: dict[int, str] = {}

    def add_session(self, key: str, user: str) -> None:
        """A session that `omero login` made and detached from (count 0, alive)."""
        self.sessions[key] = ServerSession(user)

    def release(self, key: str, detached: bool) -> None:
        """One reference gone (a client closed or its connection died).

        SessionI: detach always decrements; only a client that did not call
        detachOnDestroy closes the session, and only at a count below 1.
        """
        with self.lock:
            sess = self.sessions.get(key)
            if sess is None:
                return
            sess.refs -= 1
            if not detached and sess.refs < 1:
                del self.sessions[key]

    # bookkeeping -------------------------------------------------------------------
    def record(self, service: str, method: str, sess: FakeSession | None = None) -> None:
        if sess is not None:
            sess.check()
        with self.lock:
            name = f"{service}.{method}"
            self.calls.append((service, method))
            self.counts[name] += 1
            f = self.fail
            if f and f.method == name and f.first <= self.counts[name] < f.first + f.times:
                if sess is not None and isinstance(f.exc, Ice.ConnectionLostException):
                    sess.lose_connection()
                raise f.exc

    def kind(self, cls: str) -> list:
        with self.lock:  # the client uploads positions from several threads
            items = sorted(self.objects.items())
        return [o for (k, _), o in items if k == cls]

    def get(self, cls: str, oid: int):
        return self.objects.get((cls, oid))

    def save(self, obj):
        """IUpdate: store a copy of the client's object; return another copy."""
        with self.lock:
            return copy.deepcopy(self.put(copy.deepcopy(obj)))

    def put(self, obj):
        """Store ``obj`` itself (the server's own objects), checking the rules."""
        with self.lock:
            cls = type(obj).__name__
            if cls.endswith("LinkI"):
                # UNIQUE (parent, child, owner_id) on every link table (schema.sql).
                key = (obj.parent.id.val, obj.child.id.val)
                for (k, oid), other in self.objects.items():
                    if k == cls and (obj.id is None or oid != obj.id.val) and \
                            (other.parent.id.val, other.child.id.val) == key:
                        raise omero.ValidationException(
                            None, None, f"duplicate key value violates unique constraint "
                            f"on {cls[:-1].lower()} (parent, child, owner_id)={key + (1,)}")
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
                # OmeroInterceptor: an update event other than the server's is refused
                # ("You may need to reload the object"); the version stands for it here.
                if hasattr(obj, "getVersion") and unwrap(obj.getVersion()) != unwrap(
                        old.getVersion()):
                    raise omero.OptimisticLockException(
                        None, None, f"{cls}:{obj.id.val} is stale; reload the object")
                if hasattr(obj, "setVersion"):
                    obj.setVersion(rint(unwrap(old.getVersion()) + 1))
            self.objects[(cls, obj.id.val)] = obj
            return obj

    def touch(self, cls: str, oid: int) -> None:
        """A new update event on a stored object (as the server's own writes give it)."""
        with self.lock:
            obj = self.objects[(cls, oid)]
            obj.setVersion(rint(unwrap(obj.getVersion()) + 1))

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


class FakeService:
    """A service proxy bound to one session: dead with its connection."""

    name = "Service"

    def __init__(self, server: FakeServer, sess: FakeSession | None = None):
        self.s, self.sess = server, sess

    def rec(self, method: str) -> None:
        self.s.record(self.name, method, self.sess)


def _copy_link_with_child(s: FakeServer, link):
    out = copy.deepcopy(link)
    out.setChild(copy.deepcopy(s.get(type(link.child).__name__, link.child.id.val)))
    return out


class FakeQuery(FakeService):
    name = "IQuery"

    def _p(self, params) -> dict:
        return {k: unwrap(v) for k, v in params.map.items()}

    def findAllByQuery(self, query, params, ctx=None):  # noqa: N802 - omero-py's name
        self.rec("findAllByQuery")
        return copy.deepcopy(self._find_all(query, self._p(params)))

    def _find_all(self, query, p):
        s = self.s
        if query == q.Q_PROJECT:
            return [o for o in s.kind("ProjectI") if unwrap(o.name) == p["name"]]
        if query == q.Q_DATASET:
            return [o for o in s.kind("DatasetI") if unwrap(o.name) == p["name"]]
        if query == q.Q_DATASET_IN_PROJECT:
            ids = {link.child.id.val for link in s.links("ProjectDatasetLinkI", parent=p["pid"])}
            return [o for o in s.kind("DatasetI")
                    if unwrap(o.name) == p["name"] and o.id.val in ids]
        if query == q.Q_TAG:
            return [o for o in s.kind("TagAnnotationI") if unwrap(o.textValue) == p["text"]]
        if query == q.Q_IMAGES_OF_DATASET:
            ids = [link.child.id.val for link in s.links("DatasetImageLinkI", parent=p["did"])]
            return [s.get("ImageI", i) for i in sorted(ids) if s.get("ImageI", i)]
        if query == q.Q_SOURCE_ANNOTATIONS:
            out = []
            for link in s.kind("ImageAnnotationLinkI"):
                child = s.get(type(link.child).__name__, link.child.id.val)
                if link.parent.id.val in p["ids"] and unwrap(child.ns) == p["ns"]:
                    out.append(_copy_link_with_child(s, link))
            return out
        for kind, hql in q.Q_ANNOTATION_LINKS.items():
            if query == hql:
                return [_copy_link_with_child(s, link)
                        for link in s.links(f"{kind}AnnotationLinkI", parent=p["pid"])]
        raise omero.ApiUsageException(None, None, f"fake does not know query: {query}")

    def findByQuery(self, query, params, ctx=None):  # noqa: N802
        self.rec("findByQuery")
        s = self.s
        p = self._p(params)
        if query == q.Q_PIXELS_TYPE:
            if p["value"] not in BYTES_PER_PIXEL:
                return None
            t = PixelsTypeI(1, True)
            t.setValue(rstring(p["value"]))
            return t
        if query == q.Q_PIXELS:
            found = next((o for o in s.kind("PixelsI") if o.image.id.val == p["iid"]), None)
        elif query == q.Q_IMAGE:
            found = s.get("ImageI", p["iid"])
        elif query == q.Q_MAP_ANNOTATION:
            found = s.get("MapAnnotationI", p["id"])
        else:
            raise omero.ApiUsageException(None, None, f"fake does not know query: {query}")
        with s.lock:
            return copy.deepcopy(found)


class FakeUpdate(FakeService):
    name = "IUpdate"

    def saveAndReturnObject(self, obj, ctx=None):  # noqa: N802
        self.rec("saveAndReturnObject")
        return self.s.save(obj)

    def saveAndReturnArray(self, objs, ctx=None):  # noqa: N802
        self.rec("saveAndReturnArray")
        return [self.s.save(o) for o in objs]

    def saveArray(self, objs, ctx=None):  # noqa: N802
        self.rec("saveArray")
        for o in objs:
            self.s.save(o)


class FakePixelsService(FakeService):
    name = "IPixels"

    def createImage(self, x, y, z, t, channels, ptype, name, description, ctx=None):  # noqa: N802
        s = self.s
        self.rec("createImage")
        image = ImageI()
        image.setName(rstring(name))
        image.setDescription(rstring(description))
        image = s.put(image)
        px = PixelsI()
        px.setImage(ImageI(image.id.val, False))
        for attr, v in (("SizeX", x), ("SizeY", y), ("SizeZ", z), ("SizeC", len(channels)),
                        ("SizeT", t)):
            getattr(px, f"set{attr}")(rint(v))
        px.setPixelsType(copy.deepcopy(ptype))
        order = DimensionOrderI()
        order.setValue(rstring("XYZCT"))
        px.setDimensionOrder(order)
        px = s.put(px)
        for _ in channels:
            ch = ChannelI()
            ch.setLogicalChannel(s.put(LogicalChannelI()))
            ch.setPixels(PixelsI(px.id.val, False))
            px.addChannel(s.put(ch))
        size = x * y * z * len(channels) * t * BYTES_PER_PIXEL[unwrap(ptype.value)]
        if s.keep_pixels:
            s.pixels[px.id.val] = bytearray(size)
        return rlong(image.id.val)

    def setChannelGlobalMinMax(self, pixels_id, c, lo, hi, ctx=None):  # noqa: N802
        self.rec("setChannelGlobalMinMax")
        self.s.minmax = getattr(self.s, "minmax", {})
        self.s.minmax[(pixels_id, c)] = (lo, hi)


def _unsupported(text: str):
    # Java's UnsupportedOperationException reaches Ice clients as an InternalException.
    return omero.InternalException(None, None, text)


class FakeRawPixelsStore(FakeService):
    name = "RawPixelsStore"

    def __init__(self, server, sess=None):
        super().__init__(server, sess)
        self.px = None
        self.closed = False
        self.modified = False
        self.last_plane = -1

    def setPixelsId(self, pid, bypass, ctx=None):  # noqa: N802
        self.rec("setPixelsId")
        self.px = self.s.get("PixelsI", pid)

    def _geometry(self):
        px = self.px
        bpp = BYTES_PER_PIXEL[unwrap(px.pixelsType.value)]
        plane = unwrap(px.sizeX) * unwrap(px.sizeY) * bpp
        return plane, unwrap(px.sizeZ), unwrap(px.sizeC), bpp

    def requiresPixelsPyramid(self, ctx=None):  # noqa: N802
        self.rec("requiresPixelsPyramid")
        mw, mh = self.s.max_plane  # PixelsService.requiresPixelsPyramid
        return unwrap(self.px.sizeX) * unwrap(self.px.sizeY) > mw * mh

    def getTileSize(self, ctx=None):  # noqa: N802
        self.rec("getTileSize")
        if not self._pyramid():
            return [unwrap(self.px.sizeX), 1]  # RomioPixelBuffer: one full row
        return list(self.s.tile_size)

    def _pyramid(self) -> bool:
        mw, mh = self.s.max_plane
        return unwrap(self.px.sizeX) * unwrap(self.px.sizeY) > mw * mh

    def _check_open(self):
        if self.closed:
            raise Ice.ObjectNotExistException()

    def _write(self, method, offset, buf, expected):
        s = self.s
        self.rec(method)
        self._check_open()
        if self._pyramid():  # BfPyramidPixelBuffer.setPlane/setStack/setTimepoint
            raise _unsupported("Non-tile based writing unsupported.")
        if len(buf) > MAX_MESSAGE:
            raise Ice.MemoryLimitException()
        if len(buf) != expected:
            raise omero.ApiUsageException(None, None, f"{method}: {len(buf)} != {expected} bytes")
        with s.lock:
            self.modified = True
            s.pixel_bytes_received += len(buf)
            if s.keep_pixels:
                s.pixels[self.px.id.val][offset : offset + len(buf)] = buf

    def setPlane(self, buf, z, c, t, ctx=None):  # noqa: N802
        plane, sz, sc, _ = self._geometry()
        self._write("setPlane", ((t * sc + c) * sz + z) * plane, buf, plane)

    def setStack(self, buf, z, c, t, ctx=None):  # noqa: N802 - RPS_ice: (buf, z, c, t)
        plane, sz, sc, _ = self._geometry()
        self._write("setStack", (t * sc + c) * sz * plane, buf, plane * sz)

    def setTimepoint(self, buf, t, ctx=None):  # noqa: N802
        plane, sz, sc, _ = self._geometry()
        self._write("setTimepoint", t * sc * sz * plane, buf, plane * sz * sc)

    def setTile(self, buf, z, c, t, x, y, w, h, ctx=None):  # noqa: N802
        plane, sz, sc, bpp = self._geometry()
        self.rec("setTile")
        self._check_open()
        width, height = unwrap(self.px.sizeX), unwrap(self.px.sizeY)
        if self._pyramid():
            # BfPyramidPixelBuffer: tiles on the getTileSize grid (the IFD's tile size
            # comes from the first tile of a plane), planes in order.
            tw, th = self.s.tile_size
            number = (t * sc + c) * sz + z
            if x % tw or y % th or w != min(tw, width - x) or h != min(th, height - y):
                raise _unsupported(f"tile {x},{y} {w}x{h} is off the {tw}x{th} grid")
            if number < self.last_plane:
                raise _unsupported("pyramid planes must be written in order")
            self.last_plane = number
        else:
            if x != 0:  # RomioPixelBuffer.setTile
                raise _unsupported("ROMIO pixel buffer only supports 0 offseted tile writes.")
            if w != width:
                raise _unsupported("ROMIO pixel buffer only supports full row writes.")
        if len(buf) != w * h * bpp or y + h > height:
            raise omero.ApiUsageException(None, None, "setTile: wrong size")
        if len(buf) > MAX_MESSAGE:
            raise Ice.MemoryLimitException()
        base = ((t * sc + c) * sz + z) * plane
        with self.s.lock:
            self.modified = True
            self.s.pixel_bytes_received += len(buf)
            if self.s.keep_pixels:
                data = self.s.pixels[self.px.id.val]
                for row in range(h):
                    off = base + ((y + row) * width + x) * bpp
                    data[off : off + w * bpp] = buf[row * w * bpp : (row + 1) * w * bpp]

    def save(self, ctx=None):
        """RawPixelsBean.save: SHA-1 and a new update event on the Pixels row."""
        self.rec("save")
        self._check_open()
        if not self.modified:
            return None
        pid = self.px.id.val
        with self.s.lock:
            self.s.touch("PixelsI", pid)
            self.s.sha1[pid] = "sha1-of-" + str(pid)
            self.s.pyramid[pid] = self._pyramid()
            self.modified = False
            return copy.deepcopy(self.s.get("PixelsI", pid))

    def close(self, ctx=None):
        self.rec("close")
        self.closed = True


class FakeRendering(FakeService):
    name = "IRenderingSettings"

    def resetDefaultsInSet(self, kind, ids, ctx=None):  # noqa: N802
        self.rec("resetDefaultsInSet")
        self.s.rendered = getattr(self.s, "rendered", []) + list(ids)


class FakeThumbnails(FakeService):
    name = "ThumbnailStore"

    def setPixelsId(self, pid, ctx=None):  # noqa: N802
        self.rec("setPixelsId")
        return True

    def getThumbnailByLongestSide(self, size, ctx=None):  # noqa: N802
        self.rec("getThumbnailByLongestSide")
        self.s.thumbnails = getattr(self.s, "thumbnails", 0) + 1
        return b"\x89PNG fake"

    def close(self, ctx=None):
        self.rec("close")


class FakeTable(FakeService):
    name = "Table"

    def __init__(self, server, sess, name):
        super().__init__(server, sess)
        self.table_name, self.columns = name, None

    def initialize(self, cols, ctx=None):
        self.rec("initialize")
        self.columns = {c.name: (type(c).__name__, []) for c in cols}

    def addData(self, cols, ctx=None):  # noqa: N802
        self.rec("addData")
        for c in cols:
            self.columns[c.name][1].extend(c.values)

    def getOriginalFile(self, ctx=None):  # noqa: N802
        self.rec("getOriginalFile")
        f = OriginalFileI()
        f.setName(rstring(self.table_name))
        f.setMimetype(rstring("OMERO.tables"))
        f = self.s.save(f)
        self.s.tables[f.id.val] = self.columns
        return f

    def close(self, ctx=None):
        self.rec("close")


class FakeResources(FakeService):
    name = "SharedResources"

    def areTablesEnabled(self, ctx=None):  # noqa: N802
        self.rec("areTablesEnabled")
        return self.s.tables_enabled

    def newTable(self, repo, name, ctx=None):  # noqa: N802
        self.rec("newTable")
        return FakeTable(self.s, self.sess, name) if self.s.tables_enabled else None


@dataclass
class EventContext:
    userId: int  # noqa: N815 - omero-py's names
    groupId: int  # noqa: N815
    userName: str  # noqa: N815


class FakeAdmin(FakeService):
    name = "IAdmin"

    def getEventContext(self, ctx=None):  # noqa: N802
        self.rec("getEventContext")
        return EventContext(1, self.sess.server_session.group_id, self.sess.user)

    def lookupGroup(self, name, ctx=None):  # noqa: N802
        self.rec("lookupGroup")
        if name not in self.s.groups:
            raise omero.ApiUsageException(None, None, f"No such group: {name}")
        g = omero.model.ExperimenterGroupI(self.s.groups[name], True)
        g.setName(rstring(name))
        return g


class FakeSession:
    """A ServiceFactory: one Glacier2 session joined to a server session."""

    def __init__(self, server: FakeServer, key: str):
        self.s, self.key = server, key
        self.detached = False
        self.dead = False
        server.sessions[key].refs += 1

    @property
    def server_session(self) -> ServerSession:
        return self.s.sessions[self.key]

    @property
    def user(self) -> str:
        return self.server_session.user

    def check(self) -> None:
        if self.dead:
            raise Ice.ConnectionLostException()

    def lose_connection(self) -> None:
        """Glacier2 destroys the router session with its connection (SessionI destroy)."""
        if not self.dead:
            self.dead = True
            self.s.release(self.key, self.detached)

    def close(self) -> None:
        if not self.dead:
            self.dead = True
            self.s.release(self.key, self.detached)

    def detachOnDestroy(self):  # noqa: N802
        self.s.record("ServiceFactory", "detachOnDestroy", self)
        self.detached = True

    def closeOnDestroy(self):  # noqa: N802
        self.s.record("ServiceFactory", "closeOnDestroy", self)
        self.detached = False

    def setSecurityContext(self, obj):  # noqa: N802
        self.s.record("ServiceFactory", "setSecurityContext", self)
        if not isinstance(obj, omero.model.ExperimenterGroup):
            raise omero.ApiUsageException(None, None, "not a group")
        if obj.id.val not in self.s.groups.values():
            raise omero.SecurityViolation(None, None, "not a member")
        self.server_session.group_id = obj.id.val

    def getAdminService(self):  # noqa: N802
        return FakeAdmin(self.s, self)

    def getQueryService(self):  # noqa: N802
        return FakeQuery(self.s, self)

    def getUpdateService(self):  # noqa: N802
        return FakeUpdate(self.s, self)

    def getPixelsService(self):  # noqa: N802
        return FakePixelsService(self.s, self)

    def createRawPixelsStore(self):  # noqa: N802
        self.s.record("ServiceFactory", "createRawPixelsStore", self)
        return FakeRawPixelsStore(self.s, self)

    def getRenderingSettingsService(self):  # noqa: N802
        return FakeRendering(self.s, self)

    def createThumbnailStore(self):  # noqa: N802
        return FakeThumbnails(self.s, self)

    def sharedResources(self):  # noqa: N802
        return FakeResources(self.s, self)


class FakeClient:
    """Stands in for ``omero.client``; built by ``server.client_factory``."""

    def __init__(self, server: FakeServer, host=None, port=None, args=None):
        if host != server.host:
            raise Ice.DNSException()
        if port != server.port:
            raise Ice.ConnectionRefusedException()
        self.s = server
        self.session: FakeSession | None = None
        server.open_clients += 1

    def createSession(self, user, password):  # noqa: N802
        self.s.record("client", "createSession")
        if self.s.login_timeout:  # three ConnectTimeoutExceptions, then this (clients.py)
            raise omero.ClientError(NULL_PROXY)
        if self.s.users.get(user) != password:
            raise Glacier2.PermissionDeniedException("Password check failed")
        self.s.logins += 1
        key = str(uuid.uuid4())
        self.s.sessions[key] = ServerSession(user)
        self.session = FakeSession(self.s, key)
        return self.session

    def joinSession(self, key):  # noqa: N802
        self.s.record("client", "joinSession")
        if key not in self.s.sessions:
            raise Glacier2.PermissionDeniedException("No such session")
        self.session = FakeSession(self.s, key)
        return self.session

    def getSession(self, blocking=True):  # noqa: N802
        if self.session is None:
            raise omero.ClientError("No session. Use createSession first.")
        return self.session

    def getSessionId(self):  # noqa: N802
        return self.getSession().key

    def createClient(self, secure):  # noqa: N802
        """A second client joined to the same session (clients.py createClient)."""
        self.s.record("client", f"createClient(secure={secure})")
        other = FakeClient(self.s, self.s.host, self.s.port)
        other.joinSession(self.getSessionId())
        return other

    def closeSession(self):  # noqa: N802
        if self.session is not None:
            self.s.record("client", "closeSession")
            self.session.close()
        self.session = None

    def __del__(self):
        if getattr(self, "s", None) is not None:
            self.closeSession()  # as omero-py's __del__ does
            self.s.open_clients -= 1
            self.s = None

    def upload(self, filename, name=None, path=None, type=None, ofile=None, block_size=1024):
        self.s.record("client", "upload", self.session)
        self.s.upload_block_sizes.append(block_size)
        data = Path(filename).read_bytes()
        f = OriginalFileI()
        f.setName(rstring(name or Path(filename).name))
        f.setMimetype(rstring(type or "application/octet-stream"))
        f.setSize(rlong(len(data)))
        f = self.s.save(f)
        self.s.files[f.id.val] = data
        return f

    def submit(self, req, loops=10, ms=500, failonerror=True, ctx=None, failontimeout=True):
        self.s.record("client", "submit", self.session)
        if not isinstance(req, omero.cmd.Delete2):
            raise omero.ApiUsageException(None, None, "fake only knows Delete2")
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
