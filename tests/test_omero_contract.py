"""Contract tests: the upload against an in-memory fake of the omero-py services.

Real ``omero.model`` objects and rtypes (so omero-py and zeroc-ice must be
installed: ``make install-omero``); every call and byte is recorded.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

omero = pytest.importorskip("omero", reason="omero-py not installed (make install-omero)")
Ice = pytest.importorskip("Ice")

from omero.rtypes import unwrap  # noqa: E402

from helpers import demo_planes, read_png  # noqa: E402
from omero_fake import FailAt, FakeServer, client_factory  # noqa: E402
from pyomero_upload import cli  # noqa: E402
from pyomero_upload.cli import main  # noqa: E402
from pyomero_upload.model import (  # noqa: E402
    ATTACHMENT_NS,
    BULK_ANNOTATIONS_NS,
    CLIENT_MAP_NS,
    SOURCE_NS,
)
from pyomero_upload.omero import connection, pixels  # noqa: E402
from pyomero_upload.upload_cli import main as legacy_main  # noqa: E402

CHANNELS = ["Brightfield", "DIC", "GFP"]


@pytest.fixture
def server(monkeypatch):
    srv = FakeServer()
    monkeypatch.setattr(omero, "client", client_factory(srv))
    monkeypatch.setenv("OMERO_PASSWORD", "secret")
    for var in ("OMERO_HOST", "OMERO_USER", "OMERO_PORT", "OMERO_GROUP", "OMERO_SESSION_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(connection, "stored_session", lambda environ=None: None)
    monkeypatch.setattr(connection.time, "sleep", lambda s: None)
    return srv


def upload(data, *extra, dataset="run1"):
    return main(["-q", "upload", str(data), "--dataset", dataset, "--host", "omero.test",
                 "--user", "alice", *extra])


def image_array(server, image_id):
    px = next(p for p in server.kind("PixelsI") if p.image.id.val == image_id)
    shape = [unwrap(getattr(px, f"size{d}")) for d in "TCZYX"]
    return np.frombuffer(bytes(server.pixels[px.id.val]), ">u2").reshape(shape)


@pytest.fixture
def uploaded(server, demo):
    assert upload(demo) == 0
    return server


def test_structure(uploaded):
    s = uploaded
    (project,) = s.kind("ProjectI")
    (dataset,) = s.kind("DatasetI")
    assert unwrap(project.name) == "Morphology detection"
    assert unwrap(dataset.name) == "run1"
    assert unwrap(dataset.description).startswith("Aim: Compare morphology")
    assert len(s.links("ProjectDatasetLinkI", parent=project.id.val)) == 1
    images = s.kind("ImageI")
    assert [unwrap(i.name) for i in images] == ["pos001", "pos002", "pos003"]
    assert {link.child.id.val for link in s.links("DatasetImageLinkI", parent=dataset.id.val)} \
        == {i.id.val for i in images}
    assert s.logins == 1 and s.counts["client.closeSession"] == 1 and s.open_clients == 0
    assert s.sessions == {}  # the session we created is ended


def test_every_plane_equals_its_source(uploaded, demo):
    s = uploaded
    for image in s.kind("ImageI"):
        data = image_array(s, image.id.val)
        assert data.shape == (3, 3, 5, 512, 512)
        for t, c, z, src in demo_planes(demo, unwrap(image.name)):
            np.testing.assert_array_equal(data[t - 1, CHANNELS.index(c), z - 1], read_png(src))


def test_few_pixel_calls(uploaded):
    s = uploaded
    # one call per timepoint (3 x 3 C x 5 Z x 512 x 512 x 2 B = 7.9 MB each), not 135 setPlane
    assert s.counts["RawPixelsStore.setTimepoint"] == 9
    assert s.counts["RawPixelsStore.setPlane"] == 0
    assert s.counts["ServiceFactory.createRawPixelsStore"] == 3  # one store per image
    assert s.pixel_bytes_received == 135 * 512 * 512 * 2


def test_physical_metadata(uploaded):
    s = uploaded
    image = next(i for i in s.kind("ImageI") if unwrap(i.name) == "pos002")
    px = next(p for p in s.kind("PixelsI") if p.image.id.val == image.id.val)
    assert unwrap(px.pixelsType.value) == "uint16"
    assert px.getPhysicalSizeZ().getValue() == pytest.approx(0.6)
    assert str(px.getPhysicalSizeZ().getUnit()) == "MICROMETER"
    assert px.getTimeIncrement().getValue() == 300
    assert unwrap(image.acquisitionDate) is not None
    channels = [s.get("ChannelI", c.id.val) for c in px.copyChannels()]
    names = [unwrap(s.get("LogicalChannelI", c.logicalChannel.id.val).name) for c in channels]
    assert names == CHANNELS
    gfp = channels[2]
    assert (unwrap(gfp.red), unwrap(gfp.green), unwrap(gfp.blue)) == (0, 255, 0)
    gfp_lc = s.get("LogicalChannelI", gfp.logicalChannel.id.val)
    assert gfp_lc.getEmissionWave().getValue() == 535
    infos = [i for i in s.kind("PlaneInfoI") if i.pixels.id.val == px.id.val]
    assert len(infos) == 45
    info = next(i for i in infos if (unwrap(i.theT), unwrap(i.theC), unwrap(i.theZ)) == (0, 2, 0))
    assert info.getDeltaT().getValue() == 19.0
    assert info.getExposureTime().getValue() == 7
    assert info.getPositionX().getValue() == 10846.5
    lo, hi = s.minmax[(px.id.val, 2)]
    data = image_array(s, image.id.val)
    assert (lo, hi) == (data[:, 2].min(), data[:, 2].max())
    assert image.id.val in s.rendered and s.thumbnails == 3


def _pairs(ann):
    return [(nv.name, nv.value) for nv in ann.getMapValue()]


def test_annotations(uploaded):
    s = uploaded
    (dataset,) = s.kind("DatasetI")
    on_dataset = s.annotations_of("Dataset", dataset.id.val)
    maps = {unwrap(a.ns): a for a in on_dataset if isinstance(a, omero.model.MapAnnotationI)}
    kv = _pairs(maps[CLIENT_MAP_NS])
    assert ("Project", "Morphology detection") in kv
    assert ("Micromanager config file", r"C:\Users\Public\Microscope control\Micromanager "
            r"config files\Batgirl5_9_18noemissionfilter.txt") in kv
    prov = dict(_pairs(maps["pyomero-upload/provenance"]))
    assert prov["Uploaded With"].startswith("pyomero-upload ")
    assert "PyOmeroUpload" in prov["Citation"]
    tags = sorted(unwrap(a.textValue) for a in on_dataset
                  if isinstance(a, omero.model.TagAnnotationI))
    assert tags == ["28-Sep-2018", "Batgirl"]
    files = [a for a in on_dataset if isinstance(a, omero.model.FileAnnotationI)]
    tables = [f for f in files if unwrap(f.ns) == BULK_ANNOTATIONS_NS]
    assert sorted(unwrap(t.description) for t in tables) == sorted(
        ["Channels", "Z_sectioning", "Time_settings", "Points", "Pumps", "Switching_parameters"])
    points = s.tables[next(t.file.id.val for t in tables if unwrap(t.description) == "Points")]
    assert points["X position"][0] == "DoubleColumn" and points["X position"][1][0] == 10846.5
    assert points["Group"][0] == "LongColumn"
    raw = sorted(unwrap(s.get("OriginalFileI", f.file.id.val).name) for f in files
                 if unwrap(f.ns) == ATTACHMENT_NS)
    assert raw == ["microscope1_Acq.txt", "microscope1_log.txt"]
    for image in s.kind("ImageI"):
        on_image = s.annotations_of("Image", image.id.val)
        kinds = {(type(a).__name__, unwrap(a.ns)) for a in on_image}
        assert ("MapAnnotationI", CLIENT_MAP_NS) in kinds
        assert ("MapAnnotationI", "pyomero-upload/provenance") in kinds
        source = next(a for a in on_image if unwrap(a.ns) == SOURCE_NS)
        assert dict(_pairs(source))["Status"] == "complete"
        assert sum(isinstance(a, omero.model.TagAnnotationI) for a in on_image) == 2
    assert len(s.kind("TagAnnotationI")) == 2


def test_existing_tag_is_reused(server, demo):
    tag = omero.model.TagAnnotationI()
    tag.setTextValue(omero.rtypes.rstring("Batgirl"))
    existing = server.save(tag)
    assert upload(demo) == 0
    batgirl = [t for t in server.kind("TagAnnotationI") if unwrap(t.textValue) == "Batgirl"]
    assert [t.id.val for t in batgirl] == [existing.id.val]


def _snapshot(s):
    return sorted((k[0], k[1]) for k in s.objects)


def test_rerun_skips_everything(uploaded, demo, capsys):
    s = uploaded
    before = _snapshot(s)
    bytes_before = s.pixel_bytes_received
    assert main(["upload", str(demo), "--dataset", "run1", "--host", "omero.test",
                 "--user", "alice"]) == 0
    assert "3 already complete, skipped" in capsys.readouterr().out
    assert _snapshot(s) == before and s.pixel_bytes_received == bytes_before


def test_failure_then_rerun_gives_one_complete_copy(server, demo, monkeypatch, capsys):
    # the 5th timepoint call (position 2, T=2 in order) fails, retries fail too
    server.fail = FailAt("RawPixelsStore.setTimepoint", 5, Ice.ConnectionLostException(), 4)
    t0 = time.perf_counter()
    assert upload(demo, "--workers", "1") == cli.EXIT_OMERO
    assert time.perf_counter() - t0 < 30
    err = capsys.readouterr().err
    assert "lost the connection to omero.test:4064" in err and "Traceback" not in err
    done = {unwrap(i.name) for i in server.kind("ImageI")}
    assert "pos002" in done  # linked first, marked incomplete
    for link in server.kind("DatasetImageLinkI"):  # nothing outside the dataset
        assert server.get("ImageI", link.child.id.val) is not None
    server.fail = None
    assert upload(demo) == 0
    images = server.kind("ImageI")
    assert sorted(unwrap(i.name) for i in images) == ["pos001", "pos002", "pos003"]
    assert len(server.kind("DatasetI")) == 1 and len(server.kind("ProjectI")) == 1
    assert len(server.kind("TagAnnotationI")) == 2
    (dataset,) = server.kind("DatasetI")
    on_dataset = server.annotations_of("Dataset", dataset.id.val)
    assert sum(unwrap(a.ns) == CLIENT_MAP_NS for a in on_dataset) == 1
    for image in images:
        source = next(a for a in server.annotations_of("Image", image.id.val)
                      if unwrap(a.ns) == SOURCE_NS)
        assert dict(_pairs(source))["Status"] == "complete"
        assert image_array(server, image.id.val).any()


def test_lost_connection_logs_in_again(server, demo):
    """Glacier2 ends the session with its connection: retrying on it cannot work,
    so the client logs in again, reopens the pixel store and carries on."""
    server.fail = FailAt("RawPixelsStore.setTimepoint", 2, Ice.ConnectionLostException(), 2)
    assert upload(demo, "--workers", "1") == 0
    assert server.counts["RawPixelsStore.setTimepoint"] == 11  # 9 + 2 failed
    assert server.logins == 3 and server.sessions == {} and server.open_clients == 0
    for image in server.kind("ImageI"):
        data = image_array(server, image.id.val)
        for t, c, z, src in demo_planes(demo, unwrap(image.name)):
            np.testing.assert_array_equal(data[t - 1, CHANNELS.index(c), z - 1], read_png(src))


def test_wrong_password(server, demo, monkeypatch, capsys):
    monkeypatch.setenv("OMERO_PASSWORD", "nope")
    assert upload(demo) == cli.EXIT_AUTH
    err = capsys.readouterr().err
    assert "login refused for user 'alice'" in err and "nope" not in err
    assert "Traceback" not in err and server.open_clients == 0


def test_unknown_host_and_refused_port(server, demo, capsys):
    assert main(["upload", str(demo), "--host", "nowhere.invalid", "--user", "alice"]) == \
        cli.EXIT_UNKNOWN_HOST
    assert "unknown host 'nowhere.invalid'" in capsys.readouterr().err
    assert main(["upload", str(demo), "--host", "omero.test", "--port", "4999",
                 "--user", "alice"]) == cli.EXIT_REFUSED
    assert "connection refused by omero.test:4999" in capsys.readouterr().err
    assert not server.kind("DatasetI")


def test_session_key(server, demo, monkeypatch):
    monkeypatch.delenv("OMERO_PASSWORD")
    server.add_session("abc-123", "alice")
    assert main(["-q", "upload", str(demo), "--host", "omero.test", "--session-key",
                 "abc-123"]) == 0
    assert server.logins == 0 and len(server.kind("ImageI")) == 3
    # joined, detached before closing: the session outlives the upload (SessionI)
    assert "abc-123" in server.sessions and server.open_clients == 0
    assert main(["-q", "upload", str(demo), "--host", "omero.test", "--session-key",
                 "abc-123", "--insecure", "--dataset", "again"]) == 0
    assert "abc-123" in server.sessions and server.open_clients == 0
    assert server.counts["ServiceFactory.detachOnDestroy"] == 3  # 1 + 2 (--insecure)


def test_insecure_pixels_one_login(server, demo):
    assert upload(demo, "--insecure") == 0
    assert server.counts["client.createClient(secure=False)"] == 1
    assert server.counts["ServiceFactory.detachOnDestroy"] == 1  # the joined second client
    assert server.logins == 1 and server.sessions == {}  # ours, ended
    assert server.open_clients == 0 and len(server.kind("ImageI")) == 3


def test_dry_run_writes_nothing(server, demo, capsys):
    assert main(["upload", str(demo), "--dataset", "run1", "--host", "omero.test",
                 "--user", "alice", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would create: pos001" in out and "would upload 3 image(s)" in out
    assert server.objects == {} and server.pixel_bytes_received == 0


def test_single_plane_images_without_hypercube(server, demo):
    assert upload(demo, "--no-hypercube", "-x") == 0
    images = server.kind("ImageI")
    assert len(images) == 135
    one = next(i for i in images if unwrap(i.name) == "microscope1_000002_DIC_003.png")
    np.testing.assert_array_equal(
        image_array(server, one.id.val)[0, 0, 0],
        read_png(demo / "pos001" / "microscope1_000002_DIC_003.png"),
    )


def test_tables_service_missing_falls_back_to_hdf5(server, demo):
    server.tables_enabled = False
    assert upload(demo) == 0
    (dataset,) = server.kind("DatasetI")
    files = [a for a in server.annotations_of("Dataset", dataset.id.val)
             if isinstance(a, omero.model.FileAnnotationI)
             and unwrap(a.ns) == BULK_ANNOTATIONS_NS]
    names = sorted(unwrap(server.get("OriginalFileI", f.file.id.val).name) for f in files)
    assert "Points.h5" in names and len(names) == 6
    data = server.files[next(f.file.id.val for f in files if unwrap(
        server.get("OriginalFileI", f.file.id.val).name) == "Points.h5")]
    assert data[:8] == b"\x89HDF\r\n\x1a\n"


def test_legacy_cli_flags(server, demo, tmp_path):
    plug = tmp_path / "plug"
    plug.mkdir()
    (plug / "custom_metadata_parser.py").write_text(
        "class CustomMetadataParser:\n"
        "    def extract_metadata(self, path):\n"
        "        return {'description': 'legacy', 'tags': ['L'], 'kvps': [], 'tables': []}\n")
    code = legacy_main(["-s", "omero.test", "-u", "alice", "-d", str(demo), "-n", "legacy",
                        "-y", "-m", str(plug), "-p", "--no-include-provenance-metadata"])
    assert code == 0
    (dataset,) = server.kind("DatasetI")
    assert unwrap(dataset.name) == "legacy" and unwrap(dataset.description) == "legacy"
    assert [unwrap(t.textValue) for t in server.kind("TagAnnotationI")] == ["L"]
    namespaces = {unwrap(a.ns) for a in server.kind("MapAnnotationI")}
    assert "pyomero-upload/provenance" not in namespaces
    assert len(server.kind("ImageI")) == 3  # -y: hypercubes


def test_python_api(server, demo):
    from pyomero_upload.pyomero_upload import PyOmeroUploader

    uploader = PyOmeroUploader("alice", "secret", "omero.test")
    assert "secret" not in repr(uploader)
    dataset_id = uploader.launch_upload("api", demo, hypercube=True,
                                        client_factory=client_factory(server))
    assert isinstance(dataset_id, int)
    assert unwrap(server.get("DatasetI", dataset_id).name) == "api"
    assert len(server.kind("ImageI")) == 3


def test_custom_image_processor(server, demo, tmp_path):
    plug = tmp_path / "plug"
    plug.mkdir()
    (plug / "custom_image_processor.py").write_text(
        "from pyomero_upload.upload import ImageProcessor\n"
        "class CustomImageProcessor(ImageProcessor):\n"
        "    def process(self, conn, exp, metadata, dataset, options, result, on_plane=None):\n"
        f"        with open({str(tmp_path / 'called')!r}, 'w') as f:\n"
        "            f.write(f'{dataset.name}:{dataset.id}')\n")
    assert upload(demo, "-m", str(plug), "-i") == 0
    (dataset,) = server.kind("DatasetI")
    assert server.kind("ImageI") == []  # only what the plug-in did
    # called, with the dataset as ids and names (no omero objects)
    assert (tmp_path / "called").read_text() == f"run1:{dataset.id.val}"


def test_custom_image_processor_bug_is_not_an_omero_error(server, demo, tmp_path, capsys):
    plug = tmp_path / "plug"
    plug.mkdir()
    (plug / "custom_image_processor.py").write_text(
        "from pyomero_upload.upload import ImageProcessor\n"
        "class CustomImageProcessor(ImageProcessor):\n"
        "    def process(self, conn, exp, metadata, dataset, options, result, on_plane=None):\n"
        "        return 1 / 0\n")
    assert upload(demo, "-m", str(plug), "-i") == cli.EXIT_INPUT
    err = capsys.readouterr().err
    assert "image processor CustomImageProcessor" in err and "ZeroDivisionError" in err
    assert "OMERO error" not in err and "Traceback" not in err


def test_pixel_units():
    assert pixels.pixel_unit(512, 512, 5, 3, 2) == "timepoint"
    assert pixels.pixel_unit(1024, 1024, 5, 3, 2) == "stack"
    assert pixels.pixel_unit(2048, 2048, 5, 3, 2) == "plane"
    assert pixels.pixel_unit(3000, 3000, 1, 1, 2) == "rows"  # 18 MB: over one call
    assert pixels.pixel_unit(512, 512, 5, 3, 2, pyramid=True) == "tiles"


@pytest.mark.parametrize("limit, method, calls", [
    (512 * 512 * 2 * 5, "setStack", 27),  # setStack(buf, z, c, t), as in the Ice stubs
    (512 * 512 * 2, "setPlane", 135),
    (100_000, "setTile", 135 * 6),  # full-width strips of 97 rows at x = 0 (ROMIO)
])
def test_smaller_pixel_units(server, demo, monkeypatch, limit, method, calls):
    monkeypatch.setattr(pixels, "MAX_CALL_BYTES", limit)
    assert upload(demo, "-x") == 0
    assert server.counts[f"RawPixelsStore.{method}"] == calls
    image = next(i for i in server.kind("ImageI") if unwrap(i.name) == "pos003")
    np.testing.assert_array_equal(
        image_array(server, image.id.val)[2, 1, 3],
        read_png(demo / "pos003" / "microscope1_000003_DIC_004.png"),
    )


@pytest.mark.parametrize("tile, per_plane", [((256, 256), 4), ((200, 128), 12)])
def test_pyramid_images_are_written_in_server_tiles(server, demo, tile, per_plane):
    """Above the server's plane limit only setTile works, on its tile grid."""
    server.max_plane = (500, 500)  # 512 x 512 needs a pyramid on this server
    server.tile_size = tile
    assert upload(demo, "-x") == 0
    assert server.counts["RawPixelsStore.setTile"] == 135 * per_plane
    assert server.counts["RawPixelsStore.setTimepoint"] == 0
    assert all(server.pyramid.values()) and len(server.pyramid) == 3
    image = next(i for i in server.kind("ImageI") if unwrap(i.name) == "pos002")
    for t, c, z, src in demo_planes(demo, "pos002"):
        np.testing.assert_array_equal(
            image_array(server, image.id.val)[t - 1, CHANNELS.index(c), z - 1], read_png(src))


