"""The OMERO double refuses what a real OMERO server refuses, over the real omero.client.

Each test drives ``pyomero_upload.testing.omero_double`` through omero-py's
``omero.client`` (SSL by default, as users connect) and checks one server
rule taken from OMERO's source.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

pytest.importorskip("omero", reason="needs omero-py (the [omero] extra)")

import Glacier2  # noqa: E402
import Ice  # noqa: E402
import omero  # noqa: E402
import omero.all  # noqa: E402,F401  (loads every model class)
import omero.cmd  # noqa: E402
import omero.grid  # noqa: E402
from omero.model import (  # noqa: E402
    DatasetAnnotationLinkI,
    DatasetI,
    ExperimenterGroupI,
    ExperimenterI,
    ImageI,
    ProjectDatasetLinkI,
    ProjectI,
    TagAnnotationI,
)
from omero.rtypes import rstring, unwrap  # noqa: E402
from omero.sys import ParametersI  # noqa: E402

from pyomero_upload.testing.omero_double import free_port  # noqa: E402


@pytest.fixture
def client(double):
    c = omero.client(double.host, double.port)
    c.createSession(double.user, double.password)
    yield c
    c.__del__()


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _pixels_type(sf, value: str):
    return sf.getQueryService().findByQuery(
        "select t from PixelsType t where t.value = :value",
        ParametersI().addString("value", value))


def _image(sf, x: int, y: int, z: int = 1, c: int = 1, t: int = 1, ptype: str = "uint16"):
    """createImage as the uploader calls it; returns (image id, Pixels as loaded)."""
    iid = unwrap(sf.getPixelsService().createImage(
        x, y, z, t, list(range(c)), _pixels_type(sf, ptype), _name("img"), ""))
    px = sf.getQueryService().findByQuery(
        "select p from Pixels p join fetch p.channels c join fetch c.logicalChannel "
        "where p.image.id = :iid", ParametersI().addLong("iid", iid))
    return iid, px


# --- start-up, state ---------------------------------------------------------------------


def test_ready_line_help_and_state_json(tmp_path):
    port, state = free_port(), tmp_path / "state.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyomero_upload.testing.omero_double", "--port", str(port),
         "--insecure-port", str(free_port()), "--state", str(state), "--workdir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().strip() == f"ready 127.0.0.1:{port}"
        c = omero.client("127.0.0.1", port)
        c.createSession("root", "omero")
        update = c.getSession().getUpdateService()
        p = ProjectI()
        p.setName(rstring("in the state"))
        pid = update.saveAndReturnObject(p).id.val
        tag = TagAnnotationI()
        tag.setTextValue(rstring("t"))
        tag.setNs(rstring("my/ns"))
        link = omero.model.ProjectAnnotationLinkI()
        link.setParent(ProjectI(pid, False))
        link.setChild(tag)
        update.saveObject(link)
        c.__del__()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    dumped = json.loads(state.read_text())
    project = next(o for o in dumped["objects"] if o["class"] == "Project")
    assert project["id"] == pid and project["fields"]["name"] == "in the state"
    assert project["owner"] == 0 and project["group"] == 0
    assert [(a["class"], a["ns"]) for a in project["annotations"]] == [("TagAnnotation", "my/ns")]
    link = next(o for o in dumped["objects"] if o["class"] == "ProjectAnnotationLink")
    assert link["fields"]["parent"] == {"class": "Project", "id": pid}
    helptext = subprocess.run([sys.executable, "-m", "pyomero_upload.testing.omero_double",
                               "--help"], capture_output=True, text=True, check=True).stdout
    assert "TEST DOUBLE for a subset of OMERO" in helptext


def test_state_lists_pixels_sha1_per_plane(double, client):
    sf = client.getSession()
    _, px = _image(sf, 8, 4, z=2)
    store = sf.createRawPixelsStore()
    store.setPixelsId(px.id.val, True)
    plane = np.arange(32, dtype=">u2").tobytes()
    store.setPlane(plane, 1, 0, 0)
    store.close()
    planes = double.state()["pixels"][str(px.id.val)]
    assert planes["size"] == [8, 4, 2, 1, 1] and planes["pyramid"] is False
    assert planes["planes"]["1,0,0"] == hashlib.sha1(plane).hexdigest()
    assert planes["planes"]["0,0,0"] == hashlib.sha1(bytes(64)).hexdigest()


# --- login and sessions ------------------------------------------------------------------


def test_wrong_password_is_refused(double):
    c = omero.client(double.host, double.port)
    try:
        with pytest.raises(Glacier2.PermissionDeniedException):
            c.createSession(double.user, "wrong")
    finally:
        c.__del__()


def test_insecure_client_reaches_the_plain_port(client):
    plain = client.createClient(secure=False)
    try:
        assert not plain.isSecure()
        ec = plain.getSession().getAdminService().getEventContext()
        assert ec.sessionUuid == client.getSessionId()
        assert plain.getSession().ice_getConnection().type() == "tcp"
        assert client.getSession().ice_getConnection().type() == "ssl"
    finally:
        plain.getSession().detachOnDestroy()
        plain.__del__()
    # the login client's session is untouched by the detached second client
    assert client.getSession().getAdminService().getEventContext().userName == "root"


def _join(double, key):
    c = omero.client(double.host, double.port)
    c.joinSession(key)
    return c


def _alive(double, key) -> bool:
    c = omero.client(double.host, double.port)
    try:
        c.joinSession(key)
        c.getSession().detachOnDestroy()
        return True
    except Exception:
        return False
    finally:
        c.__del__()


def test_joined_session_survives_close_only_when_detached(double):
    login = omero.client(double.host, double.port)
    login.createSession(double.user, double.password)
    key = login.getSessionId()
    login.getSession().detachOnDestroy()  # as `omero login` leaves its session
    login.__del__()
    assert _alive(double, key)

    joined = _join(double, key)
    joined.getSession().detachOnDestroy()
    joined.__del__()
    assert _alive(double, key), "a detached client must leave the session open"

    joined = _join(double, key)
    joined.__del__()  # closeOnDestroy: the last reference goes, the session ends
    assert not _alive(double, key)


# --- pixels ------------------------------------------------------------------------------


def test_stale_pixels_save_is_an_optimistic_lock_error(client):
    sf = client.getSession()
    _, px = _image(sf, 16, 16)
    store = sf.createRawPixelsStore()
    store.setPixelsId(px.id.val, True)
    store.setPlane(bytes(16 * 16 * 2), 0, 0, 0)
    saved = store.save()
    store.close()
    assert unwrap(saved.sha1) == hashlib.sha1(bytes(512)).hexdigest()
    px.setSha1(rstring("stale"))
    with pytest.raises(omero.OptimisticLockException):
        sf.getUpdateService().saveObject(px)
    fresh = sf.getQueryService().get("Pixels", px.id.val)
    fresh.setSha1(rstring("reloaded"))
    sf.getUpdateService().saveObject(fresh)  # a reloaded object saves
    assert unwrap(sf.getQueryService().get("Pixels", px.id.val).sha1) == "reloaded"


def test_set_stack_needs_four_arguments(client):
    sf = client.getSession()
    _, px = _image(sf, 4, 4, z=3)
    store = sf.createRawPixelsStore()
    store.setPixelsId(px.id.val, True)
    data = np.arange(48, dtype=">u2").tobytes()
    with pytest.raises(TypeError):
        store.setStack(data, 0, 0)
    store.setStack(data, 0, 0, 0)
    assert store.getPlane(2, 0, 0) == data[64:]
    store.close()


def test_written_pixels_are_read_only_to_a_new_store(client):
    sf = client.getSession()
    _, px = _image(sf, 4, 4)
    first = sf.createRawPixelsStore()
    first.setPixelsId(px.id.val, True)
    first.setPlane(bytes(range(32)), 0, 0, 0)
    first.close()
    second = sf.createRawPixelsStore()
    second.setPixelsId(px.id.val, True)
    with pytest.raises(omero.ApiUsageException, match="Write-method not permitted"):
        second.setPlane(bytes(32), 0, 0, 0)
    assert second.getPlane(0, 0, 0) == bytes(range(32))
    second.close()
    with pytest.raises(omero.ValidationException, match="Cannot read pixels"):
        sf.createRawPixelsStore().setPixelsId(10**9, True)


def test_pyramid_above_3192_squared_refuses_plane_writes(client):
    sf = client.getSession()
    _, px = _image(sf, 3193, 3193, ptype="uint8")
    store = sf.createRawPixelsStore()
    store.setPixelsId(px.id.val, True)
    assert store.requiresPixelsPyramid()
    assert list(store.getTileSize()) == [256, 256]
    with pytest.raises(omero.InternalException, match="Non-tile based writing unsupported"):
        store.setPlane(bytes(3193 * 3193), 0, 0, 0)
    tile = bytes(range(256)) * 256
    store.setTile(tile, 0, 0, 0, 512, 256, 256, 256)
    store.close()
    reader = sf.createRawPixelsStore()
    reader.setPixelsId(px.id.val, True)
    assert reader.getTile(0, 0, 0, 512, 256, 256, 256) == tile
    with pytest.raises(omero.ApiUsageException, match="read-only"):
        reader.setTile(tile, 0, 0, 0, 0, 0, 256, 256)
    reader.close()


def test_without_pyramid_only_full_width_tiles_at_x0(client):
    sf = client.getSession()
    _, px = _image(sf, 3192, 3192, ptype="uint8")
    store = sf.createRawPixelsStore()
    store.setPixelsId(px.id.val, True)
    assert not store.requiresPixelsPyramid()
    width, rows = store.getTileSize()
    assert width == 3192 and rows >= 1
    with pytest.raises(omero.InternalException, match="full row writes"):
        store.setTile(bytes(1024 * 1024), 0, 0, 0, 0, 0, 1024, 1024)
    with pytest.raises(omero.InternalException, match="0 offseted"):
        store.setTile(bytes(1024 * 1024), 0, 0, 0, 1024, 0, 1024, 1024)
    strip = bytes([7]) * (3192 * 2)
    store.setTile(strip, 0, 0, 0, 0, 10, 3192, 2)
    assert store.getTile(0, 0, 0, 0, 10, 3192, 2) == strip
    store.close()


def test_message_over_64_mb_is_refused(double, client):
    sf = client.getSession()
    _, px = _image(sf, 3000, 3000, z=4, ptype="uint16")  # 72 MB a timepoint
    store = sf.createRawPixelsStore()
    store.setPixelsId(px.id.val, True)
    with pytest.raises(Ice.ConnectionLostException):
        store.setTimepoint(bytes(3000 * 3000 * 2 * 4), 0)
    # the server dropped the connection; a new client still logs in
    c = omero.client(double.host, double.port)
    c.createSession(double.user, double.password)
    c.__del__()


# --- update ------------------------------------------------------------------------------


def test_duplicate_annotation_link_is_refused(client):
    sf = client.getSession()
    update = sf.getUpdateService()
    d = DatasetI()
    d.setName(rstring(_name("ds")))
    d = update.saveAndReturnObject(d)
    tag = TagAnnotationI()
    tag.setTextValue(rstring("t"))
    tag = update.saveAndReturnObject(tag)

    def link():
        li = DatasetAnnotationLinkI()
        li.setParent(DatasetI(d.id.val, False))
        li.setChild(TagAnnotationI(tag.id.val, False))
        return li

    update.saveArray([link()])
    with pytest.raises(omero.ValidationException, match="unique"):
        update.saveArray([link()])
    with pytest.raises(omero.ValidationException, match="unique"):
        update.saveArray([link(), link()])


def test_not_null_fields_are_required(client):
    update = client.getSession().getUpdateService()
    with pytest.raises(omero.ValidationException, match="name"):
        update.saveObject(ProjectI())
    li = ProjectDatasetLinkI()
    li.setParent(ProjectI(1, False))
    with pytest.raises(omero.ValidationException):
        update.saveObject(li)


# --- queries -----------------------------------------------------------------------------


def test_queries_the_client_sends(client):
    sf = client.getSession()
    update, query = sf.getUpdateService(), sf.getQueryService()
    uid = sf.getAdminService().getEventContext().userId
    name = _name("proj")
    p = ProjectI()
    p.setName(rstring(name))
    p = update.saveAndReturnObject(p)
    d = DatasetI()
    d.setName(rstring("inside"))
    d = update.saveAndReturnObject(d)
    li = ProjectDatasetLinkI()
    li.setParent(ProjectI(p.id.val, False))
    li.setChild(DatasetI(d.id.val, False))
    update.saveObject(li)
    found = query.findAllByQuery(
        "select p from Project p where p.name = :name and p.details.owner.id = :uid "
        "order by p.id", ParametersI().addString("name", name).addLong("uid", uid))
    assert [f.id.val for f in found] == [p.id.val]
    found = query.findAllByQuery(
        "select d from Dataset d join d.projectLinks l where d.name = :name "
        "and l.parent.id = :pid and d.details.owner.id = :uid order by d.id",
        ParametersI().addString("name", "inside").addLong("pid", p.id.val).addLong("uid", uid))
    assert [f.id.val for f in found] == [d.id.val]
    rows = query.projection(
        "select d.id, d.name, p.name from Dataset d left outer join d.projectLinks l "
        "left outer join l.parent p where d.name like :pattern order by d.id desc",
        ParametersI().addString("pattern", "insi%"))
    assert [unwrap(r) for r in rows[0]] == [d.id.val, "inside", name]
    assert query.findByQuery("select p from Project p where p.name = :name",
                             ParametersI().addString("name", "no such")) is None
    page = query.findAllByQuery("select t from PixelsType t order by t.value",
                                ParametersI().page(1, 2))
    every = query.findAllByQuery("select t from PixelsType t order by t.value", None)
    assert [unwrap(t.value) for t in page] == [unwrap(t.value) for t in every[1:3]]
    mine = query.findAllByQuery("select p from Project p", ParametersI().exp(uid))
    assert p.id.val in [m.id.val for m in mine]
    assert query.findAllByQuery("select p from Project p", ParametersI().exp(uid + 999)) == []
    with pytest.raises(omero.ApiUsageException, match="more than one Object"):
        query.findByQuery("select t from PixelsType t", None)


def test_notebook_queries_over_annotations(client):
    sf = client.getSession()
    update, query = sf.getUpdateService(), sf.getQueryService()
    d = DatasetI()
    d.setName(rstring(_name("ds")))
    d = update.saveAndReturnObject(d)
    text = _name("tag")
    tag = TagAnnotationI()
    tag.setTextValue(rstring(text))
    kv = omero.model.MapAnnotationI()
    kv.setMapValue([omero.model.NamedValue("k", "v")])
    links = []
    for ann in update.saveAndReturnArray([tag, kv]):
        li = DatasetAnnotationLinkI()
        li.setParent(DatasetI(d.id.val, False))
        li.setChild(type(ann)(ann.id.val, False))
        links.append(li)
    update.saveArray(links)
    tagged = query.findAllByQuery(
        "select o from Dataset o join o.annotationLinks l join l.child t "
        "where t.class = TagAnnotation and t.textValue = :text",
        ParametersI().addString("text", text))
    assert [o.id.val for o in tagged] == [d.id.val]
    got = query.findAllByQuery(
        "select l from DatasetAnnotationLink l join fetch l.child where l.parent.id = :id",
        ParametersI().addId(d.id.val))
    assert sorted(type(li.child).__name__ for li in got) == ["MapAnnotationI", "TagAnnotationI"]
    assert all(li.child.isLoaded() for li in got)
    files = query.findAllByQuery(  # a.file exists on FileAnnotation only: others drop out
        "select l from DatasetAnnotationLink l join fetch l.child a join fetch a.file "
        "where l.parent.id = :id", ParametersI().addId(d.id.val))
    assert files == []


def test_unsupported_query_is_a_clear_error(client):
    query = client.getSession().getQueryService()
    hql = "select count(p) from Project p group by p.name"
    with pytest.raises(omero.QueryException) as err:
        query.findAllByQuery(hql, None)
    assert hql in err.value.message
    with pytest.raises(omero.QueryException, match="not mapped"):
        query.findAllByQuery("select x from NoSuchThing x", None)


def _tree(sf):
    """A project with two datasets (the first holding one image) and an orphan dataset."""
    update = sf.getUpdateService()
    p = ProjectI()
    p.setName(rstring(_name("Tree")))
    p = update.saveAndReturnObject(p)
    ds = []
    for name in ("b-second", "A-first", "orphan"):
        d = DatasetI()
        d.setName(rstring(f"{name}-{uuid.uuid4().hex[:6]}"))
        ds.append(update.saveAndReturnObject(d))
    for d in ds[:2]:
        li = ProjectDatasetLinkI()
        li.setParent(ProjectI(p.id.val, False))
        li.setChild(DatasetI(d.id.val, False))
        update.saveObject(li)
    iid, _ = _image(sf, 2, 2)
    li = omero.model.DatasetImageLinkI()
    li.setParent(DatasetI(ds[1].id.val, False))
    li.setChild(ImageI(iid, False))
    update.saveObject(li)
    return p, ds, iid


def test_hql_shapes_omero_web_sends(client):
    """The query shapes of omeroweb webclient/tree.py and api/api_query.py, answered as
    Hibernate answers them."""
    sf = client.getSession()
    p, ds, iid = _tree(sf)
    q = sf.getQueryService()
    pid = p.id.val
    # tree.py marshal_projects: new map, a scalar subquery, x_details_permissions
    rows = q.projection(
        "select new map(project.id as id, project.name as name, "
        "project.details.owner.id as ownerId, project as project_details_permissions, "
        "(select count(id) from ProjectDatasetLink pdl where pdl.parent = project.id) "
        "as childCount) from Project project where project.id = :id "
        "order by lower(project.name), project.id", ParametersI().addId(pid))
    (row,) = [unwrap(r)[0] for r in rows]
    assert (row["id"], row["name"], row["childCount"]) == (pid, unwrap(p.name), 2)
    assert row["project_details_permissions"]["perm"] == "rwr---"  # the system group's
    assert row["project_details_permissions"]["canEdit"] is True
    # datasets of the project, by lower(name): "A-first" before "b-second"
    rows = q.projection(
        "select new map(dataset.id as id, (select count(id) from DatasetImageLink dil "
        "where dil.parent=dataset.id) as childCount) from Dataset dataset "
        "join dataset.projectLinks plink where plink.parent.id = :pid "
        "order by lower(dataset.name), dataset.id", ParametersI().addLong("pid", pid))
    assert [(unwrap(r)[0]["id"], unwrap(r)[0]["childCount"]) for r in rows] == [
        (ds[1].id.val, 1), (ds[0].id.val, 0)]
    # orphans: not exists (subquery)
    rows = q.projection(
        "select dataset.id from Dataset dataset where not exists (select pdlink from "
        "ProjectDatasetLink as pdlink where pdlink.child = dataset.id) and dataset.id in "
        "(:ids)", ParametersI().addIds([d.id.val for d in ds]))
    assert [unwrap(r)[0] for r in rows] == [ds[2].id.val]
    # api_query.get_child_counts: group by
    rows = q.projection(
        "select chl.parent.id, count(chl.id) from ProjectDatasetLink chl "
        "where chl.parent.id in (:ids) group by chl.parent.id", ParametersI().addIds([pid]))
    assert [[unwrap(c) for c in r] for r in rows] == [[pid, 2]]
    # count(*), count(distinct), sum(case ...), coalesce, or, !=, is null, ||, not in
    ids = ParametersI().addIds([d.id.val for d in ds])
    [[n, distinct, named, first]] = q.projection(
        "select count(*), count(distinct d.details.owner.id), "
        "sum(case when d.name like 'A-%' or d.name like 'b-%' then 1 else 0 end), "
        "min(coalesce(d.description, 'none') || ':' || lower(d.name)) "
        "from Dataset d where d.id in (:ids) and d.description is null and d.id != -1", ids)
    assert [unwrap(v) for v in (n, distinct, named)] == [3, 1, 2]
    assert unwrap(first).startswith("none:a-first")
    rows = q.projection(
        "select d.id from Dataset d where d.id in (:ids) and d.id not in "
        "(select l.child.id from ProjectDatasetLink l)", ids)
    assert [unwrap(r)[0] for r in rows] == [ds[2].id.val]
    # an empty group is one row of zero, as SQL counts
    assert unwrap(q.projection("select count(*) from Dataset d where d.id = -5", None)) == [[0]]


def test_groups_of_a_user_as_blitzgateway_loads_them(client, double):
    sf = client.getSession()
    uid = sf.getAdminService().getEventContext().userId
    (me,) = sf.getQueryService().findAllByQuery(
        "select distinct obj from Experimenter as obj left outer join fetch "
        "obj.groupExperimenterMap as groupExperimenterMap left outer join fetch "
        "groupExperimenterMap.parent g where obj.id = :id", ParametersI().addId(uid))
    assert [m.parent.name.val for m in me.copyGroupExperimenterMap()] == ["system", "user"]
    assert [g.id.val for g in sf.getAdminService().containedGroups(uid)] == [0, 1]
    admin = sf.getAdminService()
    assert {e.omeName.val for e in admin.containedExperimenters(1)} >= {double.user}
    assert len(admin.getCurrentAdminPrivileges()) == 15


@pytest.mark.parametrize("hql, shape", [
    ("select soundex(p.name) from Project p", "the function soundex()"),
    ("select p from Project p where p.name = ", "unexpected end"),
    ("select p.nosuch from Project p", "could not resolve property: nosuch"),
    ("select p.datasetLinks.child from Project p", "the collection 'datasetLinks'"),
])
def test_hql_the_double_cannot_answer_names_the_query(client, hql, shape):
    with pytest.raises(omero.QueryException) as err:
        client.getSession().getQueryService().projection(hql, None)
    assert shape in err.value.message


def test_services_for_omero_web(client):
    """IContainer, IMetadata, ITypes, IConfig and a RenderingEngine, as BlitzGateway
    calls them for OMERO.web's pages."""
    sf = client.getSession()
    p, ds, iid = _tree(sf)
    (img,) = sf.getContainerService().getImages("Image", [iid], None)
    assert img.getPrimaryPixels().getPixelsType().getValue().val == "uint16"
    assert [i.id.val for i in sf.getContainerService().getImages("Dataset", [ds[1].id.val],
                                                                 None)] == [iid]
    (proj,) = sf.getContainerService().loadContainerHierarchy("Project", [p.id.val], None)
    assert sorted(lk.child.id.val for lk in proj.copyDatasetLinks()) == sorted(
        d.id.val for d in ds[:2])
    assert sf.getContainerService().getCollectionCount(
        "Dataset", "imageLinks", [ds[1].id.val, ds[0].id.val], None) == {
        ds[1].id.val: 1, ds[0].id.val: 0}
    assert sf.getMetadataService().loadAnnotations("Image", [iid], [], [], None) == {iid: []}
    types = sf.getTypesService()
    assert types.getEnumeration("omero.model.PixelsType", "uint16").value.val == "uint16"
    assert [m.value.val for m in types.allEnumerations("RenderingModel")] == ["rgb",
                                                                              "greyscale"]
    with pytest.raises(omero.ApiUsageException, match="not an enumeration"):
        types.allEnumerations("Project")
    config = sf.getConfigService()
    assert config.getConfigValue("omero.version").startswith(config.getVersion())
    assert config.getConfigValues("^omero\\.version$") == {
        "omero.version": config.getConfigValue("omero.version")}
    # a rendering engine needs the pixels on disk: this image has none yet
    re = sf.createRenderingEngine()
    try:
        re.lookupPixels(img.getPrimaryPixels().id.val)
        assert re.lookupRenderingDef(img.getPrimaryPixels().id.val) is False
        with pytest.raises(omero.LockTimeout):
            re.resetDefaultSettings(True)
    finally:
        re.close()


