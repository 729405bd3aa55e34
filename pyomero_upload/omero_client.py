"""Everything that talks to OMERO.  The only module that imports ``omero``.

Functions take the :class:`Connection` first (ezomero's habit), use only
the omero-py services listed in :data:`SERVICES_USED`, and send pixels in
as few remote calls as the Ice message size allows: a whole timepoint per
call where it fits, else a Z-stack, else a plane, else tiles.
"""

from __future__ import annotations

import contextlib
import logging
import mimetypes
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

try:
    import Glacier2
    import Ice
    import omero
    import omero.clients  # noqa: F401  (registers the object factories)
    import omero.cmd
    import omero.grid
    from omero.model import (
        DatasetAnnotationLinkI,
        DatasetI,
        DatasetImageLinkI,
        FileAnnotationI,
        ImageAnnotationLinkI,
        ImageI,
        LengthI,
        MapAnnotationI,
        NamedValue,
        PixelsI,
        PlaneInfoI,
        ProjectDatasetLinkI,
        ProjectI,
        TagAnnotationI,
        TimeI,
    )
    from omero.model.enums import UnitsLength, UnitsTime
    from omero.rtypes import rint, rstring, rtime, unwrap
except ImportError as _exc:  # pragma: no cover - exercised where omero-py is absent
    OMERO_IMPORT_ERROR: ImportError | None = _exc
else:
    OMERO_IMPORT_ERROR = None

log = logging.getLogger(__name__)

#: What to install when the OMERO libraries are missing.
INSTALL_HINT = (
    "the OMERO Python libraries are not installed: run `make ice-wheel` and then "
    "`pip install .[omero]` (or `pip install omero-py` with a zeroc-ice 3.6.5 wheel "
    "for your Python), or use the omero_uploader Docker image"
)
#: Namespaces, as OMERO.web expects them.
CLIENT_MAP_NS = "openmicroscopy.org/omero/client/mapAnnotation"
BULK_ANNOTATIONS_NS = "openmicroscopy.org/omero/bulk_annotations"
SOURCE_NS = "pyomero-upload/source"
ATTACHMENT_NS = "pyomero-upload/attachment"
#: Bytes per pixel call: well inside Ice.MessageSizeMax (omero-py sets 64 MiB...
#: but servers may use less), with room for the request envelope.
MAX_CALL_BYTES = 16 * 1024 * 1024
TILE = 1024
#: omero-py services this module calls (the fake in the tests implements exactly these).
SERVICES_USED = (
    "IAdmin.getEventContext",
    "IQuery.findAllByQuery",
    "IQuery.findByQuery",
    "IUpdate.saveAndReturnObject",
    "IUpdate.saveAndReturnArray",
    "IUpdate.saveArray",
    "IPixels.createImage",
    "IPixels.setChannelGlobalMinMax",
    "RawPixelsStore.setPixelsId/setTimepoint/setStack/setPlane/setTile/save/close",
    "IRenderingSettings.resetDefaultsInSet",
    "ThumbnailStore.setPixelsId/getThumbnailByLongestSide/close",
    "SharedResources.newTable + Table.initialize/addData/getOriginalFile/close",
    "client.upload",
    "client.submit(Delete2)",
)

# Exit codes for connection failures (the CLI's 1 and 2 are input and usage).
EXIT_AUTH = 3
EXIT_UNKNOWN_HOST = 4
EXIT_REFUSED = 5
EXIT_TIMEOUT = 6
EXIT_OMERO = 7
EXIT_NO_OMERO = 8