def test_metadata_saved_after_pixels_is_not_stale(uploaded):
    """RawPixelsStore.save() bumps the Pixels' update event; our later save of the
    Pixels (physical sizes) must use a copy loaded after it, or the server refuses it."""
    s = uploaded
    for px in s.kind("PixelsI"):
        assert s.sha1[px.id.val]
        assert px.getPhysicalSizeZ().getValue() == pytest.approx(0.6)
        assert unwrap(px.version) == 2  # created 0, RawPixelsStore.save 1, metadata 2


def test_login_timeout_is_a_timeout(server, demo, capsys):
    server.login_timeout = True
    assert upload(demo) == cli.EXIT_TIMEOUT
    err = capsys.readouterr().err
    assert "no answer from omero.test:4064" in err and "Traceback" not in err
    assert server.open_clients == 0


def test_group(server, demo, capsys):
    settings = connection.ConnectionSettings("omero.test", 4064, "alice", "secret", group="lab")
    with connection.Connection.open(settings, client_factory(server)) as conn:
        assert conn.group_id == server.groups["lab"]
    assert upload(demo, "--group", "lab", "--insecure") == 0
    assert server.counts["IAdmin.lookupGroup"] == 2
    assert server.counts["ServiceFactory.setSecurityContext"] == 2
    assert upload(demo, "--group", "nope") == cli.EXIT_AUTH
    assert "no OMERO group named 'nope'" in capsys.readouterr().err


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