def test_rendering_engine_renders_the_pixels(client):
    import io

    from PIL import Image

    sf = client.getSession()
    iid, px = _image(sf, 4, 2, c=2)
    store = sf.createRawPixelsStore()
    store.setPixelsId(px.id.val, True)
    store.setPlane(bytes([0, 0, 0, 10, 0, 20, 0, 30] * 2), 0, 0, 0)  # uint16 big-endian
    store.setPlane(bytes(16), 0, 1, 0)
    store.close()
    re = sf.createRenderingEngine()
    try:
        re.lookupPixels(px.id.val)
        re.resetDefaultSettings(True)
        assert re.lookupRenderingDef(px.id.val)
        re.load()
        assert re.getModel().value.val == "rgb" and re.isActive(0) and re.isActive(1)
        assert re.getChannelWindowEnd(0) == 65535.0  # no StatsInfo: the type's range
        re.setChannelWindow(0, 0, 30)
        re.setRGBA(0, 255, 255, 255, 255)
        re.setActive(1, False)
        re.setCompressionLevel(1.0)
        pd = omero.romio.PlaneDef(omero.romio.XY, z=0, t=0)
        packed = re.renderAsPackedInt(pd)
        assert [(v >> 8) & 0xFF for v in packed] == [0, 85, 170, 255] * 2
        with Image.open(io.BytesIO(re.renderCompressed(pd))) as im:
            assert im.size == (4, 2)
        re.addCodomainMapToChannel(omero.romio.ReverseIntensityMapContext(), 0)
        assert isinstance(re.getCodomainMapContext(0)[0], omero.model.ReverseIntensityContext)
        assert [(v >> 8) & 0xFF for v in re.renderAsPackedInt(pd)] == [255, 170, 85, 0] * 2
        re.setChannelLookupTable(0, "fire.lut")
        with pytest.raises(omero.ApiUsageException, match="lookup tables"):
            re.renderCompressed(pd)
    finally:
        re.close()