class OmeroError(Exception):
    """A failure talking to OMERO: one line for the user and an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_OMERO):
        super().__init__(message)
        self.exit_code = exit_code


def require_omero() -> None:
    if OMERO_IMPORT_ERROR is not None:
        raise OmeroError(f"{INSTALL_HINT} ({OMERO_IMPORT_ERROR})", EXIT_NO_OMERO)


@dataclass
class ConnectionSettings:
    """Where and as whom to connect; never persisted with the password."""

    host: str
    port: int = 4064
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    group: str | None = None
    secure: bool = True
    session_key: str | None = field(default=None, repr=False)
    timeout_s: float = 20.0


def as_omero_error(exc: BaseException, settings: ConnectionSettings) -> OmeroError:
    """A one-line :class:`OmeroError` (with its exit code) for any failure."""
    if isinstance(exc, OmeroError):
        return exc
    where = f"{settings.host}:{settings.port}"
    if isinstance(exc, Ice.ConnectionLostException):
        return OmeroError(f"lost the connection to {where}; run the same command again to "
                          "finish (complete images are kept, incomplete ones replaced)")
    if isinstance(exc, Glacier2.PermissionDeniedException):
        return OmeroError(
            f"login refused for user {settings.user!r} on {where}: wrong user name or password "
            "(or an expired session key)",
            EXIT_AUTH,
        )
    if isinstance(exc, Ice.DNSException):
        return OmeroError(f"unknown host {settings.host!r}", EXIT_UNKNOWN_HOST)
    if isinstance(exc, Ice.ConnectionRefusedException):
        return OmeroError(f"connection refused by {where}: is OMERO running there?", EXIT_REFUSED)
    if isinstance(exc, Ice.TimeoutException):
        return OmeroError(f"no answer from {where} within {settings.timeout_s:.0f} s", EXIT_TIMEOUT)
    if isinstance(exc, Ice.SocketException | Ice.ConnectFailedException):
        return OmeroError(f"cannot connect to {where}: {type(exc).__name__}", EXIT_REFUSED)
    if isinstance(exc, omero.ServerError):
        return OmeroError(f"OMERO error on {where}: {exc.message or type(exc).__name__}")
    return OmeroError(f"OMERO error on {where}: {type(exc).__name__}: {exc}")


class Connection:
    """One logged-in OMERO session; close it (or use ``with``) on every exit path."""

    def __init__(self, client: Any, settings: ConnectionSettings, owns_session: bool):
        self.client = client
        self.login_client: Any = None  # the encrypted client, when pixels go unencrypted
        self.sf = client.getSession()
        self.settings = settings
        self.owns_session = owns_session
        ctx = self.sf.getAdminService().getEventContext()
        self.user_id: int = ctx.userId
        self.group_id: int = ctx.groupId
        self.user_name: str = ctx.userName

    @classmethod
    def open(
        cls, settings: ConnectionSettings, client_factory: Callable[..., Any] | None = None
    ) -> Connection:
        """Log in (or join ``session_key``); errors become :class:`OmeroError`."""
        require_omero()
        factory = client_factory or omero.client
        timeout_ms = str(int(settings.timeout_s * 1000))
        client = None
        try:
            client = factory(
                host=settings.host,
                port=settings.port,
                args=[
                    f"--Ice.Override.ConnectTimeout={timeout_ms}",
                    f"--Ice.Override.Timeout={max(int(timeout_ms) * 6, 120000)}",
                    "--Ice.RetryIntervals=-1",
                ],
            )
            if settings.session_key:
                client.joinSession(settings.session_key)
                owns = False
            else:
                client.createSession(settings.user, settings.password)
                owns = True
            if settings.group:
                _switch_group(client, settings.group)
            conn = cls(client, settings, owns)
            if not settings.secure:
                # Pixels unencrypted over a second client joined to the same session;
                # the login itself went over the encrypted one, closed last.
                conn.login_client, conn.client = client, client.createClient(secure=False)
                conn.sf = conn.client.getSession()
            return conn
        except OmeroError:
            _close_quietly(client)
            raise
        except Exception as exc:
            _close_quietly(client)
            raise as_omero_error(exc, settings) from None

    def close(self) -> None:
        """End the session we created (a joined session is left open) and the client."""
        if self.client is None:
            return
        main = self.login_client or self.client
        try:
            if self.owns_session:
                main.closeSession()
        finally:
            if self.login_client is not None:
                _close_quietly(self.client)
            _close_quietly(main)
            self.client = self.login_client = None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # services --------------------------------------------------------------
    @property
    def query(self):
        return self.sf.getQueryService()

    @property
    def update(self):
        return self.sf.getUpdateService()


def _close_quietly(client: Any) -> None:
    if client is None:
        return
    with contextlib.suppress(Exception):  # closing is best effort
        client.__del__()  # omero-py's documented way to destroy a client


def stored_session() -> tuple[str, int, str, str] | None:
    """(host, port, user, session key) that `omero login` left current, if any."""
    require_omero()
    try:
        from omero.util.sessions import SessionsStore

        host, user, key, port = SessionsStore().get_current()
    except Exception:
        return None
    if not (host and key):
        return None
    return host, int(port or 4064), user, key


def _switch_group(client: Any, group: str) -> None:
    admin = client.getSession().getAdminService()
    try:
        g = admin.lookupGroup(group)
    except omero.ApiUsageException:
        raise OmeroError(f"no OMERO group named {group!r}", EXIT_AUTH) from None
    client.getSession().setSecurityContext(omero.model.ExperimenterGroupI(g.id.val, False))


def retry(fn: Callable[[], Any], what: str, attempts: int = 4, delay_s: float = 1.0) -> Any:
    """Call ``fn``, retrying transient network errors with exponential backoff."""
    for attempt in range(attempts):
        try:
            return fn()
        except (Ice.ConnectionLostException, Ice.TimeoutException, Ice.ConnectFailedException):
            if attempt == attempts - 1:
                raise
            wait = delay_s * 2**attempt
            log.warning("%s: connection problem, retrying in %.0f s", what, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


# --- queries ------------------------------------------------------------------------

Q_PROJECT = (
    "select p from Project p where p.name = :name and p.details.owner.id = :uid order by p.id"
)
Q_DATASET_IN_PROJECT = (
    "select d from Dataset d join d.projectLinks l where d.name = :name "
    "and l.parent.id = :pid and d.details.owner.id = :uid order by d.id"
)
Q_DATASET = (
    "select d from Dataset d where d.name = :name and d.details.owner.id = :uid order by d.id"
)
Q_LINK_PROJECT_DATASET = (
    "select l from ProjectDatasetLink l where l.parent.id = :pid and l.child.id = :did"
)
Q_TAG = (
    "select t from TagAnnotation t where t.textValue = :text and t.details.owner.id = :uid "
    "order by t.id"
)
Q_IMAGES_OF_DATASET = (
    "select i from Image i join i.datasetLinks l where l.parent.id = :did order by i.id"
)
Q_SOURCE_ANNOTATIONS = (
    "select l from ImageAnnotationLink l join fetch l.child a where l.parent.id in (:ids) "
    "and a.ns = :ns"
)
Q_PIXELS_TYPE = "select t from PixelsType t where t.value = :value"
Q_PIXELS = (
    "select p from Pixels p join fetch p.channels c join fetch c.logicalChannel "
    "where p.image.id = :iid"
)
Q_DATASET_ANNOTATIONS = (
    "select l from DatasetAnnotationLink l join fetch l.child a where l.parent.id = :did"
)


def _params(**values: Any):
    p = omero.sys.ParametersI()
    for key, value in values.items():
        if isinstance(value, list):
            p.addIds(value) if key == "ids" else p.map.__setitem__(key, omero.rtypes.wrap(value))
        elif isinstance(value, int):
            p.addLong(key, value)
        else:
            p.addString(key, value)
    return p


def find_project(conn: Connection, name: str):
    found = conn.query.findAllByQuery(Q_PROJECT, _params(name=name, uid=conn.user_id))
    return found[0] if found else None


def find_dataset(conn: Connection, name: str, project=None):
    if project is not None:
        found = conn.query.findAllByQuery(
            Q_DATASET_IN_PROJECT, _params(name=name, pid=project.id.val, uid=conn.user_id)
        )
    else:
        found = conn.query.findAllByQuery(Q_DATASET, _params(name=name, uid=conn.user_id))
    return found[0] if found else None


def ensure_project(conn: Connection, name: str, dry_run: bool = False):
    """The user's project of this name, created if absent. Returns (project, created)."""
    project = find_project(conn, name)
    if project is not None or dry_run:
        return project, project is None
    p = ProjectI()
    p.setName(rstring(name))
    return conn.update.saveAndReturnObject(p), True