def _links_per_tag(server, kind):
    links = server.kind(f"{kind}AnnotationLinkI")
    tag_ids = {t.id.val for t in server.kind("TagAnnotationI")}
    pairs = [(lk.parent.id.val, lk.child.id.val) for lk in links if lk.child.id.val in tag_ids]
    return pairs


def test_repeated_tag_name_is_linked_once(server, demo, tmp_path):
    plug = _tag_parser(tmp_path, ["A", "B", "A"])
    assert upload(demo, "-m", str(plug), "-p") == 0
    assert sorted(unwrap(t.textValue) for t in server.kind("TagAnnotationI")) == ["A", "B"]
    on_dataset = _links_per_tag(server, "Dataset")
    assert len(on_dataset) == 2 == len(set(on_dataset))
    assert len(_links_per_tag(server, "Image")) == 3 * 2


def test_rerun_after_failure_between_tags_and_marker(server, demo, tmp_path):
    """Tags linked, then the table fails: the re-run links nothing twice
    (links are unique per parent, child and owner) and adds only what is missing."""
    plug = _tag_parser(tmp_path, ["A"])
    server.fail = FailAt("Table.initialize", 1, omero.InternalException(None, None, "boom"), 1)
    assert upload(demo, "-m", str(plug), "-p") == cli.EXIT_OMERO
    assert len(_links_per_tag(server, "Dataset")) == 1 and not server.kind("ImageI")
    server.fail = None
    assert upload(demo, "-m", str(plug), "-p") == 0
    (dataset,) = server.kind("DatasetI")
    on_dataset = server.annotations_of("Dataset", dataset.id.val)
    assert len(_links_per_tag(server, "Dataset")) == 1
    assert sum(unwrap(a.ns) == CLIENT_MAP_NS for a in on_dataset) == 1
    assert sum(unwrap(a.ns) == BULK_ANNOTATIONS_NS for a in on_dataset) == 1
    assert sum(unwrap(a.ns) == SOURCE_NS for a in on_dataset) == 1
    assert len(server.kind("ImageI")) == 3