def test_fetch_joins_load_what_was_asked_only(client):
    sf = client.getSession()
    iid, px = _image(sf, 4, 4, c=2)
    assert [unwrap(ch.getLogicalChannel().isLoaded()) for ch in px.copyChannels()] == [True] * 2
    bare = sf.getQueryService().findByQuery("select p from Pixels p where p.image.id = :iid",
                                            ParametersI().addLong("iid", iid))
    with pytest.raises(omero.UnloadedEntityException):
        bare.copyChannels()


# --- groups ------------------------------------------------------------------------------


def test_objects_of_another_group_are_invisible(double, client):
    sf = client.getSession()
    admin = sf.getAdminService()
    group = ExperimenterGroupI()
    group.setName(rstring(_name("lab")))
    group.setLdap(omero.rtypes.rbool(False))
    gid = admin.createGroup(group)
    user = ExperimenterI()
    uname = _name("bob")
    user.setOmeName(rstring(uname))
    user.setFirstName(rstring("Bob"))
    user.setLastName(rstring("B"))
    user.setLdap(omero.rtypes.rbool(False))
    admin.createExperimenterWithPassword(user, rstring("pw"), ExperimenterGroupI(gid, False), [])
    p = ProjectI()
    p.setName(rstring("root's"))
    pid = sf.getUpdateService().saveAndReturnObject(p).id.val

    bob = omero.client(double.host, double.port)
    bob.createSession(uname, "pw")
    try:
        bsf = bob.getSession()
        assert bsf.getAdminService().getEventContext().groupId == gid
        assert bsf.getQueryService().find("Project", pid) is None
        with pytest.raises(omero.ApiUsageException, match="not available"):
            bsf.getQueryService().get("Project", pid)
        with pytest.raises(omero.SecurityViolation):
            bsf.setSecurityContext(ExperimenterGroupI(0, False))
        g = bsf.getAdminService().lookupGroup(unwrap(group.name))
        bsf.setSecurityContext(ExperimenterGroupI(g.id.val, False))
        with pytest.raises(omero.ApiUsageException):
            bsf.getAdminService().lookupGroup("no such group")
    finally:
        bob.__del__()


