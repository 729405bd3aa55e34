"""The double's database: an in-memory object graph of ``omero.model`` objects.

Objects are kept as the ``omero.model`` instances the wire delivered, with
references replaced by unloaded proxies and collections unloaded, the way a
row of OMERO's database holds foreign keys and no lists.  Every answer is a
fresh shallow copy, loaded only where a query asked for ``join fetch``.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import omero
import omero.all  # noqa: F401  (every model class, as omero.clients loads them)
import omero.model as M
from omero.rtypes import rlong, rstring, rtime, unwrap

# Enumerations are resolved by value when a client sends a new instance
# (omero-server src/main/java/ome/security/basic/OmeroInterceptor.java, enum handling).
ENUMS: dict[str, list[str]] = {
    "PixelsType": ["int8", "uint8", "int16", "uint16", "int32", "uint32", "float", "double",
                   "bit", "complex", "double-complex"],
    "DimensionOrder": ["XYZCT", "XYZTC", "XYCTZ", "XYCZT", "XYTCZ", "XYTZC"],
    "ChecksumAlgorithm": ["Adler-32", "CRC-32", "MD5-128", "Murmur3-32", "Murmur3-128",
                          "SHA1-160", "File-Size-64"],
    "Format": ["PNG", "text/plain", "OMERO.tables", "Companion/Unknown"],
}
BIT_SIZES = {"int8": 8, "uint8": 8, "int16": 16, "uint16": 16, "int32": 32, "uint32": 32,
             "float": 32, "double": 64, "bit": 1, "complex": 64, "double-complex": 128}

# Not-null columns the client can leave out (omero-model
# src/main/resources/mappings/*.ome.xml, properties marked required="true").
REQUIRED: dict[str, tuple[str, ...]] = {
    "Project": ("name",), "Dataset": ("name",), "Image": ("name",),
    "Pixels": ("image", "pixelsType", "dimensionOrder", "sizeX", "sizeY", "sizeZ", "sizeC",
               "sizeT"),
    "Channel": ("pixels",), "PlaneInfo": ("pixels", "theZ", "theC", "theT"),
    "OriginalFile": ("name", "path"), "FileAnnotation": (), "TagAnnotation": (),
}
LINK_REQUIRED = ("parent", "child")

# Collections are not columns: they are the rows of another table that point back.
COLLECTIONS: dict[tuple[str, str], tuple[str, str]] = {
    ("Project", "datasetLinks"): ("ProjectDatasetLink", "parent"),
    ("Dataset", "projectLinks"): ("ProjectDatasetLink", "child"),
    ("Dataset", "imageLinks"): ("DatasetImageLink", "parent"),
    ("Image", "datasetLinks"): ("DatasetImageLink", "child"),
    ("Image", "pixels"): ("Pixels", "image"),
    ("Pixels", "channels"): ("Channel", "pixels"),
    ("Pixels", "planeInfo"): ("PlaneInfo", "pixels"),
    # Memberships: one GroupExperimenterMap row per (group, user), the user's default
    # group first (omero-model mappings: ExperimenterGroup.groupExperimenterMap,
    # Experimenter.groupExperimenterMap, an ordered list on the child side).
    ("Experimenter", "groupExperimenterMap"): ("GroupExperimenterMap", "child"),
    ("ExperimenterGroup", "groupExperimenterMap"): ("GroupExperimenterMap", "parent"),
    # Collections clients join that the double never fills (no such rows here), so a
    # join on them finds nothing instead of failing.
    ("Pixels", "thumbnails"): ("Thumbnail", "pixels"),
    ("Pixels", "settings"): ("RenderingDef", "pixels"),
    ("Image", "rois"): ("Roi", "image"),
    ("Roi", "shapes"): ("Shape", "roi"),
    ("Image", "wellSamples"): ("WellSample", "image"),
    ("Fileset", "images"): ("Image", "fileset"),
    ("Fileset", "usedFiles"): ("FilesetEntry", "fileset"),
    ("Screen", "plateLinks"): ("ScreenPlateLink", "parent"),
    ("Plate", "screenLinks"): ("ScreenPlateLink", "child"),
    ("Plate", "wells"): ("Well", "plate"),
    ("Plate", "plateAcquisitions"): ("PlateAcquisition", "plate"),
    ("Well", "wellSamples"): ("WellSample", "well"),
}

PRIVATE, READ_ANNOTATE = "rw----", "rwra--"


def kind_of(obj_or_cls: Any) -> str:
    """``ImageI`` -> ``Image``; ``omero.model.Image`` / ``ome.model.core.Image`` -> ``Image``."""
    name = obj_or_cls if isinstance(obj_or_cls, str) else type(obj_or_cls).__name__
    name = name.rsplit(".", 1)[-1]
    return name[:-1] if name.endswith("I") and hasattr(M, name[:-1] + "I") else name


def model_class(kind: str) -> type:
    """The ``omero.model`` implementation class (``XI``) of a kind."""
    cls = getattr(M, kind + "I", None)
    if cls is None:
        raise omero.QueryException(message=f"{kind} is not mapped")
    return cls


def collection_of(kind: str, name: str) -> tuple[str, str] | None:
    """(child kind, back-reference field) of a collection, or None."""
    if name == "annotationLinks":
        return kind + "AnnotationLink", "parent"
    return COLLECTIONS.get((kind, name))


def plain(value: Any) -> Any:
    """A JSON-able, comparable form of a field value."""
    if isinstance(value, M.IObject):
        return {"class": kind_of(value), "id": unwrap(value.id)}
    if isinstance(value, omero.RType):
        return plain(unwrap(value)) if not isinstance(value, omero.RObject) else None
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, M.NamedValue):
        return [value.name, value.value]
    if hasattr(value, "getUnit") and hasattr(value, "getValue"):
        return [value.getValue(), str(value.getUnit())]
    if isinstance(value, bytes):
        return value.hex()
    return value


def fields(obj: Any) -> dict[str, Any]:
    """Column name -> value of a model object (no id, details, version or collections)."""
    out = {}
    attrs = vars(obj)
    for key, value in attrs.items():
        name = key[1:]
        if not key.startswith("_") or name in ("id", "details", "loaded", "version"):
            continue
        if name.endswith(("Seq", "Loaded", "CountPerOwner")) or "__" in name:
            continue
        out[name] = value
    return out


class PixelData:
    """The bytes of one Pixels object in a sparse file, XYZCT order, big-endian as sent:
    zeros until written (the layout of a ROMIO pixels file, RomioPixelBuffer.java)."""

    def __init__(self, path: Path, sizes: tuple[int, int, int, int, int], byte_width: int,
                 pixels_type: str, pyramid: bool) -> None:
        self.size_x, self.size_y, self.size_z, self.size_c, self.size_t = sizes
        self.byte_width = byte_width
        self.pixels_type = pixels_type
        self.pyramid = pyramid
        self.exists = False  # the ROMIO file or the pyramid is on disk (server-side view)
        self.path = path
        #: SHA-1 of each plane read since it was last written (plane index -> hex), so a
        #: state dump hashes only what changed.
        self._plane_sha1: dict[int, str] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.truncate(self.plane_size * self.size_z * self.size_c * self.size_t)

    @property
    def plane_size(self) -> int:
        return self.size_x * self.size_y * self.byte_width

    def offset(self, z: int, c: int, t: int) -> int:
        if not (0 <= z < self.size_z and 0 <= c < self.size_c and 0 <= t < self.size_t):
            raise omero.ApiUsageException(
                message=f"DimensionsOutOfBoundsException: z={z} c={c} t={t} outside "
                        f"Z={self.size_z} C={self.size_c} T={self.size_t}")
        return ((t * self.size_c + c) * self.size_z + z) * self.plane_size

    def read(self, offset: int, length: int) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(length)

    def write(self, offset: int, data: bytes) -> None:
        first = offset // self.plane_size
        last = (offset + max(len(data), 1) - 1) // self.plane_size
        for index in range(first, last + 1):
            self._plane_sha1.pop(index, None)
        with open(self.path, "r+b") as f:
            f.seek(offset)
            f.write(data)

    def plane(self, z: int, c: int, t: int) -> bytes:
        return self.read(self.offset(z, c, t), self.plane_size)

    def plane_sha1(self, z: int, c: int, t: int) -> str:
        """SHA-1 of one plane's bytes (cached until the plane is written again)."""
        index = self.offset(z, c, t) // self.plane_size
        digest = self._plane_sha1.get(index)
        if digest is None:
            digest = self._plane_sha1[index] = hashlib.sha1(self.plane(z, c, t)).hexdigest()
        return digest

    def sha1(self) -> str:
        """SHA-1 of the whole buffer in XYZCT order (RawPixelsBean.save, calculateMessageDigest)."""
        h = hashlib.sha1()
        with open(self.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                h.update(block)
        return h.hexdigest()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


@dataclass
class TableData:
    """One OMERO.table: its columns (as sent to initialize) and rows."""

    file_id: int
    columns: list[Any] | None = None
    rows: int = 0


class Database:
    """Every object the double holds, with ids, events and owners."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.objects: dict[tuple[str, int], Any] = {}
        self.ids = itertools.count(1)
        self.events = itertools.count(1)
        self.pixel_data: dict[int, PixelData] = {}
        self.files: dict[int, bytearray] = {}
        self.tables: dict[int, TableData] = {}
        self.rendering: set[tuple[int, int]] = set()  # (pixels id, user id) with settings
        #: Settings saved through a RenderingEngine (absent: OMERO's defaults), and the
        #: RenderingDef ids (a sequence of their own) of each (pixels id, user id).
        self.rendering_defs: dict[tuple[int, int], dict[str, Any]] = {}
        self.rendering_def_ids: dict[tuple[int, int], int] = {}
        self.rendering_def_seq = itertools.count(1)
        self.passwords: dict[str, str] = {}
        #: Experimenter ids for whom an empty stored password accepts any password
        #: (omero-server ome/security/auth/PasswordUtil.java isPasswordRequired: false
        #: for the guest user).
        self.users_without_password: set[int] = set()
        #: GroupExperimenterMap ids: a sequence of their own, as every OMERO table has.
        self.membership_ids = itertools.count(1)
        for kind, values in ENUMS.items():
            for value in values:
                obj = model_class(kind)()
                obj.setValue(rstring(value))
                if kind == "PixelsType":
                    obj.setBitSize(omero.rtypes.rint(BIT_SIZES[value]))
                self._insert_system(obj)

    # --- users and groups -------------------------------------------------------------
    def _insert_system(self, obj: Any, oid: int | None = None) -> Any:
        obj.setId(rlong(next(self.ids) if oid is None else oid))
        details = M.DetailsI()
        details.setOwner(M.ExperimenterI(0, False))
        details.setGroup(M.ExperimenterGroupI(0, False))
        details.setPermissions(M.PermissionsI("rwr---"))
        obj._details = details
        self.objects[(kind_of(obj), unwrap(obj.id))] = obj
        return obj

    def add_group(self, name: str, perms: str = PRIVATE, oid: int | None = None) -> Any:
        """A new ExperimenterGroup (name unique, as the ``experimentergroup_name_key`` index)."""
        if self.group_by_name(name) is not None:
            raise omero.ValidationException(
                message=f"duplicate key value violates unique constraint: group {name!r}")
        g = M.ExperimenterGroupI()
        g.setName(rstring(name))
        g.setLdap(omero.rtypes.rbool(False))
        self._insert_system(g, oid)
        g.details.setPermissions(M.PermissionsI(perms))
        return g

    def add_user(self, name: str, password: str, groups: list[int],
                 oid: int | None = None) -> Any:
        """A new Experimenter, member of ``groups`` (the first is the default group)."""
        if self.user_by_name(name) is not None:
            raise omero.ValidationException(
                message=f"duplicate key value violates unique constraint: user {name!r}")
        e = M.ExperimenterI()
        e.setOmeName(rstring(name))
        e.setFirstName(rstring(name))
        e.setLastName(rstring(name))
        e.setLdap(omero.rtypes.rbool(False))
        self._insert_system(e, oid)
        self.passwords[name] = password
        e._member_of = []
        for gid in groups:
            self.add_membership(e, gid)
        return e

    def add_membership(self, user: Any, gid: int) -> None:
        """Make ``user`` a member of group ``gid``: ``_member_of`` (what sessions read)
        and the GroupExperimenterMap row queries join (``obj.groupExperimenterMap``)."""
        if gid in user._member_of:
            return
        user._member_of.append(gid)
        link = M.GroupExperimenterMapI()
        link.setParent(M.ExperimenterGroupI(gid, False))
        link.setChild(M.ExperimenterI(unwrap(user.id), False))
        link.setOwner(omero.rtypes.rbool(False))
        self._insert_system(link, next(self.membership_ids))

    def password_ok(self, user: Any, password: str) -> bool:
        """omero-server src/main/java/ome/security/auth/ConfigurablePasswordProvider.java
        comparePasswords: an empty stored password matches any password when none is
        required for the user; otherwise the password must match."""
        name = unwrap(user.omeName)
        if name not in self.passwords:
            return False
        trusted = self.passwords[name]
        if trusted.strip() == "":
            return unwrap(user.id) in self.users_without_password
        return trusted == password

    def group_by_name(self, name: str) -> Any:
        return next((o for (k, _), o in self.objects.items()
                     if k == "ExperimenterGroup" and unwrap(o.name) == name), None)

    def user_by_name(self, name: str) -> Any:
        return next((o for (k, _), o in self.objects.items()
                     if k == "Experimenter" and unwrap(o.omeName) == name), None)

    # --- rows -------------------------------------------------------------------------
    def get(self, kind: str, oid: int) -> Any:
        return self.objects.get((kind, oid)) or next(
            (o for (k, i), o in self.objects.items()
             if i == oid and isinstance(o, getattr(M, kind, ()))), None)

    def of_kind(self, kind: str) -> list[Any]:
        cls = getattr(M, kind, None)
        if cls is None or not isinstance(cls, type):
            raise omero.QueryException(message=f"{kind} is not mapped")
        return [o for o in self.objects.values() if isinstance(o, cls)]

    def children(self, obj: Any, name: str) -> list[Any]:
        """The rows of a collection of ``obj`` (its back-referencing rows)."""
        spec = collection_of(kind_of(obj), name)
        if spec is None:
            raise omero.QueryException(
                message=f"could not resolve property: {name} of: {kind_of(obj)}")
        child_kind, back = spec
        if not hasattr(M, child_kind + "I"):
            return []
        oid = unwrap(obj.id)
        return sorted((o for (k, _), o in self.objects.items() if k == child_kind
                       and getattr(o, "_" + back) is not None
                       and unwrap(getattr(o, "_" + back).id) == oid),
                      key=lambda o: unwrap(o.id))

    def new_event(self) -> int:
        """A new Event row (OMERO records one per transaction) and its id."""
        event = M.EventI()
        event.setId(rlong(next(self.events)))
        event.setTime(now())
        self.objects[("Event", unwrap(event.id))] = event
        return unwrap(event.id)

    def snapshot(self) -> dict[str, Any]:
        """JSON-able dump of every object, pixels and table (the ``--state`` file)."""
        objs = []
        # one pass over the rows for every object's annotation links (not one per object)
        annotations = {unwrap(o.id): o for o in self.objects.values()
                       if isinstance(o, M.Annotation)}
        links: dict[tuple[str, int], list[Any]] = {}
        for (kind, _), li in self.objects.items():
            parent = getattr(li, "_parent", None)
            if kind.endswith("AnnotationLink") and parent is not None:
                links.setdefault((kind[:-len("AnnotationLink")], unwrap(parent.id)),
                                 []).append(li)
        for (kind, oid), o in sorted(self.objects.items(), key=lambda kv: kv[0][1]):
            if kind in ENUMS or kind in ("Event", "GroupExperimenterMap"):
                continue  # bookkeeping rows (memberships are in each user's member_of)
            entry: dict[str, Any] = {
                "class": kind, "id": oid,
                "owner": unwrap(o.details.owner.id), "group": unwrap(o.details.group.id),
                "updateEvent": unwrap(o.details.updateEvent.id)
                if o.details.updateEvent is not None else None,
                "fields": {k: plain(v) for k, v in fields(o).items() if v is not None},
            }
            if hasattr(o, "_annotationLinksSeq"):
                mine = sorted((li for li in links.get((kind, oid), [])
                               if getattr(M, kind + "AnnotationLinkI", None) is not None),
                              key=lambda li: unwrap(li.id))
                entry["annotations"] = [
                    {"link": unwrap(li.id), "id": unwrap(li.child.id),
                     "class": kind_of(annotations.get(unwrap(li.child.id))),
                     "ns": unwrap(getattr(annotations.get(unwrap(li.child.id)), "_ns", None))}
                    for li in mine]
            objs.append(entry)
        pixels = {
            str(pid): {"size": [d.size_x, d.size_y, d.size_z, d.size_c, d.size_t],
                       "type": d.pixels_type, "pyramid": d.pyramid,
                       "planes": {f"{z},{c},{t}": d.plane_sha1(z, c, t)
                                  for t in range(d.size_t) for c in range(d.size_c)
                                  for z in range(d.size_z)}}
            for pid, d in self.pixel_data.items()}
        tables = {str(fid): {"columns": [[type(c).__name__, c.name] for c in t.columns or []],
                             "rows": t.rows} for fid, t in self.tables.items()}
        return {"time": time.time(), "objects": objs, "pixels": pixels, "tables": tables}


def now() -> Any:
    return rtime(int(time.time() * 1000))


def shallow(obj: Any) -> Any:
    """A copy whose references are unloaded proxies and whose collections are unloaded."""
    out = copy.copy(obj)
    for key, value in list(vars(out).items()):
        if key.endswith("Seq"):
            setattr(out, key, [])
            setattr(out, key[:-3] + "Loaded", False)
        elif key != "_details" and isinstance(value, M.IObject):
            setattr(out, key, proxy(value))
    if getattr(obj, "_details", None) is not None:
        out._details = copy.copy(obj._details)
    return out


def proxy(obj: Any) -> Any:
    """An unloaded instance of the same class and id."""
    return type(obj)(unwrap(obj.id), False)