def test_files_upload_in_large_blocks(uploaded):
    # omero-py's client.upload defaults to 1 KiB: one remote call per KiB
    assert uploaded.upload_block_sizes and min(uploaded.upload_block_sizes) >= 1 << 20


def test_stored_session_with_its_port(monkeypatch, demo, tmp_path):
    """The session `omero login` stored (under OMERO_SESSIONDIR) is joined on its port."""
    from omero.util.sessions import SessionsStore

    srv = FakeServer(port=14064)
    srv.add_session("stored-key", "alice")
    monkeypatch.setattr(omero, "client", client_factory(srv))
    for var in ("OMERO_HOST", "OMERO_USER", "OMERO_PORT", "OMERO_PASSWORD", "OMERO_SESSION_KEY"):
        monkeypatch.delenv(var, raising=False)
    store = SessionsStore(str(tmp_path / "sessions"))
    props = {"omero.port": "14064"}
    store.add("omero.test", "alice", "stored-key", props)
    store.set_current("omero.test", "alice", "stored-key", props)
    monkeypatch.setenv("OMERO_SESSIONDIR", str(tmp_path / "sessions"))
    assert main(["-q", "upload", str(demo), "--dataset", "stored"]) == 0
    assert srv.logins == 0 and srv.counts["client.joinSession"] == 1
    assert "stored-key" in srv.sessions and len(srv.kind("ImageI")) == 3