def _group_with_users(sf, perms: str, *names: str) -> int:
    admin = sf.getAdminService()
    group = ExperimenterGroupI()
    group.setName(rstring(_name("lab")))
    group.setLdap(omero.rtypes.rbool(False))
    group.getDetails().setPermissions(omero.model.PermissionsI(perms))
    gid = admin.createGroup(group)
    for name in names:
        user = ExperimenterI()
        user.setOmeName(rstring(name))
        user.setFirstName(rstring(name))
        user.setLastName(rstring(name))
        user.setLdap(omero.rtypes.rbool(False))
        admin.createExperimenterWithPassword(user, rstring("pw"),
                                             ExperimenterGroupI(gid, False), [])
    return gid


@pytest.mark.parametrize("perms, shared", [("rw----", False), ("rwra--", True)])
def test_private_group_hides_members_objects_from_each_other(double, client, perms, shared):
    alice, carol = _name("alice"), _name("carol")
    _group_with_users(client.getSession(), perms, alice, carol)
    a = omero.client(double.host, double.port)
    a.createSession(alice, "pw")
    c = omero.client(double.host, double.port)
    c.createSession(carol, "pw")
    try:
        p = ProjectI()
        p.setName(rstring("alice's"))
        pid = a.getSession().getUpdateService().saveAndReturnObject(p).id.val
        seen = c.getSession().getQueryService().find("Project", pid)
        assert (seen is not None) == shared
        if shared:  # readable is not writable: only the owner (or an admin) may update
            seen.setName(rstring("carol's now"))
            with pytest.raises(omero.SecurityViolation):
                c.getSession().getUpdateService().saveObject(seen)
    finally:
        a.__del__()
        c.__del__()