def ensure_dataset(
    conn: Connection, name: str, project=None, description: str = "", dry_run: bool = False
):
    """The user's dataset of this name (in ``project``), created and linked if absent."""
    dataset = find_dataset(conn, name, project)
    if dataset is not None or dry_run:
        return dataset, dataset is None
    d = DatasetI()
    d.setName(rstring(name))
    if description:
        d.setDescription(rstring(description))
    dataset = conn.update.saveAndReturnObject(d)
    if project is not None:
        link = ProjectDatasetLinkI()
        link.setParent(ProjectI(project.id.val, False))
        link.setChild(DatasetI(dataset.id.val, False))
        conn.update.saveAndReturnObject(link)
    return dataset, True


def ensure_tags(conn: Connection, texts: Sequence[str]) -> list:
    """Tag annotations for ``texts``: the user's existing tag reused, else created."""
    tags = []
    for text in texts:
        found = conn.query.findAllByQuery(Q_TAG, _params(text=text, uid=conn.user_id))
        if found:
            tags.append(found[0])
            continue
        tag = TagAnnotationI()
        tag.setTextValue(rstring(text))
        tags.append(conn.update.saveAndReturnObject(tag))
    return tags


@dataclass
class ExistingImage:
    id: int
    name: str
    fingerprint: str | None
    complete: bool