def test_interrupted_upload_does_not_claim_a_clean_state(server, demo, tmp_path, capsys):
    plug = tmp_path / "plug"
    plug.mkdir()
    (plug / "custom_image_processor.py").write_text(
        "from pyomero_upload.upload import ImageProcessor\n"
        "class CustomImageProcessor(ImageProcessor):\n"
        "    def process(self, conn, exp, metadata, dataset, options, result, on_plane=None):\n"
        "        raise KeyboardInterrupt\n")
    assert upload(demo, "-m", str(plug), "-i") == cli.EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "no partial output" not in err and "run the same command again" in err
    assert server.open_clients == 0


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


def _check_planes(server, planes, channels):
    (image,) = server.kind("ImageI")
    data = image_array(server, image.id.val)
    for (c, z), plane in planes.items():
        np.testing.assert_array_equal(data[0, channels.index(c), z - 1], plane)


def test_stack_mode_1024_z5(server, tmp_path):
    channels = ["Brightfield", "DIC", "GFP"]
    planes = _synthetic(tmp_path / "exp", 1024, channels, 5)  # 31 MB a timepoint: stacks
    assert upload(tmp_path / "exp", "-x", "--channel-order", ",".join(channels)) == 0
    assert server.counts["RawPixelsStore.setStack"] == 3
    _check_planes(server, planes, channels)