def test_no_group_switch_with_open_stateful_services(client):
    sf = client.getSession()
    gid = _group_with_users(sf, "rw----")
    sf.getAdminService().addGroups(ExperimenterI(0, False), [ExperimenterGroupI(gid, False)])
    store = sf.createRawPixelsStore()
    with pytest.raises(omero.SecurityViolation, match="stateful"):
        sf.setSecurityContext(ExperimenterGroupI(gid, False))
    store.close()
    sf.setSecurityContext(ExperimenterGroupI(gid, False))
    assert sf.getAdminService().getEventContext().groupId == gid


# --- tables ------------------------------------------------------------------------------


def test_table_column_rules_and_read_back(client):
    resources = client.getSession().sharedResources()
    assert resources.areTablesEnabled()
    table = resources.newTable(1, "doses.h5")
    cols = [omero.grid.LongColumn("Dose", "", [1, 2]),
            omero.grid.StringColumn("Drug", "", 4, ["a", "bcd"])]
    with pytest.raises(omero.ApiUsageException, match="Duplicate column name: X"):
        table.initialize([omero.grid.LongColumn("X", "", []), omero.grid.LongColumn("X", "", [])])
    table.initialize([omero.grid.LongColumn("Dose", "", []),
                      omero.grid.StringColumn("Drug", "", 4, [])])
    with pytest.raises(omero.ValidationException, match="Already initialized"):
        table.initialize([omero.grid.LongColumn("Dose", "", [])])
    with pytest.raises(omero.InternalException, match="do not match"):
        table.addData([omero.grid.DoubleColumn("Dose", "", [1.0])])
    with pytest.raises(omero.ValidationException, match="Maximum string"):
        table.addData([omero.grid.LongColumn("Dose", "", [1]),
                       omero.grid.StringColumn("Drug", "", 4, ["toolong"])])
    with pytest.raises(omero.ValidationException, match="differing length"):
        table.addData([omero.grid.LongColumn("Dose", "", [1, 2]),
                       omero.grid.StringColumn("Drug", "", 4, ["a"])])
    assert table.getNumberOfRows() == 0
    table.addData(cols)
    assert [h.name for h in table.getHeaders()] == ["Dose", "Drug"]
    data = table.readCoordinates([1])
    assert [c.values for c in data.columns] == [[2], ["bcd"]]
    fid = table.getOriginalFile().id.val
    table.close()
    again = resources.openTable(omero.model.OriginalFileI(fid, False))
    assert again.getNumberOfRows() == 2
    again.close()


# --- delete ------------------------------------------------------------------------------