def existing_images(conn: Connection, dataset_id: int) -> list[ExistingImage]:
    """Images in the dataset with the fingerprint and state we recorded on them."""
    images = conn.query.findAllByQuery(Q_IMAGES_OF_DATASET, _params(did=dataset_id))
    if not images:
        return []
    ids = [i.id.val for i in images]
    params = _params(ids=ids, ns=SOURCE_NS)
    links = conn.query.findAllByQuery(Q_SOURCE_ANNOTATIONS, params)
    facts: dict[int, dict[str, str]] = {}
    for link in links:
        pairs = {nv.name: nv.value for nv in link.child.getMapValue()}
        facts[link.parent.id.val] = pairs
    out = []
    for image in images:
        pairs = facts.get(image.id.val, {})
        out.append(
            ExistingImage(
                image.id.val,
                unwrap(image.name),
                pairs.get("Source fingerprint"),
                pairs.get("Status") == "complete",
            )
        )
    return out


def delete_images(conn: Connection, ids: Sequence[int]) -> None:
    """Delete images (and their pixels, links and own annotations) on the server."""
    if not ids:
        return
    cmd = omero.cmd.Delete2(targetObjects={"Image": list(ids)})
    conn.client.submit(cmd, loops=120, ms=500)


def _map(pairs: Iterable[tuple[str, str]], ns: str):
    ann = MapAnnotationI()
    ann.setNs(rstring(ns))
    ann.setMapValue([NamedValue(str(k), str(v)) for k, v in pairs])
    return ann


def link_annotations(conn: Connection, target, annotations: Sequence) -> None:
    """Link saved annotations to a dataset or image in one call."""
    links = []
    for ann in annotations:
        if isinstance(target, DatasetI):
            link = DatasetAnnotationLinkI()
            link.setParent(DatasetI(target.id.val, False))
        else:
            link = ImageAnnotationLinkI()
            link.setParent(ImageI(target.id.val, False))
        link.setChild(type(ann)(ann.id.val, False))
        links.append(link)
    if links:
        conn.update.saveArray(links)


def new_maps(conn: Connection, groups: Sequence[tuple[Sequence[tuple[str, str]], str]]) -> list:
    """Save map annotations (pairs, namespace) in one call."""
    anns = [_map(pairs, ns) for pairs, ns in groups if pairs]
    return list(conn.update.saveAndReturnArray(anns)) if anns else []


def attach_file(conn: Connection, target, path: Path, ns: str = ATTACHMENT_NS):
    """Upload a file as it is and attach it."""
    mime = mimetypes.guess_type(path.name)[0] or "text/plain"
    original = conn.client.upload(str(path), name=path.name, type=mime)
    ann = FileAnnotationI()
    ann.setFile(omero.model.OriginalFileI(original.id.val, False))
    ann.setNs(rstring(ns))
    ann = conn.update.saveAndReturnObject(ann)
    link_annotations(conn, target, [ann])
    return ann


