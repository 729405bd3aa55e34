"""ezomero and omero-py's BlitzGateway (unmodified) read what ``pyomero-upload upload``
put into the OMERO double, as they would read it from a real OMERO: the user, the
hierarchy, the planes, the key-value pairs and the key-value search.

The expected answers come from the upload's source files and from plain IQuery reads
(``web_fixtures.Uploaded``), never from the client under test.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("omero", reason="omero-py not installed (make install-omero)")
ezomero = pytest.importorskip("ezomero", reason="ezomero is not installed (pip install "
                                                "ezomero, part of the web extra)")

from pyomero_upload.model import CLIENT_MAP_NS  # noqa: E402

# one OMERO.web and one upload per run: these tests on one xdist worker
pytestmark = [pytest.mark.omero_web, pytest.mark.xdist_group("omero_web")]


@pytest.fixture
def conn(double, demo_upload):
    from omero.gateway import BlitzGateway

    c = BlitzGateway(demo_upload.user, demo_upload.password, host=double.host,
                     port=double.port, secure=True)
    assert c.connect(), "BlitzGateway could not log in"
    yield c
    c.close()


def _pairs_by_query(double, up, kind: str, oid: int) -> dict[str, list[tuple[str, str]]]:
    """{annotation id: [(key, value), ...]} of the maps on one object, by plain IQuery."""
    import omero
    from omero.rtypes import unwrap
    from omero.sys import ParametersI

    c = omero.client(double.host, double.port)
    try:
        q = c.createSession(up.user, up.password).getQueryService()
        links = q.findAllByQuery(
            f"select l from {kind}AnnotationLink l join fetch l.child a where l.parent.id = :id",
            ParametersI().addId(oid))
        return {lk.child.id.val: (unwrap(lk.child.ns), [(nv.name, nv.value)
                                                      for nv in lk.child.getMapValue()])
                for lk in links if isinstance(lk.child, omero.model.MapAnnotationI)}
    finally:
        c.__del__()


def test_get_user(conn, demo_upload):
    user = conn.getUser()
    assert user.getId() == demo_upload.user_id
    assert user.getName() == demo_upload.user
    assert user.getFullName() == "Web User"
    # the groups came with the user (left outer join fetch obj.groupExperimenterMap)
    groups = [g.getName() for g in user.listParents()]
    assert groups[0].startswith("web-") and "user" in groups
    assert conn.getGroupFromContext().getName() == groups[0]
    assert not conn.isAdmin()


def test_blitzgateway_projects_and_datasets(conn, demo_upload):
    pid, pname = demo_upload.project
    projects = list(conn.getObjects("Project"))
    assert [(p.getId(), p.getName()) for p in projects] == [(pid, pname)]
    (project,) = projects
    assert [(d.getId(), d.getName()) for d in project.listChildren()] == [demo_upload.dataset]
    dataset = conn.getObject("Dataset", demo_upload.dataset[0])
    assert dataset.countChildren() == 3
    assert sorted((i.getId(), i.getName()) for i in dataset.listChildren()) == \
        sorted(demo_upload.images)


def test_get_image_ids(conn, demo_upload):
    ids = ezomero.get_image_ids(conn, dataset=demo_upload.dataset[0])
    assert sorted(ids) == sorted(i for i, _ in demo_upload.images)
    assert ezomero.get_dataset_ids(conn, project=demo_upload.project[0]) == [
        demo_upload.dataset[0]]
    assert ezomero.get_project_ids(conn) == [demo_upload.project[0]]


def test_get_image_pixels_equal_the_source_planes(conn, demo_upload):
    iid, name = demo_upload.images[1]
    image, pixels = ezomero.get_image(conn, iid)
    assert image.getName() == name
    sx, sy, sz, sc, st = demo_upload.sizes[iid]
    assert pixels.shape == (st, sz, sy, sx, sc)  # ezomero's TZYXC
    assert pixels.dtype == np.uint16
    for t in range(st):
        for c, channel in enumerate(demo_upload.channels):
            for z in range(sz):
                np.testing.assert_array_equal(pixels[t, z, :, :, c],
                                              demo_upload.plane(name, t + 1, channel, z + 1))


def test_map_annotations(conn, double, demo_upload):
    iid = demo_upload.images[0][0]
    expected = _pairs_by_query(double, demo_upload, "Image", iid)
    ids = ezomero.get_map_annotation_ids(conn, "Image", iid)
    assert sorted(ids) == sorted(expected)
    client = [a for a, (ns, _) in expected.items() if ns == CLIENT_MAP_NS]
    assert ezomero.get_map_annotation_ids(conn, "Image", iid, ns=CLIENT_MAP_NS) == client
    for aid, (_, pairs) in expected.items():
        want: dict = {}
        for k, v in pairs:  # a repeated key reads as the list of its values
            want[k] = [*want[k], v] if isinstance(want.get(k), list) else \
                [want[k], v] if k in want else v
        assert ezomero.get_map_annotation(conn, aid) == want


def test_filter_by_kv(conn, double, demo_upload):
    ids = [i for i, _ in demo_upload.images]
    maps = {iid: dict(p for _, pairs in _pairs_by_query(double, demo_upload, "Image",
                                                        iid).values() for p in pairs)
            for iid in ids}
    # a pair all three images share, and one only the first has
    shared = next(k for k in maps[ids[0]] if all(maps[i].get(k) == maps[ids[0]][k]
                                                  for i in ids))
    own = next(k for k in maps[ids[0]] if all(maps[i].get(k) != maps[ids[0]][k]
                                               for i in ids[1:]))
    assert sorted(ezomero.filter_by_kv(conn, ids, shared, maps[ids[0]][shared])) == ids
    assert ezomero.filter_by_kv(conn, ids, own, maps[ids[0]][own]) == [ids[0]]
    assert ezomero.filter_by_kv(conn, ids, own, "no such value") == []