def test_delete2_removes_the_graph_and_reports_errors(client):
    sf = client.getSession()
    iid, px = _image(sf, 4, 4)
    d = DatasetI()
    d.setName(rstring(_name("ds")))
    d = sf.getUpdateService().saveAndReturnObject(d)
    li = omero.model.DatasetImageLinkI()
    li.setParent(DatasetI(d.id.val, False))
    li.setChild(ImageI(iid, False))
    sf.getUpdateService().saveObject(li)
    kv = omero.model.MapAnnotationI()
    kv.setMapValue([omero.model.NamedValue("k", "v")])
    kv = sf.getUpdateService().saveAndReturnObject(kv)
    ali = omero.model.ImageAnnotationLinkI()
    ali.setParent(ImageI(iid, False))
    ali.setChild(omero.model.MapAnnotationI(kv.id.val, False))
    sf.getUpdateService().saveObject(ali)
    dry = client.submit(omero.cmd.Delete2(targetObjects={"Image": [iid]}, dryRun=True))
    assert iid in dry.getResponse().deletedObjects["ome.model.Image"]
    assert sf.getQueryService().find("Image", iid) is not None  # a dry run deletes nothing
    cb = client.submit(omero.cmd.Delete2(targetObjects={"Image": [iid]}), loops=10, ms=100)
    deleted = cb.getResponse().deletedObjects
    assert iid in deleted["ome.model.Image"] and px.id.val in deleted["ome.model.Pixels"]
    assert deleted["ome.model.DatasetImageLink"]
    assert deleted["ome.model.MapAnnotation"] == [kv.id.val]  # orphaned by the delete
    query = sf.getQueryService()
    assert query.find("Image", iid) is None and query.find("Pixels", px.id.val) is None
    assert query.find("Dataset", d.id.val) is not None
    with pytest.raises(omero.CmdError):
        client.submit(omero.cmd.Delete2(targetObjects={"Image": [iid]}), loops=10, ms=100)


# --- files and thumbnails ------------------------------------------------------------------


def test_upload_and_read_back_a_file(client, tmp_path):
    src = tmp_path / "notes.txt"
    src.write_bytes(b"x" * 3000 + b"end")
    ofile = client.upload(str(src), name="notes.txt", type="text/plain")
    stored = client.getSession().getQueryService().get("OriginalFile", ofile.id.val)
    assert unwrap(stored.size) == 3003  # set by RawFileStore.close, as on the server
    assert unwrap(stored.hash) == hashlib.sha1(src.read_bytes()).hexdigest()
    store = client.getSession().createRawFileStore()
    store.setFileId(ofile.id.val)
    assert store.read(2990, 100) == b"x" * 10 + b"end"
    store.close()


def test_thumbnail_needs_pixels_then_rendering_settings(client):
    sf = client.getSession()
    iid, px = _image(sf, 64, 32)
    rendering = sf.getRenderingSettingsService()
    with pytest.raises(omero.LockTimeout, match="Import in progress"):
        rendering.resetDefaultsInSet("Image", [iid])  # no pixels written yet
    store = sf.createRawPixelsStore()
    store.setPixelsId(px.id.val, True)
    store.setPlane(np.arange(64 * 32, dtype=">u2").tobytes(), 0, 0, 0)
    store.close()
    thumbs = sf.createThumbnailStore()
    assert not thumbs.setPixelsId(px.id.val)  # no rendering settings yet
    with pytest.raises(omero.InternalException, match="rendering settings"):
        thumbs.getThumbnailByLongestSide(omero.rtypes.rint(16))
    assert list(rendering.resetDefaultsInSet("Image", [iid])) == [iid]
    assert thumbs.setPixelsId(px.id.val)
    jpeg = thumbs.getThumbnailByLongestSide(omero.rtypes.rint(16))
    thumbs.close()
    assert jpeg[:2] == b"\xff\xd8"


def test_unimplemented_operation_says_so(client):
    with pytest.raises(omero.ApiUsageException, match="not implemented by the OMERO double"):
        client.getSession().getPixelsService().getAllEnumerations("PixelsType")


def test_a_dropped_connection_ends_the_session(double):
    c = omero.client(double.host, double.port)
    c.createSession(double.user, double.password)
    key = c.getSessionId()
    assert _alive(double, key)
    c.getSession().ice_getConnection().close(True)  # the network goes, no destroySession
    for _ in range(50):  # Glacier2 notices the closed connection
        if not _alive(double, key):
            break
        time.sleep(0.1)
    assert not _alive(double, key)
    # the client reconnects by itself, but a connection without a session is closed
    with pytest.raises(Ice.ConnectionLostException):
        c.getSession().getAdminService().getEventContext()
    c.getCommunicator().destroy()


def test_omero_cli_login_and_stored_session(double, client, tmp_path):
    project = ProjectI()
    project.setName(rstring(_name("for-hql")))
    client.getSession().getUpdateService().saveObject(project)
    env = {**os.environ, "OMERO_SESSIONDIR": str(tmp_path / "sessions"),
           "OMERO_USERDIR": str(tmp_path / "user")}
    cli = "from omero.cli import argv; import sys; argv(['omero'] + sys.argv[1:])"

    def omero_cli(*args):
        # omero.cli.argv, not bin/omero: that refuses to run as root (omero/main.py)
        return subprocess.run([sys.executable, "-c", cli, *args], env=env, capture_output=True,
                              text=True, timeout=120)

    server = ["-s", double.host, "-p", str(double.port), "-u", double.user]
    first = omero_cli("login", *server, "-w", double.password)
    assert "Created session" in first.stdout + first.stderr, first.stderr
    again = omero_cli("login", *server)
    assert "Using session" in again.stdout + again.stderr, again.stderr
    from omero.util.sessions import SessionsStore

    hql = omero_cli("hql", "-q", f"select p from Project p where p.name = '{unwrap(project.name)}'")
    assert unwrap(project.name) in hql.stdout and hql.returncode == 0, hql.stderr
    host, user, key, port = SessionsStore(tmp_path / "sessions").get_current()
    assert (host, user, int(port)) == (double.host, double.user, double.port)
    assert _alive(double, key)  # `omero login` detached: its session outlives the CLI


def test_blitz_gateway_get_objects(client):
    from omero.gateway import BlitzGateway

    name = _name("gw")
    project = ProjectI()
    project.setName(rstring(name))
    pid = client.getSession().getUpdateService().saveAndReturnObject(project).id.val
    conn = BlitzGateway(client_obj=client)
    found = list(conn.getObjects("Project", attributes={"name": name}))
    assert [(p.getId(), p.getName(), p.getOwnerOmeName()) for p in found] == [
        (pid, name, "root")]