def attach_table(conn: Connection, target, name: str, df, fallback_dir: Path | None = None):
    """A DataFrame as an OMERO.table (typed columns), bulk-annotation namespace.

    Falls back to an attached HDF5 file where the server has no tables service.
    """
    resources = conn.sf.sharedResources()
    table = resources.newTable(1, f"{name}.h5") if resources.areTablesEnabled() else None
    if table is None:
        if fallback_dir is None:
            raise OmeroError("the server has no OMERO.tables service")
        h5 = fallback_dir / f"{name}.h5"
        df.to_hdf(h5, key="table", format="table", mode="w", index=False)
        log.warning("no OMERO.tables service: table %s attached as an HDF5 file", name)
        return attach_file(conn, target, h5, BULK_ANNOTATIONS_NS)
    try:
        columns = []
        for col in df.columns:
            values = df[col]
            title = str(col)
            if values.dtype.kind in "iu":
                columns.append(omero.grid.LongColumn(title, "", [int(v) for v in values]))
            elif values.dtype.kind == "f":
                columns.append(omero.grid.DoubleColumn(title, "", [float(v) for v in values]))
            elif values.dtype.kind == "b":
                columns.append(omero.grid.BoolColumn(title, "", [bool(v) for v in values]))
            else:
                text = [str(v) for v in values]
                width = max([len(t.encode()) for t in text] + [1])
                columns.append(omero.grid.StringColumn(title, "", width, text))
        table.initialize([_empty_like(c) for c in columns])
        table.addData(columns)
        original = table.getOriginalFile()
    finally:
        table.close()
    ann = FileAnnotationI()
    ann.setFile(omero.model.OriginalFileI(original.id.val, False))
    ann.setNs(rstring(BULK_ANNOTATIONS_NS))
    ann.setDescription(rstring(name))
    ann = conn.update.saveAndReturnObject(ann)
    link_annotations(conn, target, [ann])
    return ann


def _empty_like(column):
    if isinstance(column, omero.grid.StringColumn):
        return omero.grid.StringColumn(column.name, column.description, column.size, [])
    return type(column)(column.name, column.description, [])


# --- images -------------------------------------------------------------------------

PIXEL_TYPES = {
    "int8": "int8", "uint8": "uint8", "int16": "int16", "uint16": "uint16",
    "int32": "int32", "uint32": "uint32", "float32": "float", "float64": "double",
}


def create_image(
    conn: Connection,
    dataset,
    name: str,
    size: tuple[int, int, int, int, int],
    dtype: np.dtype,
    description: str = "",
    fingerprint: str = "",
):
    """Create an empty image, link it to the dataset at once, mark it incomplete.

    ``size`` is (X, Y, Z, C, T).  Linking first means an interruption never
    leaves an image outside its dataset; the "incomplete" mark means the
    next run replaces it.  Returns (image, pixels_id, source annotation).
    """
    x, y, z, c, t = size
    ptype = conn.query.findByQuery(Q_PIXELS_TYPE, _params(value=PIXEL_TYPES[dtype.name]))
    if ptype is None:
        raise OmeroError(f"the server does not know pixel type {dtype.name}")
    image_id = conn.sf.getPixelsService().createImage(
        x, y, z, t, list(range(c)), ptype, name, description
    )
    image_id = unwrap(image_id)
    link = DatasetImageLinkI()
    link.setParent(DatasetI(dataset.id.val, False))
    link.setChild(ImageI(image_id, False))
    conn.update.saveAndReturnObject(link)
    source = new_maps(
        conn, [([("Source fingerprint", fingerprint), ("Status", "incomplete")], SOURCE_NS)]
    )
    image = ImageI(image_id, False)
    link_annotations(conn, image, source)
    pixels = conn.query.findByQuery(Q_PIXELS, _params(iid=image_id))
    return image, pixels, source[0]


def mark_complete(conn: Connection, source_annotation, fingerprint: str) -> None:
    """The last step of an image: only now does a re-run treat it as done."""
    source_annotation.setMapValue(
        [NamedValue("Source fingerprint", fingerprint), NamedValue("Status", "complete")]
    )
    conn.update.saveAndReturnObject(source_annotation)


def pixel_unit(size_x: int, size_y: int, size_z: int, size_c: int, itemsize: int) -> str:
    """The largest block that fits one call: 'timepoint', 'stack', 'plane' or 'tile'."""
    plane = size_x * size_y * itemsize
    if plane * size_z * size_c <= MAX_CALL_BYTES:
        return "timepoint"
    if plane * size_z <= MAX_CALL_BYTES:
        return "stack"
    if plane <= MAX_CALL_BYTES:
        return "plane"
    return "tile"


