"""Fixtures for the third-party clients' tests: the demo uploaded into the OMERO double
by ``pyomero-upload upload`` (``demo_upload``), and a stock OMERO.web in front of that
double (``omero_web``).  Imported by conftest.py.

The tests that use them are judged by what a real OMERO would show these clients:
OMERO.web's JSON API and webclient, BlitzGateway and ezomero.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import demo_planes, read_png


@dataclass
class Uploaded:
    """The demo as uploaded: who owns it and what the double holds for it."""

    user: str
    password: str
    user_id: int
    project: tuple[int, str]
    dataset: tuple[int, str]
    #: (id, name) of the images, in position order
    images: list[tuple[int, str]]
    #: image id -> (sizeX, sizeY, sizeZ, sizeC, sizeT)
    sizes: dict[int, tuple[int, int, int, int, int]] = field(default_factory=dict)
    #: image id -> physical size X in micrometres (None where the upload set none)
    pixel_size: dict[int, float | None] = field(default_factory=dict)
    channels: list[str] = field(default_factory=list)
    demo: Path | None = None

    def plane(self, image_name: str, t: int, c: str, z: int):
        """The source plane (1-based T and Z, channel name) of one position."""
        assert self.demo is not None
        for tt, cc, zz, path in demo_planes(self.demo, image_name):
            if (tt, cc, zz) == (t, c, z):
                return read_png(path)
        raise KeyError((image_name, t, c, z))


def _new_user(double) -> tuple[str, str, int]:
    """A user of their own read-annotate group, made through IAdmin as the admin."""
    import omero
    from omero.rtypes import rstring

    c = omero.client(double.host, double.port)
    try:
        admin = c.createSession(double.user, double.password).getAdminService()
        tag = uuid.uuid4().hex[:6]
        g = omero.model.ExperimenterGroupI()
        g.setName(rstring(f"web-{tag}"))
        g.details.permissions = omero.model.PermissionsI("rwra--")
        gid = admin.createGroup(g)
        e = omero.model.ExperimenterI()
        name = f"webuser-{tag}"
        e.setOmeName(rstring(name))
        e.setFirstName(rstring("Web"))
        e.setLastName(rstring("User"))
        password = uuid.uuid4().hex
        uid = admin.createExperimenterWithPassword(
            e, rstring(password), omero.model.ExperimenterGroupI(gid, False), [])
        return name, password, uid
    finally:
        c.__del__()


def _read_back(double, up: Uploaded) -> None:
    import omero
    import omero.clients  # noqa: F401
    from omero.rtypes import unwrap
    from omero.sys import ParametersI

    c = omero.client(double.host, double.port)
    try:
        q = c.createSession(up.user, up.password).getQueryService()
        p = ParametersI().addId(up.user_id)
        (dataset,) = q.findAllByQuery(
            "select d from Dataset d where d.details.owner.id = :id", p)
        (link,) = q.findAllByQuery(
            "select l from ProjectDatasetLink l join fetch l.parent "
            "where l.child.id = :did", ParametersI().add("did", dataset.id))
        up.dataset = (dataset.id.val, unwrap(dataset.name))
        up.project = (link.parent.id.val, unwrap(link.parent.name))
        images = q.findAllByQuery(
            "select i from Image i join i.datasetLinks l join fetch i.pixels p "
            "join fetch p.channels c join fetch c.logicalChannel "
            "where l.parent.id = :did order by i.name", ParametersI().add("did", dataset.id))
        up.images = [(i.id.val, unwrap(i.name)) for i in images]
        for i in images:
            px = i.getPrimaryPixels()
            up.sizes[i.id.val] = tuple(unwrap(getattr(px, f"getSize{k}")()) for k in "XYZCT")
            size = px.getPhysicalSizeX()
            up.pixel_size[i.id.val] = None if size is None else size.getValue()
            up.channels = [unwrap(ch.getLogicalChannel().getName()) for ch in px.copyChannels()]
    finally:
        c.__del__()


@pytest.fixture(scope="session")
def demo_upload(double, demo, tmp_path_factory) -> Uploaded:
    """The demo experiment uploaded with ``pyomero-upload upload`` (a subprocess, the
    password in its environment) as a new user of a read-annotate group."""
    name, password, uid = _new_user(double)
    sessions = tmp_path_factory.mktemp("omero-sessions")
    env = {**os.environ, "OMERO_PASSWORD": password, "OMERO_SESSIONDIR": str(sessions)}
    for var in ("OMERO_HOST", "OMERO_USER", "OMERO_PORT", "OMERO_GROUP", "OMERO_SESSION_KEY"):
        env.pop(var, None)
    dataset = "web-demo"
    cmd = [sys.executable, "-m", "pyomero_upload", "-q", "upload", str(demo), "--dataset",
           dataset, "--host", double.host, "--port", str(double.port), "--user", name]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    up = Uploaded(name, password, uid, (0, ""), (0, ""), [], demo=demo)
    _read_back(double, up)
    assert up.dataset[1] == dataset and len(up.images) == 3
    return up


@pytest.fixture(scope="session")
def omero_web(double, demo_upload, tmp_path_factory):
    """A stock OMERO.web (omero-web from PyPI) whose server list is the double holding
    ``demo_upload``; skipped where omero-web is not installed."""
    pytest.importorskip("omeroweb", reason="omero-web is not installed (pip install "
                                           "omero-web, part of the test extra)")
    from pyomero_upload.testing.omero_web import running_web

    with running_web(tmp_path_factory.mktemp("omeroweb"), double.host, double.port) as web:
        yield web


@pytest.fixture
def web_session(omero_web, demo_upload):
    """A ``requests`` session logged in through OMERO.web's JSON API (CSRF token, then
    the login form's POST), and the API's map of URLs."""
    import requests

    s = requests.Session()
    versions = s.get(f"{omero_web.url}/api/", timeout=60).json()["data"]
    api = s.get(versions[-1]["url:base"], timeout=60).json()
    token = s.get(api["url:token"], timeout=60).json()["data"]
    s.headers.update({"X-CSRFToken": token, "Referer": omero_web.url})
    login = s.post(api["url:login"], timeout=120, data={
        "username": demo_upload.user, "password": demo_upload.password, "server": 1})
    assert login.status_code == 200, login.text[:2000]
    s.api = api  # type: ignore[attr-defined]
    yield s
    s.post(f"{omero_web.url}/webclient/logout/", timeout=60)  # ends the OMERO session
    s.close()