def test_delete2_dataset_keeps_images_held_elsewhere(client):
    sf = client.getSession()
    update, query = sf.getUpdateService(), sf.getQueryService()
    datasets = []
    for _ in range(2):
        d = DatasetI()
        d.setName(rstring(_name("ds")))
        datasets.append(update.saveAndReturnObject(d).id.val)
    only_here, shared = _image(sf, 2, 2)[0], _image(sf, 2, 2)[0]
    for did, iid in [(datasets[0], only_here), (datasets[0], shared), (datasets[1], shared)]:
        li = omero.model.DatasetImageLinkI()
        li.setParent(DatasetI(did, False))
        li.setChild(ImageI(iid, False))
        update.saveObject(li)
    client.submit(omero.cmd.Delete2(targetObjects={"Dataset": [datasets[0]]}), loops=10, ms=100)
    assert query.find("Dataset", datasets[0]) is None
    assert query.find("Image", only_here) is None  # orphaned by the delete
    assert query.find("Image", shared) is not None  # still in the other dataset


def test_a_user_saves_a_graph_holding_loaded_system_rows(double, client):
    """A non-admin saves Pixels fetched with its pixelsType (an enum, owned by root):
    the unchanged enum is no update (ACLEventListener.onPreUpdate runs for dirty rows
    only), while changing the enum is refused."""
    admin = client.getSession().getAdminService()
    group = ExperimenterGroupI()
    group.setName(rstring(_name("lab")))
    gid = admin.createGroup(group)
    user = ExperimenterI()
    uname = _name("carol")
    user.setOmeName(rstring(uname))
    user.setFirstName(rstring("C"))
    user.setLastName(rstring("C"))
    admin.createExperimenterWithPassword(user, rstring("pw"), ExperimenterGroupI(gid, False), [])
    carol = omero.client(double.host, double.port)
    carol.createSession(uname, "pw")
    try:
        sf = carol.getSession()
        iid, _ = _image(sf, 8, 8)
        px = sf.getQueryService().findByQuery(
            "select p from Pixels p join fetch p.pixelsType where p.image.id = :iid",
            ParametersI().addLong("iid", iid))
        assert px.pixelsType.isLoaded() and unwrap(px.pixelsType.details.owner.id) == 0
        px.setSha1(rstring("changed"))
        sf.getUpdateService().saveArray([px])
        assert unwrap(sf.getQueryService().get("Pixels", px.id.val).sha1) == "changed"
        px = sf.getQueryService().findByQuery(
            "select p from Pixels p join fetch p.pixelsType where p.image.id = :iid",
            ParametersI().addLong("iid", iid))
        px.pixelsType.setValue(rstring("float"))
        with pytest.raises(omero.SecurityViolation):
            sf.getUpdateService().saveArray([px])
    finally:
        carol.__del__()


# --- guest, closing quietly, queries of units and map values, state of tables and deletes --


def test_guest_logs_in_and_security_roles_match_omero(double):
    """omero-common ome/system/Roles.java: root 0, system group 0, user group 1,
    guest 1, guest group 2; guest/guest logs in as OMERO.web's connector does."""
    c = omero.client(double.host, double.port)
    try:
        c.createSession("guest", "guest")
        sf = c.getSession()
        ec = sf.getAdminService().getEventContext()
        assert (ec.userName, ec.userId, ec.groupName, ec.groupId) == ("guest", 1, "guest", 2)
        assert ec.isAdmin is False
        roles = sf.getAdminService().getSecurityRoles()
        assert (roles.rootId, roles.rootName, roles.systemGroupId, roles.systemGroupName,
                roles.userGroupId, roles.userGroupName, roles.guestId, roles.guestName,
                roles.guestGroupId, roles.guestGroupName) == (
            0, "root", 0, "system", 1, "user", 1, "guest", 2, "guest")
        guest = sf.getAdminService().lookupExperimenter("guest")
        assert unwrap(guest.id) == roles.guestId
        assert sf.getAdminService().getMemberOfGroupIds(guest) == [roles.guestGroupId]
    finally:
        c.__del__()


def test_blitz_gateway_connects_as_guest(double):
    from omero.gateway import BlitzGateway

    conn = BlitzGateway("guest", "guest", host=double.host, port=double.port)
    try:
        assert conn.connect() is True
        ec = conn.getEventContext()
        assert (ec.userName, ec.userId, ec.groupId) == ("guest", 1, 2)
        assert conn.isAdmin() is False
    finally:
        conn.close()


def _omero_warnings(caplog):
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records
            if r.name.startswith("omero") and r.levelno >= logging.WARNING]


def test_blitz_gateway_close_is_quiet(double, caplog):
    """BlitzGateway.close kills the session, then omero.client's destroySession finds
    Glacier2's session still there (SessionManagerI.reapSession does not tell Glacier2):
    no warning, no traceback."""
    from omero.gateway import BlitzGateway

    caplog.set_level(logging.WARNING, logger="omero")
    conn = BlitzGateway(double.user, double.password, host=double.host, port=double.port)
    assert conn.connect() is True
    key = conn.getSession().getUuid().val
    conn.close()
    assert _omero_warnings(caplog) == []
    assert not _alive(double, key)  # close(hard=True) ended the session


def test_client_close_after_the_session_ended_is_quiet(double, caplog):
    caplog.set_level(logging.WARNING, logger="omero")
    c = omero.client(double.host, double.port)
    c.createSession(double.user, double.password)
    key = c.getSessionId()
    other = omero.client(double.host, double.port)
    other.joinSession(key)
    other.killSession()  # the session ends under the first client
    other.__del__()
    assert not _alive(double, key)
    c.closeSession()
    c.__del__()
    assert _omero_warnings(caplog) == []


def test_destroy_session_without_one_is_the_slice_exception(double):
    """A second destroySession over the same connection: Glacier2's
    SessionNotExistException (the Slice user exception, not Ice.UnknownException)."""
    c = omero.client(double.host, double.port)
    c.createSession(double.user, double.password)
    try:
        router = c.getRouter(c.getCommunicator())
        router.destroySession()
        with pytest.raises(Ice.UserException) as err:
            router.destroySession()
        assert err.value.ice_name() == "Glacier2::SessionNotExistException"
    finally:
        c.__del__()


def _pixels_with_units(sf):
    iid, px = _image(sf, 2, 2)
    px.setPhysicalSizeZ(omero.model.LengthI(2.5, omero.model.enums.UnitsLength.MICROMETER))
    sf.getUpdateService().saveObject(px)
    info = omero.model.PlaneInfoI()
    info.setPixels(omero.model.PixelsI(px.id.val, False))
    for name in ("theZ", "theC", "theT"):
        getattr(info, "set" + name[0].upper() + name[1:])(omero.rtypes.rint(0))
    info.setDeltaT(omero.model.TimeI(1.5, omero.model.enums.UnitsTime.SECOND))
    sf.getUpdateService().saveObject(info)
    return iid, px.id.val