class PixelWriter:
    """Send one image's planes (XYZCT order) through its own RawPixelsStore."""

    def __init__(self, conn: Connection, pixels_id: int, size_z: int, size_c: int, size_t: int):
        self.store = conn.sf.createRawPixelsStore()
        self.store.setPixelsId(pixels_id, True)
        self.size_z, self.size_c, self.size_t = size_z, size_c, size_t
        self.calls = 0
        self.unit: str | None = None
        self._buffer: np.ndarray | None = None  # one unit of planes, big-endian
        self._fill = 0
        self._index = 0
        self.minmax = [[np.inf, -np.inf] for _ in range(size_c)]

    def add(self, plane: np.ndarray) -> None:
        """Queue the next plane; send when a whole unit is complete."""
        if self.unit is None:
            y, x = plane.shape
            self.unit = pixel_unit(x, y, self.size_z, self.size_c, plane.itemsize)
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
        if self.unit == "tile":
            self._send_tiles(plane, z, c, t)
            return
        assert self._buffer is not None
        self._buffer[self._fill] = plane  # byte order converted in the same pass
        self._fill += 1
        if self.unit == "plane":
            self._call(self.store.setPlane, z, c, t)
        elif self.unit == "stack" and z == self.size_z - 1:
            self._call(self.store.setStack, c, t)
        elif self.unit == "timepoint" and z == self.size_z - 1 and c == self.size_c - 1:
            self._call(self.store.setTimepoint, t)

    def _call(self, method, *where: int) -> None:
        assert self._buffer is not None and self._fill == len(self._buffer)
        data = self._buffer.tobytes()
        self._fill = 0
        retry(lambda: method(data, *where), "sending pixels")
        self.calls += 1

    def _send_tiles(self, plane: np.ndarray, z: int, c: int, t: int) -> None:
        big = plane.astype(plane.dtype.newbyteorder(">"), copy=False)
        for ty in range(0, plane.shape[0], TILE):
            for tx in range(0, plane.shape[1], TILE):
                tile = np.ascontiguousarray(big[ty : ty + TILE, tx : tx + TILE])
                h, w = tile.shape
                retry(lambda tile=tile, tx=tx, ty=ty, w=w, h=h: self.store.setTile(
                    tile.tobytes(), z, c, t, tx, ty, w, h), "sending a tile")
                self.calls += 1

    def finish(self) -> None:
        """Check that every plane came, save and close the store."""
        expected = self.size_z * self.size_c * self.size_t
        if self._index != expected:
            raise OmeroError(f"sent {self._index} planes, expected {expected}")
        try:
            self.store.save()
        finally:
            self.store.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):  # already failing
            self.store.close()


@dataclass
class ChannelFacts:
    name: str
    color: tuple[int, int, int] | None = None
    excitation_nm: float | None = None
    emission_nm: float | None = None


@dataclass
class PlaneFacts:
    z: int
    c: int
    t: int
    delta_t_s: float | None = None
    exposure_ms: float | None = None
    position_um: tuple[float | None, float | None, float | None] = (None, None, None)


