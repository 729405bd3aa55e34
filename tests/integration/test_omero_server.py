"""Integration tests against a real OMERO server (docker/compose.yml; `make test-omero`).

They run wherever a server answers at OMERO_TEST_HOST:OMERO_TEST_PORT
(default localhost:4064) with OMERO_TEST_USER / OMERO_TEST_PASSWORD, and skip
with that reason elsewhere.
"""

from __future__ import annotations

import os
import socket
import uuid

import numpy as np
import pytest

pytestmark = pytest.mark.omero_server

HOST = os.environ.get("OMERO_TEST_HOST", "localhost")
PORT = int(os.environ.get("OMERO_TEST_PORT", "4064"))
USER = os.environ.get("OMERO_TEST_USER", "root")
PASSWORD = os.environ.get("OMERO_TEST_PASSWORD", "")
WEB = os.environ.get("OMERO_TEST_WEB", "http://localhost:4080")


def _reachable() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=3):
            return True
    except OSError:
        return False


if not _reachable():
    pytest.skip(f"no OMERO server reachable at {HOST}:{PORT} (make test-omero starts one "
                "where OME's images can be pulled)", allow_module_level=True)
if not PASSWORD:
    pytest.skip("OMERO_TEST_PASSWORD is not set", allow_module_level=True)

omero = pytest.importorskip("omero")

from helpers import demo_planes, read_png  # noqa: E402
from pyomero_upload.cli import main  # noqa: E402
from pyomero_upload.omero import queries  # noqa: E402
from pyomero_upload.omero.connection import Connection, ConnectionSettings  # noqa: E402
from pyomero_upload.omero.pixels import read_plane  # noqa: E402


@pytest.fixture(scope="session")
def conn():
    c = Connection.open(ConnectionSettings(HOST, PORT, USER, PASSWORD))
    yield c
    c.close()


@pytest.fixture(scope="session")
def uploaded(demo, conn):
    os.environ["OMERO_PASSWORD"] = PASSWORD
    name = f"it-{uuid.uuid4().hex[:8]}"
    args = ["-q", "upload", str(demo), "--dataset", name, "--host", HOST, "--port", str(PORT),
            "--user", USER]
    assert main(args) == 0
    dataset_id = queries.find_dataset(conn, name,
                                      queries.find_project(conn, "Morphology detection"))
    return args, dataset_id


def test_structure_and_pixels(conn, uploaded, demo):
    _, dataset_id = uploaded
    summary = queries.dataset_summary(conn, dataset_id)
    assert [i["name"] for i in summary["images"]] == ["pos001", "pos002", "pos003"]
    assert all(i["size"] == [512, 512, 5, 3, 3] for i in summary["images"])
    assert all(i["channels"] == ["Brightfield", "DIC", "GFP"] for i in summary["images"])
    px = queries.pixels_of(conn, summary["images"][1]["id"])
    for t, c, z, src in demo_planes(demo, "pos002"):
        plane = read_plane(conn, px.id, z - 1, ["Brightfield", "DIC", "GFP"].index(c), t - 1,
                           np.uint16, (512, 512))
        np.testing.assert_array_equal(plane, read_png(src))
    assert summary["annotations"].get("FileAnnotation", 0) >= 8  # 6 tables + 2 raw files


def test_rerun_makes_no_duplicates(conn, uploaded):
    args, dataset_id = uploaded
    before = queries.dataset_summary(conn, dataset_id)
    assert main(args) == 0
    assert queries.dataset_summary(conn, dataset_id) == before


def test_session_key_is_left_alive(uploaded):
    """A session made as `omero login` makes it (detached) survives our join and close."""
    args, _ = uploaded
    client = omero.client(HOST, PORT)
    client.createSession(USER, PASSWORD).detachOnDestroy()
    key = client.getSessionId()
    client.closeSession()
    assert main([*args, "--session-key", key, "--dry-run"]) == 0
    again = omero.client(HOST, PORT)
    try:
        again.joinSession(key)  # raises if our close had ended it
    finally:
        again.killSession()


def test_insecure_pixels(uploaded):
    """--insecure reaches the router's plain port (4063, published in docker/compose.yml)."""
    args, _ = uploaded
    name = args[args.index("--dataset") + 1]
    assert main([a if a != name else f"{name}-insecure" for a in args] + ["--insecure"]) == 0


def test_web_json_api_sees_the_dataset(uploaded):
    requests = pytest.importorskip("requests")
    _, dataset_id = uploaded
    s = requests.Session()
    base = s.get(s.get(f"{WEB}/api/", timeout=30).json()["data"][-1]["url:base"],
                 timeout=30).json()
    api = base.get("data", base)  # /api/ gives each version's base URL; that gives the map
    s.headers["X-CSRFToken"] = s.get(api["url:token"], timeout=30).json()["data"]
    s.headers["Referer"] = WEB
    s.post(api["url:login"], data={"username": USER, "password": PASSWORD, "server": 1},
           timeout=30).raise_for_status()
    images = s.get(f"{api['url:datasets']}{dataset_id}/images/", timeout=30).json()["data"]
    assert sorted(i["Name"] for i in images) == ["pos001", "pos002", "pos003"]