def test_projection_of_unit_fields(client):
    """omero-blitz omero/util/IceMapper.java toRType: a unit is an rmap of value, unit
    (the enum's name) and symbol; .value is an rdouble, .unit an rstring."""
    sf = client.getSession()
    _, pid = _pixels_with_units(sf)
    query = sf.getQueryService()
    params = ParametersI().addLong("pid", pid)
    [[whole]] = query.projection(
        "select p.physicalSizeZ from Pixels p where p.id = :pid", params)
    assert isinstance(whole, omero.RMap)
    assert unwrap(whole) == {"value": 2.5, "unit": "MICROMETER", "symbol": "µm"}
    [[value, unit]] = query.projection(
        "select p.physicalSizeZ.value, p.physicalSizeZ.unit from Pixels p where p.id = :pid",
        params)
    assert isinstance(value, omero.RDouble) and isinstance(unit, omero.RString)
    assert (value.val, unit.val) == (2.5, "MICROMETER")
    [[unset]] = query.projection("select p.physicalSizeX from Pixels p where p.id = :pid",
                                 params)
    assert unset is None
    [[delta]] = query.projection(
        "select pi.deltaT from PlaneInfo pi where pi.pixels.id = :pid", params)
    assert unwrap(delta) == {"value": 1.5, "unit": "SECOND", "symbol": "s"}


def _tagged_map(sf, pairs):
    iid, _ = _image(sf, 2, 2)
    kv = omero.model.MapAnnotationI()
    kv.setMapValue([omero.model.NamedValue(k, v) for k, v in pairs])
    kv = sf.getUpdateService().saveAndReturnObject(kv)
    link = omero.model.ImageAnnotationLinkI()
    link.setParent(ImageI(iid, False))
    link.setChild(omero.model.MapAnnotationI(kv.id.val, False))
    sf.getUpdateService().saveObject(link)
    return iid, kv.id.val


def test_key_value_join_as_ezomero_filter_by_kv_sends(client):
    sf = client.getSession()
    key = _name("key")
    match, kv_match = _tagged_map(sf, [(key, "yes"), ("other", "x")])
    other, kv_other = _tagged_map(sf, [(key, "no")])
    query = sf.getQueryService()
    rows = query.projection(
        "select distinct i.id from Image i join i.annotationLinks ial join ial.child a "
        "join a.mapValue mv where mv.name = :key and mv.value = :value "
        "and i.id in (:ids)",
        ParametersI().addString("key", key).addString("value", "yes").addIds([match, other]))
    assert [[unwrap(c) for c in r] for r in rows] == [[match]]
    pairs = query.projection(
        "select mv.name, mv.value from MapAnnotation m join m.mapValue mv where m.id = :id",
        ParametersI().addId(kv_match))
    assert [[unwrap(c) for c in r] for r in pairs] == [[key, "yes"], ["other", "x"]]
    found = query.findAllByQuery(
        "select distinct a from Annotation a join a.mapValue mv where mv.name = :key",
        ParametersI().addString("key", key))
    assert sorted(unwrap(a.id) for a in found) == sorted([kv_match, kv_other])


@pytest.mark.parametrize("hql, shape", [
    ("select m.mapValue from MapAnnotation m", "collection-valued property 'm.mapValue'"),
    ("select mv from MapAnnotation m join m.mapValue mv", "mapValue element 'mv'"),
    ("select m from MapAnnotation m join fetch m.mapValue mv", "join fetch of the component"),
])
def test_map_value_shapes_the_double_cannot_answer_name_the_query(client, hql, shape):
    query = client.getSession().getQueryService()
    with pytest.raises(omero.QueryException) as err:
        if hql.startswith("select m from"):
            query.findAllByQuery(hql, None)
        else:
            query.projection(hql, None)
    assert shape in err.value.message and hql in err.value.message


def test_table_close_sets_the_file_size_and_hash(client):
    """omero-py src/omero/tables.py TableI.close: the modified table's OriginalFile gets
    its size and hash through a RawFileStore save."""
    sf = client.getSession()
    table = sf.sharedResources().newTable(1, _name("sized") + ".h5")
    table.initialize([omero.grid.LongColumn("n", "", [])])
    table.addData([omero.grid.LongColumn("n", "", [1, 2, 3])])
    fid = table.getOriginalFile().id.val
    assert unwrap(sf.getQueryService().get("OriginalFile", fid).size) is None  # still open
    table.close()
    stored = sf.getQueryService().get("OriginalFile", fid)
    store = sf.createRawFileStore()
    try:
        store.setFileId(fid)
        data = store.read(0, store.size())
    finally:
        store.close()
    assert unwrap(stored.size) == len(data) > 0
    assert unwrap(stored.hash) == hashlib.sha1(data).hexdigest()


def test_delete2_status_has_start_and_stop_times(client):
    """omero-blitz omero/cmd/HandleI.java steps(): startTime and stopTime (ms) are set,
    so `omero delete --report` prints the elapsed time, not "Unfinished."."""
    sf = client.getSession()
    iid, _ = _image(sf, 2, 2)
    before = int(time.time() * 1000)
    cb = client.submit(omero.cmd.Delete2(targetObjects={"Image": [iid]}), loops=10, ms=100)
    status = cb.handle.getStatus()
    after = int(time.time() * 1000)
    assert before <= status.startTime <= status.stopTime <= after
    cb.close(True)


def test_omero_delete_report_prints_the_elapsed_time(double, client, tmp_path):
    iid, _ = _image(client.getSession(), 2, 2)
    env = {**os.environ, "OMERO_SESSIONDIR": str(tmp_path / "sessions"),
           "OMERO_USERDIR": str(tmp_path / "user")}
    cli = "from omero.cli import argv; import sys; argv(['omero'] + sys.argv[1:])"
    server = ["-s", double.host, "-p", str(double.port), "-u", double.user, "-w",
              double.password]
    # omero.cli.argv, not bin/omero: that refuses to run as root (omero/main.py)
    login = subprocess.run([sys.executable, "-c", cli, "login", *server], env=env,
                           capture_output=True, text=True, timeout=120)
    assert login.returncode == 0, login.stderr
    out = subprocess.run([sys.executable, "-c", cli, "delete", "--report", f"Image:{iid}"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Unfinished." not in out.stdout
    assert re.search(r"Elapsed time: \d+\.\d+ secs\.", out.stdout), out.stdout
    assert client.getSession().getQueryService().find("Image", iid) is None
    subprocess.run([sys.executable, "-c", cli, "logout"], env=env, capture_output=True,
                   timeout=120)
