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
from pyomero_upload import omero_client as oc  # noqa: E402
from pyomero_upload.cli import main  # noqa: E402
from pyomero_upload.upload_cli import main as legacy_main  # noqa: E402

CHANNELS = ["Brightfield", "DIC", "GFP"]


@pytest.fixture
def server(monkeypatch):
    srv = FakeServer()
    monkeypatch.setattr(omero, "client", client_factory(srv))
    monkeypatch.setenv("OMERO_PASSWORD", "secret")
    for var in ("OMERO_HOST", "OMERO_USER", "OMERO_PORT", "OMERO_GROUP", "OMERO_SESSION_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(oc, "stored_session", lambda: None)
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
    kv = _pairs(maps[oc.CLIENT_MAP_NS])
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
    tables = [f for f in files if unwrap(f.ns) == oc.BULK_ANNOTATIONS_NS]
    assert sorted(unwrap(t.description) for t in tables) == sorted(
        ["Channels", "Z_sectioning", "Time_settings", "Points", "Pumps", "Switching_parameters"])
    points = s.tables[next(t.file.id.val for t in tables if unwrap(t.description) == "Points")]
    assert points["X position"][0] == "DoubleColumn" and points["X position"][1][0] == 10846.5
    assert points["Group"][0] == "LongColumn"
    raw = sorted(unwrap(s.get("OriginalFileI", f.file.id.val).name) for f in files
                 if unwrap(f.ns) == oc.ATTACHMENT_NS)
    assert raw == ["microscope1_Acq.txt", "microscope1_log.txt"]
    for image in s.kind("ImageI"):
        on_image = s.annotations_of("Image", image.id.val)
        kinds = {(type(a).__name__, unwrap(a.ns)) for a in on_image}
        assert ("MapAnnotationI", oc.CLIENT_MAP_NS) in kinds
        assert ("MapAnnotationI", "pyomero-upload/provenance") in kinds
        source = next(a for a in on_image if unwrap(a.ns) == oc.SOURCE_NS)
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
    monkeypatch.setattr(oc.time, "sleep", lambda s: None)
    # the 5th timepoint call (position 2, T=2 in order) fails, retries fail too
    server.fail = FailAt("RawPixelsStore.setTimepoint", 5, Ice.ConnectionLostException(), 4)
    t0 = time.perf_counter()
    assert upload(demo, "--workers", "1") == oc.EXIT_OMERO
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
    assert sum(unwrap(a.ns) == oc.CLIENT_MAP_NS for a in on_dataset) == 1
    for image in images:
        source = next(a for a in server.annotations_of("Image", image.id.val)
                      if unwrap(a.ns) == oc.SOURCE_NS)
        assert dict(_pairs(source))["Status"] == "complete"
        assert image_array(server, image.id.val).any()


def test_transient_error_is_retried(server, demo, monkeypatch):
    monkeypatch.setattr(oc.time, "sleep", lambda s: None)
    server.fail = FailAt("RawPixelsStore.setTimepoint", 2, Ice.ConnectionLostException(), 2)
    assert upload(demo) == 0
    assert server.counts["RawPixelsStore.setTimepoint"] == 11  # 9 + 2 retried


def test_wrong_password(server, demo, monkeypatch, capsys):
    monkeypatch.setenv("OMERO_PASSWORD", "nope")
    assert upload(demo) == oc.EXIT_AUTH
    err = capsys.readouterr().err
    assert "login refused for user 'alice'" in err and "nope" not in err
    assert "Traceback" not in err and server.open_clients == 0


def test_unknown_host_and_refused_port(server, demo, capsys):
    assert main(["upload", str(demo), "--host", "nowhere.invalid", "--user", "alice"]) == \
        oc.EXIT_UNKNOWN_HOST
    assert "unknown host 'nowhere.invalid'" in capsys.readouterr().err
    assert main(["upload", str(demo), "--host", "omero.test", "--port", "4999",
                 "--user", "alice"]) == oc.EXIT_REFUSED
    assert "connection refused by omero.test:4999" in capsys.readouterr().err
    assert not server.kind("DatasetI")


def test_session_key(server, demo, monkeypatch):
    monkeypatch.delenv("OMERO_PASSWORD")
    server.sessions["abc-123"] = "alice"
    assert main(["-q", "upload", str(demo), "--host", "omero.test", "--session-key",
                 "abc-123"]) == 0
    assert server.logins == 0 and server.counts["client.closeSession"] == 0
    assert len(server.kind("ImageI")) == 3


def test_insecure_pixels_one_login(server, demo):
    assert upload(demo, "--insecure") == 0
    assert server.counts["client.createClient(secure=False)"] == 1
    assert server.logins == 1 and server.counts["client.closeSession"] == 1
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
             and unwrap(a.ns) == oc.BULK_ANNOTATIONS_NS]
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
        "        result.created.append('custom:' + str(dataset.id.val))\n")
    assert upload(demo, "-m", str(plug), "-i") == 0
    assert server.kind("ImageI") == []  # only what the plug-in did
    assert len(server.kind("DatasetI")) == 1


def test_pixel_units():
    assert oc.pixel_unit(512, 512, 5, 3, 2) == "timepoint"
    assert oc.pixel_unit(1024, 1024, 5, 3, 2) == "stack"
    assert oc.pixel_unit(2048, 2048, 5, 3, 2) == "plane"
    assert oc.pixel_unit(4096, 4096, 5, 3, 2) == "tile"


@pytest.mark.parametrize("limit, tile, method, calls", [
    (512 * 512 * 2 * 5, 1024, "setStack", 27),
    (512 * 512 * 2, 1024, "setPlane", 135),
    (100_000, 200, "setTile", 135 * 9),
])
def test_smaller_pixel_units(server, demo, monkeypatch, limit, tile, method, calls):
    monkeypatch.setattr(oc, "MAX_CALL_BYTES", limit)
    monkeypatch.setattr(oc, "TILE", tile)
    assert upload(demo, "-x") == 0
    assert server.counts[f"RawPixelsStore.{method}"] == calls
    image = next(i for i in server.kind("ImageI") if unwrap(i.name) == "pos003")
    np.testing.assert_array_equal(
        image_array(server, image.id.val)[2, 1, 3],
        read_png(demo / "pos003" / "microscope1_000003_DIC_004.png"),
    )