def test_3500_uint16_is_a_pyramid_written_in_tiles(server, tmp_path):
    planes = _synthetic(tmp_path / "exp", 3500)  # 3500^2 > 3192^2: the server wants a pyramid
    assert upload(tmp_path / "exp", "-x") == 0
    assert server.counts["RawPixelsStore.setTile"] == 14 * 14  # 256 x 256 tiles
    assert server.counts["RawPixelsStore.setPlane"] == 0 and list(server.pyramid.values()) == [True]
    _check_planes(server, planes, ["GFP"])


def test_3000_uint16_plane_over_16_mib_goes_in_full_width_strips(server, tmp_path):
    planes = _synthetic(tmp_path / "exp", 3000)  # 18 MB: no pyramid, too big for one call
    assert upload(tmp_path / "exp", "-x") == 0
    assert server.counts["RawPixelsStore.setTile"] == 2  # rows 0-2795, 2796-2999 at x = 0
    assert list(server.pyramid.values()) == [False]
    _check_planes(server, planes, ["GFP"])


def _arity(fn):
    import inspect

    params = [p for p in inspect.signature(fn).parameters.values()
              if p.name not in ("self", "ctx", "_ctx") and p.kind is p.POSITIONAL_OR_KEYWORD]
    return len([p for p in params if p.default is p.empty]), len(params)


