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

pytestmark = pytest.mark.omero

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
from pyomero_upload import omero_client as oc  # noqa: E402
from pyomero_upload.cli import main  # noqa: E402


@pytest.fixture(scope="session")
def conn():
    c = oc.Connection.open(oc.ConnectionSettings(HOST, PORT, USER, PASSWORD))
    yield c
    c.close()


@pytest.fixture(scope="session")
def uploaded(demo, conn):
    os.environ["OMERO_PASSWORD"] = PASSWORD
    name = f"it-{uuid.uuid4().hex[:8]}"
    args = ["-q", "upload", str(demo), "--dataset", name, "--host", HOST, "--port", str(PORT),
            "--user", USER]
    assert main(args) == 0
    dataset = oc.find_dataset(conn, name, oc.find_project(conn, "Morphology detection"))
    return args, dataset


def test_structure_and_pixels(conn, uploaded, demo):
    _, dataset = uploaded
    summary = oc.dataset_summary(conn, dataset.id.val)
    assert [i["name"] for i in summary["images"]] == ["pos001", "pos002", "pos003"]
    assert all(i["size"] == [512, 512, 5, 3, 3] for i in summary["images"])
    assert all(i["channels"] == ["Brightfield", "DIC", "GFP"] for i in summary["images"])
    image_id = summary["images"][1]["id"]
    px = conn.query.findByQuery(oc.Q_PIXELS, oc._params(iid=image_id))
    store = conn.sf.createRawPixelsStore()
    try:
        store.setPixelsId(px.id.val, True)
        for t, c, z, src in demo_planes(demo, "pos002"):
            plane = np.frombuffer(store.getPlane(z - 1, ["Brightfield", "DIC", "GFP"].index(c),
                                                 t - 1), ">u2").reshape(512, 512)
            np.testing.assert_array_equal(plane, read_png(src))
    finally:
        store.close()
    assert summary["annotations"].get("FileAnnotation", 0) >= 8  # 6 tables + 2 raw files


def test_rerun_makes_no_duplicates(conn, uploaded):
    args, dataset = uploaded
    before = oc.dataset_summary(conn, dataset.id.val)
    assert main(args) == 0
    assert oc.dataset_summary(conn, dataset.id.val) == before


def test_web_json_api_sees_the_dataset(uploaded):
    requests = pytest.importorskip("requests")
    _, dataset = uploaded
    s = requests.Session()
    api = s.get(f"{WEB}/api/", timeout=30).json()["data"][-1]
    s.headers["X-CSRFToken"] = s.get(api["url:token"], timeout=30).json()["data"]
    s.headers["Referer"] = WEB
    s.post(api["url:login"], data={"username": USER, "password": PASSWORD, "server": 1},
           timeout=30).raise_for_status()
    images = s.get(f"{api['url:datasets']}{dataset.id.val}/images/", timeout=30).json()["data"]
    assert sorted(i["Name"] for i in images) == ["pos001", "pos002", "pos003"]
