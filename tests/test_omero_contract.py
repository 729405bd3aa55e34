"""Contract tests: the real client against the OMERO double over TCP.

The CLI (``main([...])``), ``PyOmeroUploader`` and the original's
``upload_cli`` talk through the real, unmodified ``omero.client`` to
``pyomero_upload.testing.omero_double`` (SSL by default, as users connect),
which enforces OMERO's server rules (see its docstring).  What the upload
left behind is read back over the same API as a separate login of the same
user: structure and metadata through IQuery, every plane through
``RawPixelsStore.getPlane``, tables through OMERO.tables, files through
``RawFileStore``; sessions from the double's state.  Each test logs in as its
own new user, so one double serves the module.

Failures are injected on the client side only (the double never lies): a
store call that drops the client's TCP connection first (as a network would),
or a function of ``pyomero_upload.omero`` that raises.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest

pytest.importorskip("omero", reason="omero-py not installed (make install-omero)")

import Ice  # noqa: E402
import omero  # noqa: E402
import omero.clients  # noqa: E402  (every model class, as the client loads them)
import omero.cmd  # noqa: E402
import omero.grid  # noqa: E402
from omero.rtypes import rstring, unwrap  # noqa: E402
from omero.sys import ParametersI  # noqa: E402

from helpers import HAVE_REAL_DEMO, demo_planes, read_png  # noqa: E402
from pyomero_upload import cli  # noqa: E402
from pyomero_upload import demo_data as dd  # noqa: E402
from pyomero_upload.cli import main  # noqa: E402
from pyomero_upload.model import (  # noqa: E402
    ATTACHMENT_NS,
    BULK_ANNOTATIONS_NS,
    CLIENT_MAP_NS,
    SOURCE_NS,
)
from pyomero_upload.omero import annotations, connection, pixels  # noqa: E402
from pyomero_upload.testing.omero_double import free_port  # noqa: E402
from pyomero_upload.upload_cli import main as legacy_main  # noqa: E402

CHANNELS = ["Brightfield", "DIC", "GFP"]
PROVENANCE_NS = "pyomero-upload/provenance"
_names = itertools.count(1)
#: Logins the tests make themselves (admin, Reader) are not the client's: not counted.
_QUIET = threading.local()


class quiet:  # noqa: N801 - used as a context manager
    def __enter__(self):
        _QUIET.on = True

    def __exit__(self, *exc):
        _QUIET.on = False


# --- the double and its users ------------------------------------------------------------


@dataclass
class User:
    name: str
    password: str
    id: int
    group_id: int


def new_user(double, extra_groups: list[int] = ()) -> User:
    """A new user in a new private group of their own (through IAdmin, as root)."""
    c = omero.client(double.host, double.port)
    try:
        with quiet():
            admin = c.createSession(double.user, double.password).getAdminService()
        n = next(_names)
        g = omero.model.ExperimenterGroupI()
        g.setName(rstring(f"group{n}-{uuid.uuid4().hex[:6]}"))
        gid = admin.createGroup(g)
        e = omero.model.ExperimenterI()
        name = f"user{n}-{uuid.uuid4().hex[:6]}"
        e.setOmeName(rstring(name))
        e.setFirstName(rstring("A"))
        e.setLastName(rstring("User"))
        uid = admin.createExperimenterWithPassword(
            e, rstring("pw-" + name), omero.model.ExperimenterGroupI(gid, False),
            [omero.model.ExperimenterGroupI(g, False) for g in extra_groups])
        return User(name, "pw-" + name, uid, gid)
    finally:
        c.__del__()


def new_group(double, name: str) -> int:
    c = omero.client(double.host, double.port)
    try:
        g = omero.model.ExperimenterGroupI()
        g.setName(rstring(name))
        return c.createSession(double.user, double.password).getAdminService().createGroup(g)
    finally:
        c.__del__()


class Calls:
    """What the client sent, counted on the client side: every call on a
    RawPixelsStore (with the bytes), logins, joins and second clients."""

    def __init__(self):
        self.counts: Counter[str] = Counter()
        self.pixel_bytes = 0
        self.drop: tuple[str, int, int] | None = None  # (method, first call, times)
        self.lock = threading.Lock()

    def pixel_calls(self) -> int:
        return sum(n for k, n in self.counts.items()
                   if k in ("setPlane", "setStack", "setTimepoint", "setTile"))


class CountingStore:
    """A RawPixelsStore proxy that counts calls and, when told, drops the client's
    connection just before a call (the call then fails as on a dead network)."""

    def __init__(self, store, calls: Calls):
        self._store, self._calls = store, calls

    def __getattr__(self, name):
        real = getattr(self._store, name)

        def call(*args):
            calls = self._calls
            with calls.lock:
                calls.counts[name] += 1
                n = calls.counts[name]
                if name in ("setPlane", "setStack", "setTimepoint", "setTile"):
                    calls.pixel_bytes += memoryview(args[0]).nbytes
            drop = calls.drop
            if drop and drop[0] == name and drop[1] <= n < drop[1] + drop[2]:
                # Forcefully close the TCP connection the session lives on: the double
                # (as Glacier2) destroys the router session with it.
                self._store.ice_getConnection().close(True)
            return real(*args)
        return call


@pytest.fixture
def calls(monkeypatch):
    c = Calls()
    real_open = pixels.PixelWriter._open

    def _open(self):
        real_open(self)
        c.counts["createRawPixelsStore"] += 1
        self.store = CountingStore(self.store, c)

    monkeypatch.setattr(pixels.PixelWriter, "_open", _open)
    base = omero.clients.BaseClient
    for method in ("createSession", "joinSession", "createClient"):
        real = getattr(base, method)

        def wrapped(self, *args, _real=real, _name=method, **kwargs):
            key = _name + (f"(secure={args[0] if args else kwargs.get('secure')})"
                           if _name == "createClient" else "")
            # joinSession and createClient log in through createSession(uuid, uuid):
            # count the outer call only
            if not getattr(_QUIET, "on", False) and not (
                    _name == "createSession" and args and args[0] == args[1]):
                c.counts[key] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(base, method, wrapped)
    return c


@pytest.fixture
def alice(double, monkeypatch, calls):
    """A fresh user; OMERO_PASSWORD set, no other OMERO_* and no stored session."""
    user = new_user(double)
    monkeypatch.setenv("OMERO_PASSWORD", user.password)
    for var in ("OMERO_HOST", "OMERO_USER", "OMERO_PORT", "OMERO_GROUP", "OMERO_SESSION_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(connection, "stored_session", lambda environ=None: None)
    monkeypatch.setattr(connection.time, "sleep", lambda s: None)  # retries without waiting
    return user


def upload(double, user, data, *extra, dataset="run1"):
    return main(["-q", "upload", str(data), "--dataset", dataset, "--host", double.host,
                 "--port", str(double.port), "--user", user.name, *extra])


# --- reading back, as the same user --------------------------------------------------------


class Reader:
    """A separate login of the user: reads what the upload left through the API."""

    def __init__(self, double, user: User):
        self.client = omero.client(double.host, double.port)
        with quiet():
            self.sf = self.client.createSession(user.name, user.password)
        self.q = self.sf.getQueryService()
        self.user = user

    def close(self):
        self.client.__del__()

    def all(self, hql: str, **p):
        params = ParametersI()
        for k, v in p.items():
            params.addLong(k, v) if isinstance(v, int) else params.addString(k, v)
        return self.q.findAllByQuery(hql, params)

    def kind(self, kind: str, order: str = "id"):
        return self.all(f"select x from {kind} x where x.details.owner.id = :uid "
                        f"order by x.{order}", uid=self.user.id)

    def images(self, dataset_id: int):
        return self.all("select i from Image i join i.datasetLinks l where l.parent.id = :did "
                        "order by i.id", did=dataset_id)

    def image(self, name: str):
        (found,) = [i for i in self.kind("Image") if unwrap(i.name) == name]
        return found

    def pixels(self, image_id: int):
        (px,) = self.all("select p from Pixels p join fetch p.pixelsType join fetch p.channels c "
                         "join fetch c.logicalChannel where p.image.id = :iid", iid=image_id)
        return px

    def array(self, image_id: int) -> np.ndarray:
        """Every plane through RawPixelsStore.getPlane, as (T, C, Z, Y, X)."""
        px = self.pixels(image_id)
        sx, sy, sz, sc, st = (unwrap(getattr(px, f"size{d}")) for d in "XYZCT")
        dtype = np.dtype(unwrap(px.pixelsType.value)).newbyteorder(">")
        store = self.sf.createRawPixelsStore()
        try:
            store.setPixelsId(px.id.val, True)
            out = np.empty((st, sc, sz, sy, sx), dtype)
            for t in range(st):
                for c in range(sc):
                    for z in range(sz):
                        out[t, c, z] = np.frombuffer(store.getPlane(z, c, t), dtype).reshape(
                            sy, sx)
        finally:
            store.close()
        return out

    def annotations(self, kind: str, oid: int):
        links = self.all(f"select l from {kind}AnnotationLink l join fetch l.child a "
                         "where l.parent.id = :pid", pid=oid)
        return [lk.child for lk in sorted(links, key=lambda lk: lk.id.val)]

    def tag_links(self, kind: str) -> list[tuple[int, int]]:
        out = []
        for parent in self.kind(kind):
            out += [(parent.id.val, a.id.val) for a in self.annotations(kind, parent.id.val)
                    if isinstance(a, omero.model.TagAnnotationI)]
        return out

    def table(self, file_id: int) -> dict[str, tuple[str, list]]:
        table = self.sf.sharedResources().openTable(omero.model.OriginalFileI(file_id, False))
        try:
            cols = table.getHeaders()
            data = table.readCoordinates(list(range(table.getNumberOfRows())))
            return {h.name: (type(h).__name__, list(c.values))
                    for h, c in zip(cols, data.columns, strict=True)}
        finally:
            table.close()

    def file(self, file_id: int) -> bytes:
        store = self.sf.createRawFileStore()
        try:
            store.setFileId(file_id)
            return store.read(0, store.size())
        finally:
            store.close()

    def has_thumbnail(self, pixels_id: int) -> bool:
        thumbs = self.sf.createThumbnailStore()
        try:
            return bool(thumbs.setPixelsId(pixels_id)) and thumbs.getThumbnailByLongestSide(
                omero.rtypes.rint(96))[:2] == b"\xff\xd8"
        finally:
            thumbs.close()


@pytest.fixture
def reader(double, alice):
    r = Reader(double, alice)
    yield r
    r.close()


def sessions_of(double, user: User) -> list[dict]:
    return [s for s in double.state()["sessions"] if s["user"] == user.name]


def alive_once_settled(double, user: User, want: int, timeout: float = 60.0) -> list[bool]:
    """The user's sessions' alive flags, once ``want`` of them are alive or after
    ``timeout``.  A session whose client went without destroySession (a timeout
    under load) ends when Glacier2 sees its connection close, asynchronously, as
    on a real server; so the state is polled, and the caller asserts on it."""
    deadline = time.monotonic() + timeout
    while True:
        flags = [s["alive"] for s in sessions_of(double, user)]
        if flags.count(True) == want or time.monotonic() > deadline:
            return flags
        threading.Event().wait(0.05)  # time.sleep is patched to a no-op for retries


def check_planes(r: Reader, image, demo):
    data = r.array(image.id.val)
    assert data.shape == (3, 3, 5, 512, 512)
    for t, c, z, src in demo_planes(demo, unwrap(image.name)):
        np.testing.assert_array_equal(data[t - 1, CHANNELS.index(c), z - 1], read_png(src))


@pytest.fixture
def uploaded(double, alice, demo, reader, calls):
    assert upload(double, alice, demo) == 0
    return reader


# --- the upload ---------------------------------------------------------------------------


def test_structure(uploaded, double, alice, calls):
    r = uploaded
    (project,) = r.kind("Project")
    (dataset,) = r.kind("Dataset")
    assert unwrap(project.name) == LAB["project"]
    assert unwrap(dataset.name) == "run1"
    assert unwrap(dataset.description).startswith(LAB["aim"])
    links = r.all("select l from ProjectDatasetLink l where l.parent.id = :pid",
                  pid=project.id.val)
    assert [lk.child.id.val for lk in links] == [dataset.id.val]
    images = r.kind("Image")
    assert [unwrap(i.name) for i in images] == ["pos001", "pos002", "pos003"]
    assert [i.id.val for i in r.images(dataset.id.val)] == [i.id.val for i in images]
    assert calls.counts["createSession"] == 1 and calls.counts["joinSession"] == 0
    # one login, and the session we created is ended (the Reader's is the other one)
    ours = alive_once_settled(double, alice, 1)
    assert len(ours) == 2 and ours.count(True) == 1


def test_every_plane_equals_its_source(uploaded, demo):
    for image in uploaded.kind("Image"):
        check_planes(uploaded, image, demo)


def test_few_pixel_calls(uploaded, calls):
    # one call per timepoint (3 C x 5 Z x 512 x 512 x 2 B = 7.9 MB each), not 135 setPlane
    assert calls.counts["setTimepoint"] == 9 and calls.pixel_calls() == 9
    assert calls.counts["setPlane"] == 0
    assert calls.counts["createRawPixelsStore"] == 3  # one store per image
    assert calls.pixel_bytes == 135 * 512 * 512 * 2


def test_physical_metadata(uploaded, calls, monkeypatch):
    r = uploaded
    image = r.image("pos002")
    px = r.pixels(image.id.val)
    assert unwrap(px.pixelsType.value) == "uint16"
    assert px.getPhysicalSizeZ().getValue() == pytest.approx(0.6)
    assert str(px.getPhysicalSizeZ().getUnit()) == "MICROMETER"
    assert px.getTimeIncrement().getValue() == 300
    assert unwrap(image.acquisitionDate) is not None
    channels = px.copyChannels()
    assert [unwrap(c.getLogicalChannel().name) for c in channels] == CHANNELS
    gfp = channels[2]
    assert (unwrap(gfp.red), unwrap(gfp.green), unwrap(gfp.blue)) == (0, 255, 0)
    assert gfp.getLogicalChannel().getEmissionWave().getValue() == 535
    infos = r.all("select i from PlaneInfo i where i.pixels.id = :pid", pid=px.id.val)
    assert len(infos) == 45
    info = next(i for i in infos if (unwrap(i.theT), unwrap(i.theC), unwrap(i.theZ)) == (0, 2, 0))
    assert info.getDeltaT().getValue() == 19.0
    assert info.getExposureTime().getValue() == 7
    assert info.getPositionX().getValue() == 10846.5
    # rendering settings exist (resetDefaults) and a thumbnail renders
    assert all(r.has_thumbnail(r.pixels(i.id.val).id.val) for i in r.kind("Image"))


def test_channel_min_max_from_the_real_pixels(double, alice, demo, reader, monkeypatch):
    sent = {}
    real = connection._Retrying.__getattr__

    def spy(self, method):
        fn = real(self, method)
        if method != "setChannelGlobalMinMax":
            return fn

        def call(pid, c, lo, hi):
            sent[(pid, c)] = (lo, hi)
            return fn(pid, c, lo, hi)
        return call

    monkeypatch.setattr(connection._Retrying, "__getattr__", spy)
    assert upload(double, alice, demo) == 0
    image = reader.image("pos002")
    pid = reader.pixels(image.id.val).id.val
    data = reader.array(image.id.val)
    assert sent[(pid, 2)] == (data[:, 2].min(), data[:, 2].max())
    assert len(sent) == 9


#: What the demo's lab files say: the real demo's where it is present, else the
#: values the synthetic twin (pyomero_upload.demo_data) writes.
LAB = {
    "project": "Morphology detection", "aim": "Aim: Compare morphology",
    "config": r"C:\Users\Public\Microscope control\Micromanager config files"
              r"\Batgirl5_9_18noemissionfilter.txt",
    "tags": ["28-Sep-2018", "Batgirl"],
} if HAVE_REAL_DEMO else {
    "project": dd.PROJECT, "aim": f"Aim: {dd.AIM}", "config": dd.CONFIG_FILE,
    "tags": list(dd.TAGS),
}


def _pairs(ann):
    return [(nv.name, nv.value) for nv in ann.getMapValue()]


def test_annotations(uploaded):
    r = uploaded
    (dataset,) = r.kind("Dataset")
    on_dataset = r.annotations("Dataset", dataset.id.val)
    maps = {unwrap(a.ns): a for a in on_dataset if isinstance(a, omero.model.MapAnnotationI)}
    kv = _pairs(maps[CLIENT_MAP_NS])
    assert ("Project", LAB["project"]) in kv
    assert ("Micromanager config file", LAB["config"]) in kv  # a Windows path, colon and all
    prov = dict(_pairs(maps[PROVENANCE_NS]))
    assert prov["Uploaded With"].startswith("pyomero-upload ")
    assert "PyOmeroUpload" in prov["Citation"]
    tags = sorted(unwrap(a.textValue) for a in on_dataset
                  if isinstance(a, omero.model.TagAnnotationI))
    assert tags == sorted(LAB["tags"])
    files = [a for a in on_dataset if isinstance(a, omero.model.FileAnnotationI)]
    tables = [f for f in files if unwrap(f.ns) == BULK_ANNOTATIONS_NS]
    assert sorted(unwrap(t.description) for t in tables) == sorted(
        ["Channels", "Z_sectioning", "Time_settings", "Points", "Pumps", "Switching_parameters"])
    points = r.table(next(t.file.id.val for t in tables if unwrap(t.description) == "Points"))
    assert points["X position"][0] == "DoubleColumn" and points["X position"][1][0] == 10846.5
    assert points["Group"][0] == "LongColumn"
    raw = {}
    for f in files:
        if unwrap(f.ns) == ATTACHMENT_NS:
            (of,) = r.all("select f from OriginalFile f where f.id = :fid", fid=f.file.id.val)
            raw[unwrap(of.name)] = r.file(of.id.val)
    assert sorted(raw) == ["microscope1_Acq.txt", "microscope1_log.txt"]
    for image in r.kind("Image"):
        on_image = r.annotations("Image", image.id.val)
        kinds = {(type(a).__name__, unwrap(a.ns)) for a in on_image}
        assert ("MapAnnotationI", CLIENT_MAP_NS) in kinds
        assert ("MapAnnotationI", PROVENANCE_NS) in kinds
        source = next(a for a in on_image if unwrap(a.ns) == SOURCE_NS)
        assert dict(_pairs(source))["Status"] == "complete"
        assert sum(isinstance(a, omero.model.TagAnnotationI) for a in on_image) == 2
    assert len(r.kind("TagAnnotation")) == 2


def test_attached_files_are_the_source_files(uploaded, demo):
    r = uploaded
    (dataset,) = r.kind("Dataset")
    for f in r.annotations("Dataset", dataset.id.val):
        if isinstance(f, omero.model.FileAnnotationI) and unwrap(f.ns) == ATTACHMENT_NS:
            (of,) = r.all("select f from OriginalFile f where f.id = :fid", fid=f.file.id.val)
            assert r.file(of.id.val) == (demo / unwrap(of.name)).read_bytes()


def test_existing_tag_is_reused(double, alice, demo, reader):
    tag = omero.model.TagAnnotationI()
    tag.setTextValue(rstring("Batgirl"))
    existing = reader.sf.getUpdateService().saveAndReturnObject(tag)
    assert upload(double, alice, demo) == 0
    batgirl = [t for t in reader.kind("TagAnnotation") if unwrap(t.textValue) == "Batgirl"]
    assert [t.id.val for t in batgirl] == [existing.id.val]


def _snapshot(double, user):
    return sorted((o["class"], o["id"]) for o in double.state()["objects"]
                  if o["owner"] == user.id)


def test_rerun_skips_everything(uploaded, double, alice, demo, calls, capsys):
    before = _snapshot(double, alice)
    bytes_before = calls.pixel_bytes
    capsys.readouterr()
    assert main(["upload", str(demo), "--dataset", "run1", "--host", double.host,
                 "--port", str(double.port), "--user", alice.name]) == 0
    assert "3 already complete, skipped" in capsys.readouterr().out
    assert _snapshot(double, alice) == before and calls.pixel_bytes == bytes_before


def test_failure_then_rerun_gives_one_complete_copy(double, alice, demo, reader, calls, capsys):
    """A connection dropped mid-image: OMERO opens an existing pixel file read-only
    (PixelsService._getPixelBuffer), so the image cannot be finished in a new session;
    the run stops and the re-run replaces it."""
    # the 5th timepoint call (position 2, T=2 in order) loses the connection
    calls.drop = ("setTimepoint", 5, 1)
    t0 = time.perf_counter()
    assert upload(double, alice, demo, "--workers", "1") == cli.EXIT_OMERO
    assert time.perf_counter() - t0 < 60
    err = capsys.readouterr().err
    assert f"lost the connection to {double.host}:{double.port}" in err
    assert "run the same command again" in err and "Traceback" not in err
    assert "pos002" in {unwrap(i.name) for i in reader.kind("Image")}  # linked, incomplete
    (dataset,) = reader.kind("Dataset")
    assert {i.id.val for i in reader.kind("Image")} == {
        i.id.val for i in reader.images(dataset.id.val)}  # nothing outside the dataset
    calls.drop = None
    assert upload(double, alice, demo) == 0
    images = reader.kind("Image")
    assert sorted(unwrap(i.name) for i in images) == ["pos001", "pos002", "pos003"]
    assert len(reader.kind("Dataset")) == 1 and len(reader.kind("Project")) == 1
    assert len(reader.kind("TagAnnotation")) == 2
    on_dataset = reader.annotations("Dataset", dataset.id.val)
    assert sum(unwrap(a.ns) == CLIENT_MAP_NS for a in on_dataset) == 1
    for image in images:
        source = next(a for a in reader.annotations("Image", image.id.val)
                      if unwrap(a.ns) == SOURCE_NS)
        assert dict(_pairs(source))["Status"] == "complete"
        check_planes(reader, image, demo)
    assert alive_once_settled(double, alice, 1).count(True) == 1  # the Reader's


def test_lost_connection_logs_in_again(double, alice, demo, reader, calls):
    """Glacier2 ends the session with its connection: retrying on it cannot work,
    so the client logs in again, opens a new pixel store and carries on (here the
    connection drops before the second image's first pixel call)."""
    calls.drop = ("requiresPixelsPyramid", 2, 2)
    assert upload(double, alice, demo, "--workers", "1") == 0
    assert calls.counts["requiresPixelsPyramid"] == 5  # 3 + 2 lost
    assert calls.counts["setTimepoint"] == 9
    assert calls.counts["createSession"] == 3  # the login and two after lost connections
    mine = alive_once_settled(double, alice, 1)
    assert len(mine) == 4 and mine.count(True) == 1  # the Reader's
    for image in reader.kind("Image"):
        check_planes(reader, image, demo)


def test_wrong_password(double, alice, demo, monkeypatch, capsys):
    monkeypatch.setenv("OMERO_PASSWORD", "nope")
    assert upload(double, alice, demo) == cli.EXIT_AUTH
    err = capsys.readouterr().err
    assert f"login refused for user '{alice.name}'" in err and "nope" not in err
    assert "Traceback" not in err and sessions_of(double, alice) == []


def test_unknown_host_and_refused_port(double, alice, demo, reader, capsys):
    assert main(["upload", str(demo), "--host", "nowhere.invalid", "--user", alice.name]) == \
        cli.EXIT_UNKNOWN_HOST
    assert "unknown host 'nowhere.invalid'" in capsys.readouterr().err
    port = free_port()
    assert main(["upload", str(demo), "--host", double.host, "--port", str(port),
                 "--user", alice.name]) == cli.EXIT_REFUSED
    assert f"connection refused by {double.host}:{port}" in capsys.readouterr().err
    assert not reader.kind("Dataset")


def test_login_timeout_is_a_timeout(alice, demo, monkeypatch, capsys):
    """A server that accepts the connection and never answers: omero-py gives up
    after three connect timeouts with ClientError("Obtained null object proxy")."""
    monkeypatch.setattr(connection.ConnectionSettings, "__init__",
                        _with_timeout(connection.ConnectionSettings.__init__, 1.0))
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        assert main(["-q", "upload", str(demo), "--host", "127.0.0.1", "--port", str(port),
                     "--user", alice.name]) == cli.EXIT_TIMEOUT
    err = capsys.readouterr().err
    assert f"no answer from 127.0.0.1:{port}" in err and "Traceback" not in err


def _with_timeout(init, seconds):
    def patched(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.timeout_s = seconds
    return patched


def _login_and_detach(double, user: User) -> str:
    """What `omero login` leaves: a session with no client attached, still alive."""
    c = omero.client(double.host, double.port)
    with quiet():
        sf = c.createSession(user.name, user.password)
    sf.detachOnDestroy()
    key = c.getSessionId()
    c.__del__()
    return key


def test_session_key_leaves_the_session_alive(double, alice, demo, reader, monkeypatch,
                                              calls):
    monkeypatch.delenv("OMERO_PASSWORD")
    key = _login_and_detach(double, alice)
    assert main(["-q", "upload", str(demo), "--host", double.host, "--port", str(double.port),
                 "--session-key", key]) == 0
    assert calls.counts["createSession"] == 0 and calls.counts["joinSession"] == 1
    assert len(reader.kind("Image")) == 3
    # joined, detached before closing: the session outlives the upload (SessionI)
    (joined,) = [s for s in sessions_of(double, alice) if s["uuid"] == key]
    assert joined["alive"] and joined["refs"] == 0
    assert main(["-q", "upload", str(demo), "--host", double.host, "--port", str(double.port),
                 "--session-key", key, "--insecure", "--dataset", "again"]) == 0
    (joined,) = [s for s in sessions_of(double, alice) if s["uuid"] == key]
    assert joined["alive"] and joined["refs"] == 0
    assert calls.counts["createClient(secure=False)"] == 1
    assert len(reader.kind("Image")) == 6
    # and the key still works for a third client
    c = omero.client(double.host, double.port)
    try:
        assert c.joinSession(key).getAdminService().getEventContext().userName == alice.name
    finally:
        c.getSession().detachOnDestroy()
        c.__del__()


def test_insecure_pixels_one_login(double, alice, demo, reader, calls):
    assert upload(double, alice, demo, "--insecure") == 0
    assert calls.counts["createClient(secure=False)"] == 1
    assert calls.counts["createSession"] == 1
    # our session ended: only the Reader's is alive
    assert alive_once_settled(double, alice, 1).count(True) == 1
    images = reader.kind("Image")
    assert len(images) == 3
    check_planes(reader, images[0], demo)


def test_insecure_pixels_use_the_plain_port(double, alice, demo, monkeypatch):
    """The second client's connection goes to the double's plain TCP port."""
    seen = []
    real = omero.clients.BaseClient.createClient

    def spy(self, secure):
        other = real(self, secure)
        seen.append(other.getSession().ice_getConnection().getInfo())
        return other

    monkeypatch.setattr(omero.clients.BaseClient, "createClient", spy)
    assert upload(double, alice, demo, "--insecure") == 0
    (info,) = seen
    assert info.remotePort == double.insecure_port and isinstance(info, Ice.TCPConnectionInfo)


def test_group(double, demo, monkeypatch, calls, capsys):
    lab = new_group(double, f"lab-{uuid.uuid4().hex[:6]}")
    lab_name = _group_name(double, lab)
    user = new_user(double, [lab])
    monkeypatch.setenv("OMERO_PASSWORD", user.password)
    monkeypatch.setattr(connection, "stored_session", lambda environ=None: None)
    settings = connection.ConnectionSettings(double.host, double.port, user.name, user.password,
                                             group=lab_name)
    with connection.Connection.open(settings) as conn:
        assert conn.group_id == lab and user.group_id != lab
    assert upload(double, user, demo, "--group", lab_name, "--insecure") == 0
    images = [o for o in double.state()["objects"]
              if o["class"] == "Image" and o["owner"] == user.id]
    assert len(images) == 3 and {o["group"] for o in images} == {lab}
    assert upload(double, user, demo, "--group", "nope") == cli.EXIT_AUTH
    assert "no OMERO group named 'nope'" in capsys.readouterr().err


def _group_name(double, gid):
    c = omero.client(double.host, double.port)
    try:
        return unwrap(c.createSession(double.user, double.password).getAdminService()
                      .getGroup(gid).name)
    finally:
        c.__del__()


def test_dry_run_writes_nothing(double, alice, demo, calls, capsys):
    assert main(["upload", str(demo), "--dataset", "run1", "--host", double.host,
                 "--port", str(double.port), "--user", alice.name, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would create: pos001" in out and "would upload 3 image(s)" in out
    assert _snapshot(double, alice) == [] and calls.pixel_bytes == 0


def test_single_plane_images_without_hypercube(double, alice, demo, reader):
    assert upload(double, alice, demo, "--no-hypercube", "-x") == 0
    images = reader.kind("Image")
    assert len(images) == 135
    name = "microscope1_000002_DIC_003.png"
    got = sorted(reader.array(i.id.val)[0, 0, 0].tobytes() for i in images
                 if unwrap(i.name) == name)  # one per position
    want = sorted(read_png(demo / pos / name).astype(">u2").tobytes()
                  for pos in ("pos001", "pos002", "pos003"))
    assert got == want


def test_tables_service_missing_falls_back_to_hdf5(double, alice, demo, reader, monkeypatch):
    # a server without OMERO.tables answers areTablesEnabled() False (client side: the
    # double has the service)
    monkeypatch.setattr(omero.grid.SharedResourcesPrx, "areTablesEnabled",
                        lambda self, _ctx=None: False)
    assert upload(double, alice, demo) == 0
    (dataset,) = reader.kind("Dataset")
    files = [a for a in reader.annotations("Dataset", dataset.id.val)
             if isinstance(a, omero.model.FileAnnotationI)
             and unwrap(a.ns) == BULK_ANNOTATIONS_NS]
    originals = {}
    for f in files:
        (of,) = reader.all("select f from OriginalFile f where f.id = :fid", fid=f.file.id.val)
        originals[unwrap(of.name)] = of.id.val
    assert "Points.h5" in originals and len(originals) == 6
    assert reader.file(originals["Points.h5"])[:8] == b"\x89HDF\r\n\x1a\n"


def test_legacy_cli_flags(double, alice, demo, reader, tmp_path):
    plug = tmp_path / "plug"
    plug.mkdir()
    (plug / "custom_metadata_parser.py").write_text(
        "class CustomMetadataParser:\n"
        "    def extract_metadata(self, path):\n"
        "        return {'description': 'legacy', 'tags': ['L'], 'kvps': [], 'tables': []}\n")
    code = legacy_main(["-s", double.host, "-o", str(double.port), "-u", alice.name,
                        "-d", str(demo), "-n", "legacy", "-y", "-m", str(plug), "-p",
                        "--no-include-provenance-metadata"])
    assert code == 0
    (dataset,) = reader.kind("Dataset")
    assert unwrap(dataset.name) == "legacy" and unwrap(dataset.description) == "legacy"
    assert [unwrap(t.textValue) for t in reader.kind("TagAnnotation")] == ["L"]
    namespaces = {unwrap(a.ns) for a in reader.kind("MapAnnotation")}
    assert PROVENANCE_NS not in namespaces
    assert len(reader.kind("Image")) == 3  # -y: hypercubes


def test_legacy_cli_as_a_process(double, alice, demo, reader):
    """``python -m pyomero_upload.upload_cli`` in its own process, over SSL."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMERO_PASSWORD": alice.password}
    proc = subprocess.run(
        [sys.executable, "-m", "pyomero_upload.upload_cli", "-s", double.host, "-o",
         str(double.port), "-u", alice.name, "-d", str(demo), "-n", "proc", "-y", "-x"],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (dataset,) = reader.kind("Dataset")
    assert unwrap(dataset.name) == "proc"
    check_planes(reader, reader.image("pos003"), demo)


def test_python_api(double, alice, demo, reader):
    from pyomero_upload.pyomero_upload import PyOmeroUploader

    uploader = PyOmeroUploader(alice.name, alice.password, double.host, port=double.port)
    assert alice.password not in repr(uploader)
    dataset_id = uploader.launch_upload("api", demo, hypercube=True)
    assert isinstance(dataset_id, int)
    (dataset,) = reader.kind("Dataset")
    assert dataset.id.val == dataset_id and unwrap(dataset.name) == "api"
    assert len(reader.images(dataset_id)) == 3
    check_planes(reader, reader.image("pos001"), demo)


def image_processor_plugin(tmp_path, *body: str):
    """A plug-in folder whose ``CustomImageProcessor.process`` runs the lines ``body``."""
    plug = tmp_path / "plug"
    plug.mkdir()
    (plug / "custom_image_processor.py").write_text(
        "from pyomero_upload.plugins import ImageProcessor\n"
        "class CustomImageProcessor(ImageProcessor):\n"
        "    def process(self, conn, exp, metadata, dataset, options, result, on_plane=None):\n"
        + "".join(f"        {line}\n" for line in body))
    return plug


def test_custom_image_processor(double, alice, demo, reader, tmp_path):
    plug = image_processor_plugin(
        tmp_path, f"with open({str(tmp_path / 'called')!r}, 'w') as f:",
        "    f.write(f'{dataset.name}:{dataset.id}')")
    assert upload(double, alice, demo, "-m", str(plug), "-i") == 0
    (dataset,) = reader.kind("Dataset")
    assert reader.kind("Image") == []  # only what the plug-in did
    # called, with the dataset as ids and names (no omero objects)
    assert (tmp_path / "called").read_text() == f"run1:{dataset.id.val}"


def test_custom_image_processor_bug_is_not_an_omero_error(double, alice, demo, tmp_path,
                                                          capsys):
    plug = image_processor_plugin(tmp_path, "return 1 / 0")
    assert upload(double, alice, demo, "-m", str(plug), "-i") == cli.EXIT_INPUT
    err = capsys.readouterr().err
    assert "image processor CustomImageProcessor" in err and "ZeroDivisionError" in err
    assert "OMERO error" not in err and "Traceback" not in err


def test_interrupted_upload_does_not_claim_a_clean_state(double, alice, demo, tmp_path, capsys):
    plug = image_processor_plugin(tmp_path, "raise KeyboardInterrupt")
    assert upload(double, alice, demo, "-m", str(plug), "-i") == cli.EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "no partial output" not in err and "run the same command again" in err
    assert not any(alive_once_settled(double, alice, 0))  # closed all the same


def test_pixel_units():
    assert pixels.pixel_unit(512, 512, 5, 3, 2) == "timepoint"
    assert pixels.pixel_unit(1024, 1024, 5, 3, 2) == "stack"
    assert pixels.pixel_unit(2048, 2048, 5, 3, 2) == "plane"
    assert pixels.pixel_unit(3000, 3000, 1, 1, 2) == "rows"  # 18 MB: over one call
    assert pixels.pixel_unit(512, 512, 5, 3, 2, pyramid=True) == "tiles"


@pytest.mark.parametrize("limit, method, n", [
    (512 * 512 * 2 * 5, "setStack", 27),  # setStack(buf, z, c, t), as in the Ice stubs
    (512 * 512 * 2, "setPlane", 135),
    (100_000, "setTile", 135 * 6),  # full-width strips of 97 rows at x = 0 (ROMIO)
])
def test_smaller_pixel_units(double, alice, demo, reader, calls, monkeypatch, limit, method, n):
    monkeypatch.setattr(pixels, "MAX_CALL_BYTES", limit)
    assert upload(double, alice, demo, "-x") == 0
    assert calls.counts[method] == n and calls.pixel_calls() == n
    check_planes(reader, reader.image("pos003"), demo)


def test_metadata_saved_after_pixels_is_not_stale(uploaded, double, alice):
    """RawPixelsStore.save() moves the Pixels' update event on; the later save of the
    Pixels (physical sizes) must use a copy loaded after it, or the server refuses it."""
    r = uploaded
    state = {(o["class"], o["id"]): o for o in double.state()["objects"]}
    for image in r.kind("Image"):
        px = r.pixels(image.id.val)
        assert unwrap(px.sha1) not in (None, "Pending...")
        assert px.getPhysicalSizeZ().getValue() == pytest.approx(0.6)
        assert state[("Pixels", px.id.val)]["fields"]["sha1"] == unwrap(px.sha1)


def test_json_report_names_what_the_server_holds(double, alice, demo, capsys, monkeypatch):
    """`upload --json`: the project, the dataset and one entry per position, each with
    the id the server gave it, its status and its OMERO.web link; the re-run reports
    the same ids as skipped."""
    monkeypatch.setenv("OMERO_WEB_URL", "https://web.example.org/")
    args = ["-q", "upload", str(demo), "--dataset", "report", "--host", double.host,
            "--port", str(double.port), "--user", alice.name, "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    objects = {(o["class"], o["id"]): o for o in double.state()["objects"]}
    dataset = first["dataset"]
    assert objects[("Dataset", dataset["id"])]["fields"]["name"] == "report" == dataset["name"]
    assert dataset["url"] == f"https://web.example.org/webclient/?show=dataset-{dataset['id']}"
    project = first["project"]
    assert objects[("Project", project["id"])]["fields"]["name"] == project["name"]
    assert any(o["fields"]["parent"]["id"] == project["id"]
               and o["fields"]["child"]["id"] == dataset["id"]
               for (kind, _), o in objects.items() if kind == "ProjectDatasetLink")
    in_dataset = {o["fields"]["child"]["id"] for (kind, _), o in objects.items()
                  if kind == "DatasetImageLink" and o["fields"]["parent"]["id"] == dataset["id"]}
    images = first["images"]
    assert [i["position"] for i in images] == ["pos001", "pos002", "pos003"]
    assert {i["status"] for i in images} == {"created"}
    assert {i["id"] for i in images} == in_dataset
    for entry in images:
        assert objects[("Image", entry["id"])]["fields"]["name"] == entry["name"]
        assert entry["url"] == f"https://web.example.org/webclient/?show=image-{entry['id']}"

    assert main(args) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["dataset"]["id"] == dataset["id"]
    assert [(i["id"], i["status"]) for i in again["images"]] == [
        (i["id"], "skipped") for i in images]


# --- tags and re-runs ------------------------------------------------------------------------


def _tag_parser(tmp_path, tags):
    plug = tmp_path / "plug"
    plug.mkdir(exist_ok=True)
    # our model, as a parser may return it: repeated tags reach the client as they are
    (plug / "custom_metadata_parser.py").write_text(
        "import pandas as pd\n"
        "from pyomero_upload.model import ExperimentMetadata\n"
        "class CustomMetadataParser:\n"
        "    def extract_metadata(self, path):\n"
        f"        return ExperimentMetadata(description='d', tags={tags!r}, kvps=[('k', 'v')],\n"
        "                                  tables={'T': pd.DataFrame({'a': [1, 2]})})\n")
    return plug


def test_repeated_tag_name_is_linked_once(double, alice, demo, reader, tmp_path):
    plug = _tag_parser(tmp_path, ["A", "B", "A"])
    assert upload(double, alice, demo, "-m", str(plug), "-p") == 0
    assert sorted(unwrap(t.textValue) for t in reader.kind("TagAnnotation")) == ["A", "B"]
    on_dataset = reader.tag_links("Dataset")
    assert len(on_dataset) == 2 == len(set(on_dataset))
    assert len(reader.tag_links("Image")) == 3 * 2


def test_rerun_after_failure_between_tags_and_marker(double, alice, demo, reader, tmp_path,
                                                     monkeypatch):
    """Tags linked, then the table fails: the re-run links nothing twice
    (links are unique per parent, child and owner) and adds only what is missing."""
    plug = _tag_parser(tmp_path, ["A"])
    real = annotations.attach_table

    def boom(*args, **kwargs):
        raise omero.InternalException(None, None, "boom")

    monkeypatch.setattr(annotations, "attach_table", boom)
    assert upload(double, alice, demo, "-m", str(plug), "-p") == cli.EXIT_OMERO
    assert len(reader.tag_links("Dataset")) == 1 and not reader.kind("Image")
    monkeypatch.setattr(annotations, "attach_table", real)
    assert upload(double, alice, demo, "-m", str(plug), "-p") == 0
    (dataset,) = reader.kind("Dataset")
    on_dataset = reader.annotations("Dataset", dataset.id.val)
    assert len(reader.tag_links("Dataset")) == 1
    assert sum(unwrap(a.ns) == CLIENT_MAP_NS for a in on_dataset) == 1
    assert sum(unwrap(a.ns) == BULK_ANNOTATIONS_NS for a in on_dataset) == 1
    assert sum(unwrap(a.ns) == SOURCE_NS for a in on_dataset) == 1
    assert len(reader.kind("Image")) == 3


def test_rerun_after_failure_before_the_completion_marker(double, alice, demo, reader,
                                                          tmp_path, monkeypatch):
    """An image whose tags are linked but whose completion mark failed is replaced by
    the re-run: the tags are linked to the new image once, the old one is gone."""
    from pyomero_upload.omero import images

    plug = _tag_parser(tmp_path, ["A"])
    real = images.mark_complete

    def boom(*args, **kwargs):
        raise omero.InternalException(None, None, "boom before the marker")

    monkeypatch.setattr(images, "mark_complete", boom)
    assert upload(double, alice, demo, "-m", str(plug), "-p", "--workers", "1") == \
        cli.EXIT_OMERO
    first = reader.kind("Image")  # the one that failed (and any that had started)
    assert first and len(reader.tag_links("Image")) == len(first)  # tags before the marker
    for image in first:
        source = next(a for a in reader.annotations("Image", image.id.val)
                      if unwrap(a.ns) == SOURCE_NS)
        assert dict(_pairs(source))["Status"] == "incomplete"
    monkeypatch.setattr(images, "mark_complete", real)
    assert upload(double, alice, demo, "-m", str(plug), "-p") == 0
    images_now = reader.kind("Image")
    assert sorted(unwrap(i.name) for i in images_now) == ["pos001", "pos002", "pos003"]
    assert not {i.id.val for i in first} & {i.id.val for i in images_now}  # replaced
    assert len(reader.tag_links("Image")) == 3 == len(set(reader.tag_links("Image")))
    for image in images_now:
        source = next(a for a in reader.annotations("Image", image.id.val)
                      if unwrap(a.ns) == SOURCE_NS)
        assert dict(_pairs(source))["Status"] == "complete"
    assert len(reader.kind("TagAnnotation")) == 1


def test_files_upload_in_large_blocks(double, alice, demo, monkeypatch):
    # omero-py's client.upload defaults to 1 KiB: one remote call per KiB
    sizes = []
    real = omero.api.RawFileStorePrx.write

    def spy(self, buf, position, length, _ctx=None):
        sizes.append(len(buf))
        return real(self, buf, position, length, _ctx)

    monkeypatch.setattr(omero.api.RawFileStorePrx, "write", spy)
    assert upload(double, alice, demo) == 0
    assert len(sizes) == 2 and max(sizes) > 1024  # one write per (small) file


def test_stored_session_with_its_port(double, alice, demo, reader, monkeypatch, tmp_path,
                                      calls):
    """The session `omero login` stored (under OMERO_SESSIONDIR) is joined on its port."""
    from omero.util.sessions import SessionsStore

    monkeypatch.undo()  # the real stored_session, no password
    for var in ("OMERO_HOST", "OMERO_USER", "OMERO_PORT", "OMERO_PASSWORD", "OMERO_SESSION_KEY"):
        monkeypatch.delenv(var, raising=False)
    key = _login_and_detach(double, alice)
    store = SessionsStore(str(tmp_path / "sessions"))
    props = {"omero.port": str(double.port)}
    store.add(double.host, alice.name, key, props)
    store.set_current(double.host, alice.name, key, props)
    monkeypatch.setenv("OMERO_SESSIONDIR", str(tmp_path / "sessions"))
    joins = []
    real = omero.clients.BaseClient.joinSession
    monkeypatch.setattr(omero.clients.BaseClient, "joinSession",
                        lambda self, k: joins.append(k) or real(self, k))
    assert main(["-q", "upload", str(demo), "--dataset", "stored"]) == 0
    assert joins == [key]
    (joined,) = [s for s in sessions_of(double, alice) if s["uuid"] == key]
    assert joined["alive"] and len(reader.kind("Image")) == 3


# --- sizes that need other pixel calls --------------------------------------------------------


def _synthetic(root, size, channels=("GFP",), z_count=1):
    """One position of random uint16 single-page TIFF planes (fast to write)."""
    import tifffile

    rng = np.random.default_rng(size)
    planes = {}
    (root / "pos001").mkdir(parents=True)
    for c in channels:
        for z in range(1, z_count + 1):
            plane = rng.integers(0, 65535, (size, size), dtype=np.uint16)
            tifffile.imwrite(root / "pos001" / f"img_000001_{c}_{z:03d}.tif", plane)
            planes[(c, z)] = plane
    return planes


def _check_synthetic(r: Reader, planes, channels):
    (image,) = r.kind("Image")
    data = r.array(image.id.val)
    for (c, z), plane in planes.items():
        np.testing.assert_array_equal(data[0, channels.index(c), z - 1], plane)


def _pyramid_flags(double, user):
    state = double.state()
    mine = {o["id"] for o in state["objects"] if o["class"] == "Pixels" and o["owner"] == user.id}
    return [state["pixels"][str(pid)]["pyramid"] for pid in sorted(mine)]


def test_stack_mode_1024_z5(double, alice, reader, calls, tmp_path):
    channels = ["Brightfield", "DIC", "GFP"]
    planes = _synthetic(tmp_path / "exp", 1024, channels, 5)  # 31 MB a timepoint: stacks
    assert upload(double, alice, tmp_path / "exp", "-x", "--channel-order",
                  ",".join(channels)) == 0
    assert calls.counts["setStack"] == 3 and calls.pixel_calls() == 3
    _check_synthetic(reader, planes, channels)


def test_3500_uint16_is_a_pyramid_written_in_tiles(double, alice, reader, calls, tmp_path):
    planes = _synthetic(tmp_path / "exp", 3500)  # 3500^2 > 3192^2: the server wants a pyramid
    assert upload(double, alice, tmp_path / "exp", "-x") == 0
    assert calls.counts["requiresPixelsPyramid"] == 1 and calls.counts["getTileSize"] == 1
    assert calls.counts["setTile"] == 14 * 14  # the server's 256 x 256 tiles
    assert calls.counts["setPlane"] == 0 and _pyramid_flags(double, alice) == [True]
    _check_synthetic(reader, planes, ["GFP"])


def test_3000_uint16_plane_over_16_mib_goes_in_full_width_strips(double, alice, reader, calls,
                                                                 tmp_path):
    planes = _synthetic(tmp_path / "exp", 3000)  # 18 MB: no pyramid, too big for one call
    assert upload(double, alice, tmp_path / "exp", "-x") == 0
    assert calls.counts["setTile"] == 2  # rows 0-2795, 2796-2999 at x = 0
    assert calls.pixel_calls() == 2 and _pyramid_flags(double, alice) == [False]
    _check_synthetic(reader, planes, ["GFP"])


def test_lost_connection_during_a_pyramid_stops_and_the_rerun_replaces_it(
        double, alice, reader, calls, tmp_path, capsys):
    """A pyramid is written to a temporary file until the store closes
    (BfPyramidPixelBuffer): a new session cannot resume it, so the run stops."""
    planes = _synthetic(tmp_path / "exp", 3500)
    calls.drop = ("setTile", 5, 1)
    assert upload(double, alice, tmp_path / "exp", "-x", "--workers", "1") == cli.EXIT_OMERO
    assert "while writing a pyramid image" in capsys.readouterr().err
    calls.drop = None
    assert upload(double, alice, tmp_path / "exp", "-x") == 0
    assert [unwrap(i.name) for i in reader.kind("Image")] == ["pos001"]
    assert _pyramid_flags(double, alice) == [True]
    _check_synthetic(reader, planes, ["GFP"])
    assert alive_once_settled(double, alice, 1).count(True) == 1  # the Reader's


# --- never lose a good copy, never duplicate ---------------------------------------------------


def _dataset_images(reader, name: str = "run1"):
    (dataset,) = [d for d in reader.kind("Dataset") if unwrap(d.name) == name]
    return dataset.id.val, reader.images(dataset.id.val)


def _source_state(reader, image_id: int) -> dict[str, str]:
    for a in reader.annotations("Image", image_id):
        if isinstance(a, omero.model.MapAnnotationI) and unwrap(a.ns) == SOURCE_NS:
            return {nv.name: nv.value for nv in a.getMapValue()}
    return {}


def _planes_of(root, position: str) -> np.ndarray:
    planes = [read_png(p) for _t, _c, _z, p in sorted(
        demo_planes(root, position), key=lambda q: (q[0], CHANNELS.index(q[1]), q[2]))]
    return np.stack(planes)


def test_failed_replacement_keeps_the_complete_copy(double, alice, build_layout, reader,
                                                    capsys):
    """A plane damaged after a complete upload: the re-run fails on it, naming the file,
    removes the replacement it had begun, and the complete, pixel-exact pos002 is still
    there, the only image of pos002."""
    root = build_layout(["pos001", "pos002"])
    assert upload(double, alice, root) == 0
    _, before = _dataset_images(reader)
    old = {unwrap(i.name): i.id.val for i in before}
    expected = reader.array(old["pos002"])
    bad = sorted((root / "pos002").glob("*.png"))[7]
    data = bad.read_bytes()
    bad.unlink()  # hard-linked to the demo: never write through the link
    bad.write_bytes(data[: len(data) // 3])
    assert upload(double, alice, root) == 1
    assert bad.name in capsys.readouterr().err
    _, after = _dataset_images(reader)
    assert sorted((unwrap(i.name), i.id.val) for i in after) == sorted(old.items())
    assert _source_state(reader, old["pos002"])["Status"] == "complete"
    np.testing.assert_array_equal(reader.array(old["pos002"]), expected)


def test_single_plane_mode_keeps_one_image_per_source_file(double, alice, build_layout,
                                                           reader, capsys):
    """--no-hypercube where every position has the same file names, sizes and times
    (hard links): one image per plane file after every run, a change replaces only
    its own file's image."""
    root = build_layout(["pos001", "pos002", "pos003"])
    n = sum(1 for _ in root.glob("pos*/*.png"))
    assert upload(double, alice, root, "--no-hypercube", "-x") == 0
    _, first = _dataset_images(reader)
    assert len(first) == n
    sources = {_source_state(reader, i.id.val)["Source"]: i.id.val for i in first}
    assert len(sources) == n and all(s.startswith("pos00") for s in sources)
    assert upload(double, alice, root, "--no-hypercube", "-x") == 0
    _, second = _dataset_images(reader)
    assert sorted(i.id.val for i in second) == sorted(i.id.val for i in first)
    changed = root / "pos002" / "microscope1_000002_GFP_003.png"
    changed.unlink()
    changed.write_bytes(_png(np.full((512, 512), 9, np.uint16)))
    assert upload(double, alice, root, "--no-hypercube", "-x") == 0
    _, third = _dataset_images(reader)
    now = {_source_state(reader, i.id.val)["Source"]: i.id.val for i in third}
    assert len(third) == n and set(now) == set(sources)
    moved = [s for s in now if now[s] != sources[s]]
    assert moved == ["pos002/microscope1_000002_GFP_003.png"]
    assert (reader.array(now[moved[0]]) == 9).all()


def _png(plane: np.ndarray) -> bytes:
    import imagecodecs

    return imagecodecs.png_encode(plane)


@pytest.mark.parametrize("n", [2, 3])
def test_uploads_at_once_leave_one_copy(double, alice, demo, reader, tmp_path, n):
    """Two or three processes upload the same experiment at the same moment: one writes,
    each other one refuses with one line naming the writer (or, started after it ended,
    skips everything); a --wait run waits and skips."""
    env = {**os.environ, "OMERO_PASSWORD": alice.password}
    cmd = [sys.executable, "-m", "pyomero_upload", "-q", "upload", str(demo), "--dataset",
           "race", "--host", double.host, "--port", str(double.port), "--user", alice.name]
    runs = [subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
            for _ in range(n)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in runs]
    codes = [code for code, _ in results]
    assert set(codes) <= {0, 7} and 0 in codes, results
    for code, err in results:
        if code:
            assert "being written by another upload" in err and alice.name in err
            assert len(err.strip().splitlines()) == 1
    assert subprocess.run([*cmd, "--wait", "300"], env=env).returncode == 0
    _, images = _dataset_images(reader, "race")
    assert sorted(unwrap(i.name) for i in images) == ["pos001", "pos002", "pos003"]
    (dataset,) = [d for d in reader.kind("Dataset") if unwrap(d.name) == "race"]
    anns = reader.annotations("Dataset", dataset.id.val)
    assert not [a for a in anns if unwrap(a.ns) == "pyomero-upload/claim"]
    ids = [a.id.val for a in anns]
    assert len(ids) == len(set(ids))
    assert upload(double, alice, demo, dataset="alone") == 0  # what one upload links
    (alone,) = [d for d in reader.kind("Dataset") if unwrap(d.name) == "alone"]

    def kinds(annotations):
        return Counter((type(a).__name__, unwrap(a.ns)) for a in annotations)

    assert kinds(anns) == kinds(reader.annotations("Dataset", alone.id.val))


def test_a_live_claim_refuses_and_a_stale_one_is_removed(double, alice, demo, reader, capsys,
                                                         monkeypatch):
    """A claim another run holds (fresh heartbeat) makes the upload refuse at once,
    naming its user and host; one without a heartbeat for 5 minutes is a dead run's:
    removed, and the upload goes ahead."""
    from pyomero_upload.omero import claims

    assert upload(double, alice, demo, "--dataset", "claimed") == 0
    (dataset,) = [d for d in reader.kind("Dataset") if unwrap(d.name) == "claimed"]
    did = dataset.id.val

    def claim(beat: float) -> int:
        ann = omero.model.MapAnnotationI()
        ann.setNs(rstring("pyomero-upload/claim"))
        ann.setMapValue([omero.model.NamedValue(k, v) for k, v in [
            ("Run", "other"), ("User", "bob"), ("Host", "labpc"), ("Started", "earlier"),
            ("Heartbeat", str(beat))]])
        link = omero.model.DatasetAnnotationLinkI()
        link.setParent(omero.model.DatasetI(did, False))
        link.setChild(ann)
        return reader.sf.getUpdateService().saveAndReturnObject(link).child.id.val

    live = claim(time.time())
    assert upload(double, alice, demo, "--dataset", "claimed") == 7
    err = capsys.readouterr().err
    assert "bob on labpc" in err and len(err.strip().splitlines()) == 1
    remaining = [a.id.val for a in reader.annotations("Dataset", did)
                 if unwrap(a.ns) == "pyomero-upload/claim"]
    assert remaining == [live]  # ours was withdrawn, theirs left alone
    # The stale case: the same claim, seen from far in the future.
    monkeypatch.setattr(claims, "_clock", lambda: time.time() + 3600)
    assert upload(double, alice, demo, "--dataset", "claimed") == 0
    assert not [a for a in reader.annotations("Dataset", did)
                if unwrap(a.ns) == "pyomero-upload/claim"]


def test_two_datasets_of_the_name_are_refused_listing_both(double, alice, demo, reader,
                                                           capsys):
    update = reader.sf.getUpdateService()
    ids = []
    for _ in range(2):
        d = omero.model.DatasetI()
        d.setName(rstring("twice"))
        ids.append(update.saveAndReturnObject(d).id.val)
    assert upload(double, alice, demo, "--dataset", "twice", "-x") == 2
    err = capsys.readouterr().err
    assert f"ids {ids[0]}, {ids[1]}" in err and "--dataset-id" in err
    assert reader.images(ids[0]) == [] and reader.images(ids[1]) == []
    assert upload(double, alice, demo, "--dataset", "twice", "-x",
                  "--dataset-id", str(ids[1])) == 0
    assert len(reader.images(ids[1])) == 3 and reader.images(ids[0]) == []


def test_checksum_sees_a_change_that_keeps_size_and_time(double, alice, build_layout, reader):
    """As rsync: by default a plane rewritten with the same size and time is not seen;
    with --checksum it is, and only its position is replaced."""
    import os

    root = build_layout(["pos001", "pos002"])
    assert upload(double, alice, root, "-x", dataset="plain") == 0
    assert upload(double, alice, root, "-x", "--checksum", dataset="sums") == 0
    plain = {unwrap(i.name): i.id.val for i in _dataset_images(reader, "plain")[1]}
    sums = {unwrap(i.name): i.id.val for i in _dataset_images(reader, "sums")[1]}
    plane = sorted((root / "pos001").glob("*.png"))[0]
    st, data = plane.stat(), plane.read_bytes()
    flipped = np.full_like(read_png(plane), 5)  # compresses to far fewer bytes
    changed = _png(flipped)
    assert len(changed) < len(data)
    plane.unlink()  # hard-linked to the demo: never write through the link
    # The same size: padding after the PNG's IEND chunk, which readers ignore.
    plane.write_bytes(changed + b"\0" * (len(data) - len(changed)))
    os.utime(plane, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert plane.stat().st_size == st.st_size and plane.stat().st_mtime_ns == st.st_mtime_ns
    np.testing.assert_array_equal(read_png(plane), flipped)

    assert upload(double, alice, root, "-x", dataset="plain") == 0
    assert {unwrap(i.name): i.id.val for i in _dataset_images(reader, "plain")[1]} == plain
    assert upload(double, alice, root, "-x", "--checksum", dataset="sums") == 0
    now = {unwrap(i.name): i.id.val for i in _dataset_images(reader, "sums")[1]}
    assert now["pos002"] == sums["pos002"] and now["pos001"] != sums["pos001"]
    assert len(now) == 2
    np.testing.assert_array_equal(reader.array(now["pos001"])[0, 0, 0], flipped)


def test_a_reconnect_to_another_server_stops_the_run(tmp_path, monkeypatch):
    """The server went away and something else answers at its address (restarted empty,
    or another one): the reconnection sees another database and stops with one line,
    instead of writing this run's images there."""
    from pyomero_upload.errors import ConnectionLostError
    from pyomero_upload.testing.omero_double import running_double

    monkeypatch.setattr(connection.time, "sleep", lambda s: None)
    port, insecure = free_port(), free_port()
    with running_double(tmp_path / "first", port=port, insecure_port=insecure) as d:
        conn = connection.Connection.open(
            connection.ConnectionSettings(d.host, d.port, d.user, d.password))
        first = conn.db_uuid
        assert first
    try:
        with running_double(tmp_path / "second", port=port, insecure_port=insecure) as d:
            with pytest.raises(ConnectionLostError, match="not the server this run started on"):
                conn.retry(lambda: conn.sf.getAdminService().getEventContext(), "IAdmin")
            state = d.state()
            assert not [o for o in state["objects"] if o["class"] == "Image"]
    finally:
        conn.close()


def test_two_runs_creating_one_project_and_dataset_at_once_agree_on_one(double, alice,
                                                                         reader, monkeypatch):
    """Both find no project, both create one, then each keeps the oldest and the run that
    made the other removes its own; the same for the dataset inside it."""
    from pyomero_upload.omero import containers

    settings = connection.ConnectionSettings(double.host, double.port, alice.name,
                                             alice.password)
    conns = [connection.Connection.open(settings) for _ in range(2)]
    both_looked = threading.Barrier(2, timeout=30)
    for name in ("find_project", "find_datasets"):
        real, seen = getattr(containers, name), threading.local()

        def after_both(*args, _real=real, _seen=seen, **kw):
            found = _real(*args, **kw)
            if not getattr(_seen, "once", False):  # the first look only: then both create
                _seen.once = True
                both_looked.wait()
            return found

        monkeypatch.setattr(containers, name, after_both)
    results: list = [None, None]

    def run(i: int) -> None:
        pid, _ = containers.ensure_project(conns[i], "raced project")
        results[i] = (pid, containers.ensure_dataset(conns[i], "raced", pid)[0])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        for c in conns:
            c.close()
    assert results[0] == results[1] and results[0] is not None
    projects = [p for p in reader.kind("Project") if unwrap(p.name) == "raced project"]
    datasets = [d for d in reader.kind("Dataset") if unwrap(d.name) == "raced"]
    assert [p.id.val for p in projects] == [results[0][0]]
    assert [d.id.val for d in datasets] == [results[0][1]]


# --- a process killed at a chosen call, then the same command again ----------------------


def _killed_upload(double, user: User, data, target: str, n: int, when: str = "before",
                   dataset: str = "killed") -> subprocess.CompletedProcess:
    """The upload as its own process, SIGKILLed at the n-th call of ``target``
    (pyomero_upload.testing.faults); it must have died by that signal."""
    env = {**os.environ, "OMERO_PASSWORD": user.password}
    cmd = [sys.executable, "-m", "pyomero_upload.testing.faults", target, str(n), when,
           "SIGKILL", "--", "-q", "upload", str(data), "--dataset", dataset, "--host",
           double.host, "--port", str(double.port), "--user", user.name]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == -signal.SIGKILL, done.stderr
    return done


def _not_in_a_dataset(reader) -> list[int]:
    linked = {lk.child.id.val for lk in reader.all(
        "select l from DatasetImageLink l where l.details.owner.id = :uid", uid=reader.user.id)}
    return [i.id.val for i in reader.kind("Image") if i.id.val not in linked]


def test_a_kill_between_create_and_link_leaves_no_orphan(double, alice, demo, reader):
    """SIGKILL after IPixels.createImage of the second position, before its link: an
    image in no dataset, named as made for this dataset.  The same command again (at
    once: the dead run's claim is seen to be dead) removes it and finishes: one
    complete, pixel-exact image per position and nothing outside the dataset."""
    from pyomero_upload.omero.queries import PENDING_IMAGE

    _killed_upload(double, alice, demo, "pyomero_upload.omero.images:link_image", 2)
    (orphan,) = _not_in_a_dataset(reader)
    did, _ = _dataset_images(reader, "killed")
    (image,) = reader.all("select i from Image i where i.id = :iid", iid=orphan)
    assert unwrap(image.description) == PENDING_IMAGE.format(dataset_id=did)
    assert upload(double, alice, demo, dataset="killed") == 0
    assert _not_in_a_dataset(reader) == []
    _, images = _dataset_images(reader, "killed")
    assert sorted(unwrap(i.name) for i in images) == ["pos001", "pos002", "pos003"]
    for image in images:
        assert _source_state(reader, image.id.val)["Status"] == "complete"
        assert unwrap(image.description) != PENDING_IMAGE.format(dataset_id=did)
        check_planes(reader, image, demo)


def _files(reader):
    return reader.all("select f from OriginalFile f where f.details.owner.id = :uid "
                      "order by f.id", uid=reader.user.id)


def _annotated_files(reader) -> set[int]:
    return {a.file.id.val for a in reader.all(
        "select a from FileAnnotation a where a.details.owner.id = :uid", uid=reader.user.id)}


def test_a_kill_between_a_table_and_its_annotation_leaves_no_orphan(double, alice, demo,
                                                                    reader):
    """SIGKILL once the first OMERO.table is closed, before its annotation: a table file
    no annotation holds.  The re-run removes it: every table file is annotated, one per
    table name, and the dataset's annotations are those of an uninterrupted upload."""
    _killed_upload(double, alice, demo,
                   "pyomero_upload.omero.annotations:_save_file_annotation", 1)
    tables = [f for f in _files(reader) if unwrap(f.mimetype) == "OMERO.tables"]
    assert len(tables) == 1 and tables[0].id.val not in _annotated_files(reader)
    assert upload(double, alice, demo, dataset="killed") == 0
    tables = [f for f in _files(reader) if unwrap(f.mimetype) == "OMERO.tables"]
    annotated = _annotated_files(reader)
    assert tables and all(f.id.val in annotated for f in tables)
    names = [unwrap(f.name) for f in tables]
    assert len(names) == len(set(names))
    assert upload(double, alice, demo, dataset="alone") == 0
    kinds = [Counter((type(a).__name__, unwrap(a.ns)) for a in
                     reader.annotations("Dataset", _dataset_images(reader, name)[0]))
             for name in ("killed", "alone")]
    assert kinds[0] == kinds[1]


def test_a_kill_after_an_attachment_is_sent_reuses_it(double, alice, demo, reader):
    """SIGKILL right after the first attached file is uploaded, before its annotation:
    the re-run finds that file by name and SHA-1 and annotates it instead of sending it
    again, so each attached file is on the server once, and annotated."""
    _killed_upload(double, alice, demo, "omero.clients:BaseClient.upload", 1, "after")
    sent = [f for f in _files(reader) if unwrap(f.mimetype) != "OMERO.tables"]
    assert len(sent) == 1 and sent[0].id.val not in _annotated_files(reader)
    assert upload(double, alice, demo, dataset="killed") == 0
    files = [f for f in _files(reader) if unwrap(f.mimetype) != "OMERO.tables"]
    names = [unwrap(f.name) for f in files]
    assert len(names) == len(set(names)) and len(names) > 1
    assert sent[0].id.val in {f.id.val for f in files}
    assert all(f.id.val in _annotated_files(reader) for f in files)


def test_duplicated_dataset_annotations_are_removed_and_a_users_own_kept(double, alice, demo,
                                                                         reader):
    """Copies of our own annotations (as races of earlier versions left them) go on the
    next run, the oldest kept; a key-value map the user added in the same namespace,
    with other content, stays."""
    assert upload(double, alice, demo, dataset="dupes") == 0
    did, _ = _dataset_images(reader, "dupes")
    update = reader.sf.getUpdateService()
    before = reader.annotations("Dataset", did)
    originals = {unwrap(a.ns): a for a in before if isinstance(a, omero.model.MapAnnotationI)}

    def add_map(ns: str, pairs) -> int:
        ann = omero.model.MapAnnotationI()
        ann.setNs(rstring(ns))
        ann.setMapValue([omero.model.NamedValue(k, v) for k, v in pairs])
        link = omero.model.DatasetAnnotationLinkI()
        link.setParent(omero.model.DatasetI(did, False))
        link.setChild(ann)
        return update.saveAndReturnObject(link).child.id.val

    def pairs_of(ann):
        return [(nv.name, nv.value) for nv in ann.getMapValue()]

    copies = [add_map(ns, pairs_of(originals[ns]))
              for ns in (CLIENT_MAP_NS, PROVENANCE_NS, SOURCE_NS)]
    users = add_map(CLIENT_MAP_NS, [("Note", "added by hand in OMERO.web")])
    assert upload(double, alice, demo, dataset="dupes") == 0
    after = {a.id.val for a in reader.annotations("Dataset", did)}
    assert after == {a.id.val for a in before} | {users}
    assert not set(copies) & after


def test_an_image_deleted_while_it_is_written_is_named(double, alice, demo, reader, capsys,
                                                       monkeypatch):
    """Another client deletes pos002 while this run sends its pixels: the run stops with
    one line naming the image and the cause, not the server's words; the re-run
    finishes with one complete, pixel-exact image per position."""
    deleted: list[int] = []

    def delete(writer):
        (pix,) = reader.all("select p from Pixels p where p.id = :pid", pid=writer.pixels_id)
        deleted.append(pix.image.id.val)
        reader.client.submit(omero.cmd.Delete2(targetObjects={"Image": deleted}),
                             loops=120, ms=500)

    restore = _at_second_image(monkeypatch, delete)
    assert upload(double, alice, demo, "--workers", "1", dataset="deleted") != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"image {deleted[0]} (pos002) was deleted by another process" in err
    restore()
    assert upload(double, alice, demo, dataset="deleted") == 0
    _, images = _dataset_images(reader, "deleted")
    assert sorted(unwrap(i.name) for i in images) == ["pos001", "pos002", "pos003"]
    for image in images:
        check_planes(reader, image, demo)


def test_a_server_killed_mid_upload_and_restarted_from_its_store(demo, tmp_path, monkeypatch,
                                                                 capsys):
    """The double SIGKILLed while the second image's pixels go, and started again from
    its store (--store): it holds the first, complete image, with the same
    omero.db.uuid.  The client, reconnected, stops with one line (that image's pixels
    cannot be finished in a new session); the same command again finishes: the first
    image kept (same id), one complete, pixel-exact image per position."""
    from pyomero_upload.testing.omero_double import running_double

    where = tmp_path / "double"
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(running_double(where, store=True))
        alice = new_user(first)
        handles = [first]
        monkeypatch.setenv("OMERO_PASSWORD", alice.password)
        for var in ("OMERO_HOST", "OMERO_USER", "OMERO_PORT", "OMERO_GROUP",
                    "OMERO_SESSION_KEY"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setattr(connection, "stored_session", lambda environ=None: None)
        def restart(_writer):
            first.process.kill()
            first.process.wait()
            handles.append(stack.enter_context(running_double(
                where, port=first.port, insecure_port=first.insecure_port, store=True)))

        restore = _at_second_image(monkeypatch, restart)
        assert upload(first, alice, demo, "--workers", "1", dataset="restarted") != 0
        err = capsys.readouterr().err.strip()
        assert len(handles) == 2 and len(err.splitlines()) == 1, err
        assert "run the same command again" in err
        restore()
        r = Reader(handles[1], alice)
        try:
            _, kept = _dataset_images(r, "restarted")
            (pos001,) = [i.id.val for i in kept if unwrap(i.name) == "pos001"]
            assert _source_state(r, pos001)["Status"] == "complete"
            assert upload(handles[1], alice, demo, dataset="restarted") == 0
            _, images = _dataset_images(r, "restarted")
            assert sorted(unwrap(i.name) for i in images) == ["pos001", "pos002", "pos003"]
            assert pos001 in [i.id.val for i in images]
            for image in images:
                check_planes(r, image, demo)
            assert _not_in_a_dataset(r) == []
        finally:
            r.close()


# --- the network between: a TCP proxy that drops, stalls and delays ----------------------


def _through(proxy, double):
    """The double as reached through the proxy (what ``upload`` needs of a handle)."""
    return type("Via", (), {"host": "127.0.0.1", "port": proxy.port})()


def _at_second_image(monkeypatch, action):
    """Run ``action(writer)`` once, as the second image's first plane is about to be
    sent; return what puts the PixelWriter back."""
    real_init, real_add = pixels.PixelWriter.__init__, pixels.PixelWriter.add
    writers: list[int] = []
    done: list[bool] = []

    def init(self, conn, pixels_id, *args, **kw):
        writers.append(pixels_id)
        real_init(self, conn, pixels_id, *args, **kw)

    def add(self, plane):
        if len(writers) == 2 and not done:
            done.append(True)
            action(self)
        return real_add(self, plane)

    monkeypatch.setattr(pixels.PixelWriter, "__init__", init)
    monkeypatch.setattr(pixels.PixelWriter, "add", add)
    return lambda: (monkeypatch.setattr(pixels.PixelWriter, "__init__", real_init),
                    monkeypatch.setattr(pixels.PixelWriter, "add", real_add))


def _complete_and_exact(reader, demo, dataset: str):
    _, images = _dataset_images(reader, dataset)
    assert sorted(unwrap(i.name) for i in images) == ["pos001", "pos002", "pos003"]
    for image in images:
        assert _source_state(reader, image.id.val)["Status"] == "complete"
        check_planes(reader, image, demo)


def test_a_network_cut_mid_pixels_stops_with_one_line_and_the_rerun_repairs(
        double, alice, demo, reader, monkeypatch, capsys):
    """Every connection reset by the network while the second image's pixels go: one
    line, non-zero exit; the same command again gives one complete copy of each."""
    from pyomero_upload.testing.netproxy import NetProxy

    with NetProxy(double.host, double.port) as proxy:
        restore = _at_second_image(monkeypatch, lambda _writer: proxy.drop())
        code = upload(_through(proxy, double), alice, demo, "--workers", "1", dataset="cut")
        err = capsys.readouterr().err.strip()
        restore()
        assert code != 0 and len(err.splitlines()) == 1, err
        assert "run the same command again" in err
        assert upload(_through(proxy, double), alice, demo, dataset="cut") == 0
    _complete_and_exact(reader, demo, "cut")
    assert _not_in_a_dataset(reader) == []


def test_a_slow_network_and_a_stall_are_waited_out(double, alice, demo, reader, monkeypatch):
    """Every chunk 20 ms late, and nothing at all for 8 s while the second image goes:
    the upload waits and finishes, exit 0, every plane right."""
    from pyomero_upload.testing.netproxy import NetProxy

    with NetProxy(double.host, double.port) as proxy:
        proxy.delay(0.02)
        restore = _at_second_image(monkeypatch, lambda _writer: proxy.stall(8.0))
        started = time.monotonic()
        assert upload(_through(proxy, double), alice, demo, "--workers", "1",
                      dataset="slow") == 0
        restore()
        assert time.monotonic() - started >= 8.0  # the stall did hold it up
        assert proxy.sent > 0 and proxy.received > 0
    _complete_and_exact(reader, demo, "slow")


def test_dry_run_names_the_plane_files_changed_since_the_upload(double, alice, build_layout,
                                                                reader, capsys):
    """After a complete upload one plane of pos002 is rewritten: --dry-run says pos002
    would be replaced and names that file, leaves pos001 alone, and writes nothing."""
    root = build_layout(["pos001", "pos002"])
    assert upload(double, alice, root, "-x", dataset="named") == 0
    ids = {unwrap(i.name): i.id.val for i in _dataset_images(reader, "named")[1]}
    plane = sorted((root / "pos002").glob("*.png"))[3]
    data = plane.read_bytes()
    plane.unlink()  # hard-linked to the demo: never write through the link
    plane.write_bytes(data)
    later = time.time() + 5
    os.utime(plane, (later, later))
    capsys.readouterr()
    args = ["upload", str(root), "--dataset", "named", "--host", double.host, "--port",
            str(double.port), "--user", alice.name, "-x", "--dry-run"]
    assert main(args) == 0
    out = capsys.readouterr().out
    (line,) = [ln for ln in out.splitlines() if "would replace" in ln]
    assert line == (f"would replace: pos002 (image(s) {ids['pos002']}: changed since the "
                    f"upload: pos002/{plane.name})")
    assert main([*args, "--json"]) == 0
    report = {e["name"]: e for e in json.loads(capsys.readouterr().out)["images"]}
    assert report["pos002"]["status"] == "would replace"
    assert plane.name in report["pos002"]["reason"] and "reason" not in report["pos001"]
    assert {unwrap(i.name): i.id.val for i in _dataset_images(reader, "named")[1]} == ids


def _dataset_files(reader, did: int) -> dict[str, list]:
    out: dict[str, list] = {}
    for a in reader.annotations("Dataset", did):
        if isinstance(a, omero.model.FileAnnotationI):
            out.setdefault(unwrap(a.description), []).append(a)
    return out


def test_changed_metadata_replaces_the_dataset_annotations_new_first(double, alice,
                                                                     build_layout, reader):
    """The lab's log grows after the upload: the re-run writes the new set (the log
    attached as it is now), then removes the old one, files with it; a key-value map
    the user added stays; the dataset carries what a first upload of the new version
    would.  A run killed mid-replacement leaves nothing the next run keeps twice."""
    root = build_layout(["pos001"])
    assert upload(double, alice, root, dataset="versions") == 0
    did, _ = _dataset_images(reader, "versions")
    (log_file,) = root.glob("*_log.txt")
    (old,) = _dataset_files(reader, did)[log_file.name]
    old_file = old.file.id.val
    users = omero.model.MapAnnotationI()
    users.setNs(rstring(CLIENT_MAP_NS))
    users.setMapValue([omero.model.NamedValue("Note", "mine")])
    link = omero.model.DatasetAnnotationLinkI()
    link.setParent(omero.model.DatasetI(did, False))
    link.setChild(users)
    users_id = reader.sf.getUpdateService().saveAndReturnObject(link).child.id.val

    def grow(line: str) -> bytes:
        log_file.write_text(log_file.read_text() + line)
        return log_file.read_bytes()

    # A run killed after the first new file annotation is saved, then the same command.
    grow("note: the operator added a line\n")
    _killed_upload(double, alice, root, "pyomero_upload.omero.annotations:_save_file_annotation",
                   1, "after", dataset="versions")
    content = grow("note: and another\n")
    assert upload(double, alice, root, dataset="versions") == 0
    files = _dataset_files(reader, did)
    (new,) = files[log_file.name]
    assert reader.file(new.file.id.val) == content
    assert all(len(v) == 1 for v in files.values()), files
    remaining = {f.id.val for f in _files(reader)}
    assert old_file not in remaining  # the old file went with its annotation
    assert remaining <= _annotated_files(reader)
    anns = reader.annotations("Dataset", did)
    assert users_id in [a.id.val for a in anns]
    assert upload(double, alice, root, dataset="fresh") == 0
    fresh = reader.annotations("Dataset", _dataset_images(reader, "fresh")[0])

    def kinds(annotations):
        return Counter((type(a).__name__, unwrap(a.ns)) for a in annotations)

    assert kinds([a for a in anns if a.id.val != users_id]) == kinds(fresh)
    assert upload(double, alice, root, dataset="versions") == 0  # nothing changes now
    assert {a.id.val for a in reader.annotations("Dataset", did)} == {a.id.val for a in anns}