def test_fake_methods_match_the_ice_stubs():
    """Each fake method exists on omero-py's proxy with the same arguments, so a
    call the fake accepts is a call the real stubs accept."""
    import omero_fake as fake

    api = omero.api
    pairs = {
        fake.FakeQuery: api.IQueryPrx, fake.FakeUpdate: api.IUpdatePrx,
        fake.FakePixelsService: api.IPixelsPrx, fake.FakeRawPixelsStore: api.RawPixelsStorePrx,
        fake.FakeRendering: api.IRenderingSettingsPrx, fake.FakeThumbnails: api.ThumbnailStorePrx,
        fake.FakeTable: omero.grid.TablePrx, fake.FakeResources: omero.grid.SharedResourcesPrx,
        fake.FakeAdmin: api.IAdminPrx, fake.FakeSession: api.ServiceFactoryPrx,
        fake.FakeClient: omero.clients.BaseClient,
    }
    checked = 0
    for cls, prx in pairs.items():
        for name, fn in vars(cls).items():
            if name.startswith("_") or not callable(fn) or name in (
                    "rec", "check", "lose_connection", "close" if cls is fake.FakeSession else ""):
                continue
            real = getattr(prx, name, None)
            assert real is not None, f"{prx.__name__} has no {name}"
            (need, total), (real_need, real_total) = _arity(fn), _arity(real)
            assert total == real_total and need >= real_need, f"{cls.__name__}.{name}"
            checked += 1
    assert checked >= 35


def test_lost_connection_during_a_pyramid_stops_and_the_rerun_replaces_it(server, demo, capsys):
    """A pyramid is written to a temporary file until the store closes
    (BfPyramidPixelBuffer): a new session cannot resume it, so the run stops."""
    server.max_plane = (500, 500)
    server.fail = FailAt("RawPixelsStore.setTile", 5, Ice.ConnectionLostException(), 1)
    assert upload(demo, "-x", "--workers", "1") == cli.EXIT_OMERO
    assert "while writing a pyramid image" in capsys.readouterr().err
    server.fail = None
    assert upload(demo, "-x") == 0
    assert sorted(unwrap(i.name) for i in server.kind("ImageI")) == ["pos001", "pos002", "pos003"]
    assert len(server.pyramid) == 3 and server.sessions == {}