def set_image_metadata(
    conn: Connection,
    image,
    pixels,
    channels: Sequence[ChannelFacts],
    planes: Sequence[PlaneFacts],
    pixel_size_um: float | None = None,
    z_spacing_um: float | None = None,
    time_increment_s: float | None = None,
    acquisition_date: datetime | None = None,
    description: str = "",
) -> None:
    """Physical sizes, channel names/colours/wavelengths, PlaneInfo, date."""
    micron = UnitsLength.MICROMETER
    img = conn.query.findByQuery("select i from Image i where i.id = :iid",
                                 _params(iid=image.id.val))
    if acquisition_date is not None:
        img.setAcquisitionDate(rtime(int(acquisition_date.timestamp() * 1000)))
    if description:
        img.setDescription(rstring(description))
    if pixel_size_um:
        pixels.setPhysicalSizeX(LengthI(pixel_size_um, micron))
        pixels.setPhysicalSizeY(LengthI(pixel_size_um, micron))
    if z_spacing_um:
        pixels.setPhysicalSizeZ(LengthI(z_spacing_um, micron))
    if time_increment_s:
        pixels.setTimeIncrement(TimeI(time_increment_s, UnitsTime.SECOND))
    objects = [img, pixels]
    for channel, facts in zip(pixels.copyChannels(), channels, strict=True):
        lc = channel.getLogicalChannel()
        lc.setName(rstring(facts.name))
        if facts.excitation_nm:
            lc.setExcitationWave(LengthI(facts.excitation_nm, UnitsLength.NANOMETER))
        if facts.emission_nm:
            lc.setEmissionWave(LengthI(facts.emission_nm, UnitsLength.NANOMETER))
        if facts.color:
            r, g, b = facts.color
            channel.setRed(rint(r))
            channel.setGreen(rint(g))
            channel.setBlue(rint(b))
            channel.setAlpha(rint(255))
        objects += [channel, lc]
    conn.update.saveArray(objects)
    infos = []
    for p in planes:
        info = PlaneInfoI()
        info.setPixels(PixelsI(pixels.id.val, False))
        info.setTheZ(rint(p.z))
        info.setTheC(rint(p.c))
        info.setTheT(rint(p.t))
        if p.delta_t_s is not None:
            info.setDeltaT(TimeI(p.delta_t_s, UnitsTime.SECOND))
        if p.exposure_ms is not None:
            info.setExposureTime(TimeI(p.exposure_ms, UnitsTime.MILLISECOND))
        for axis, value in zip("XYZ", p.position_um, strict=True):
            if value is not None:
                getattr(info, f"setPosition{axis}")(LengthI(value, micron))
        infos.append(info)
    if infos:
        conn.update.saveArray(infos)


def finish_rendering(conn: Connection, image_id: int, pixels_id: int, minmax) -> None:
    """Channel min/max from the real pixels, default rendering, a thumbnail."""
    pixels_service = conn.sf.getPixelsService()
    for c, (lo, hi) in enumerate(minmax):
        if np.isfinite(lo):
            pixels_service.setChannelGlobalMinMax(pixels_id, c, float(lo), float(hi))
    conn.sf.getRenderingSettingsService().resetDefaultsInSet("Image", [image_id])
    thumbs = conn.sf.createThumbnailStore()
    try:
        if thumbs.setPixelsId(pixels_id):
            thumbs.getThumbnailByLongestSide(rint(96))
    finally:
        thumbs.close()


Q_DATASET_SOURCE_MARKS = (
    "select l from DatasetAnnotationLink l join fetch l.child a where l.parent.id = :did "
    "and a.ns = :ns"
)


def dataset_source_marks(conn: Connection, dataset_id: int) -> list:
    """Our marker annotations on a dataset (present once it was fully annotated)."""
    links = conn.query.findAllByQuery(Q_DATASET_SOURCE_MARKS, _params(did=dataset_id, ns=SOURCE_NS))
    return [link.child for link in links]


def dataset_summary(conn: Connection, dataset_id: int) -> dict[str, Any]:
    """What a dataset holds now: images with sizes and channels, annotations."""
    images = conn.query.findAllByQuery(Q_IMAGES_OF_DATASET, _params(did=dataset_id))
    out = []
    for image in images:
        px = conn.query.findByQuery(Q_PIXELS, _params(iid=image.id.val))
        out.append({
            "id": image.id.val,
            "name": unwrap(image.name),
            "size": [unwrap(px.sizeX), unwrap(px.sizeY), unwrap(px.sizeZ),
                     unwrap(px.sizeC), unwrap(px.sizeT)],
            "channels": [unwrap(ch.getLogicalChannel().name) for ch in px.copyChannels()],
        })
    links = conn.query.findAllByQuery(Q_DATASET_ANNOTATIONS, _params(did=dataset_id))
    kinds: dict[str, int] = {}
    for link in links:
        kind = type(link.child).__name__.removesuffix("I")
        kinds[kind] = kinds.get(kind, 0) + 1
    return {"dataset_id": dataset_id, "images": out, "annotations": kinds}


__all__ = [
    "Connection", "ConnectionSettings", "OmeroError", "PixelWriter", "ChannelFacts",
    "PlaneFacts",
]
