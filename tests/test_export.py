"""OME-TIFF export: pixels, OME-XML validity, readers, atomicity, re-runs."""

from __future__ import annotations

import io
import json
import os

import imagecodecs
import numpy as np
import pytest
import tifffile
from ome_types import from_xml

from helpers import demo_planes, leftovers, ome_files, read_png
from pyomero_upload.errors import InputError
from pyomero_upload.export import export_ome_tiff
from pyomero_upload.export.pyramid import downsample, pyramid_shapes
from pyomero_upload.layout import discover
from pyomero_upload.metadata import load_metadata


@pytest.fixture(scope="module")
def demo_export(demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    exp = discover(demo)
    result = export_ome_tiff(exp, out, "demo", workers=2)
    return exp, result


def test_three_files_with_right_shape(demo_export):
    _exp, result = demo_export
    assert [f.name for f in result.files] == [
        "pos001.ome.tiff", "pos002.ome.tiff", "pos003.ome.tiff"
    ]
    assert result.planes == 135 and result.nbytes == 135 * 512 * 512 * 2
    for f in result.files:
        with tifffile.TiffFile(f) as tif:
            assert tif.is_ome
            s = tif.series[0]
            assert s.axes == "TCZYX" and s.shape == (3, 3, 5, 512, 512)
            assert s.dtype == np.uint16


def test_every_plane_equals_its_source(demo, demo_export):
    _exp, result = demo_export
    channels = ["Brightfield", "DIC", "GFP"]
    for f in result.files:
        data = tifffile.imread(f)
        for t, c, z, src in demo_planes(demo, f.name.split(".")[0]):
            np.testing.assert_array_equal(data[t - 1, channels.index(c), z - 1], read_png(src))


def test_ome_xml_validates_and_names_channels(demo_export):
    _exp, result = demo_export
    for f in result.files:
        with tifffile.TiffFile(f) as tif:
            ome = from_xml(tif.ome_metadata, validate=True)
        image = ome.images[0]
        assert image.name == f.name.split(".")[0]
        px = image.pixels
        assert px.dimension_order.value == "XYZCT"
        assert (px.size_x, px.size_y, px.size_z, px.size_c, px.size_t) == (512, 512, 5, 3, 3)
        assert [c.name for c in px.channels] == ["Brightfield", "DIC", "GFP"]
        assert px.channels[2].color.as_rgb_tuple()[:3] == (0, 255, 0)
        assert len(px.planes) == 45
        assert (px.planes[6].the_z, px.planes[6].the_c, px.planes[6].the_t) == (1, 1, 0)
        ns = {m.namespace for m in ome.structured_annotations.map_annotations}
        assert "pyomero-upload/provenance" in ns


def test_bioio_reads_the_export(demo, demo_export):
    bioio = pytest.importorskip("bioio")
    pytest.importorskip("bioio_ome_tiff")
    _exp, result = demo_export
    img = bioio.BioImage(result.files[2], reader=__import__("bioio_ome_tiff").Reader)
    assert dict(img.dims.items()) == {"T": 3, "C": 3, "Z": 5, "Y": 512, "X": 512}
    assert list(img.channel_names) == ["Brightfield", "DIC", "GFP"]
    src = read_png(demo / "pos003" / "microscope1_000003_DIC_002.png")
    np.testing.assert_array_equal(img.get_image_data("YX", T=2, C=1, Z=1), src)


def test_rerun_skips_up_to_date_files(demo, demo_export, tmp_path):
    exp, result = demo_export
    before = [f.stat().st_mtime_ns for f in result.files]
    again = export_ome_tiff(exp, result.out_dir.parent, "demo")
    assert again.files == [] and len(again.skipped) == 3
    assert [f.stat().st_mtime_ns for f in result.files] == before


def test_changed_source_needs_overwrite(build_layout, tmp_path):
    root = build_layout(["pos001"])
    out = tmp_path / "out"
    export_ome_tiff(discover(root), out, "d")
    target = out / "d" / "pos001.ome.tiff"
    plane = root / "pos001" / "microscope1_000001_GFP_001.png"
    plane.unlink()
    plane.write_bytes(imagecodecs.png_encode(np.full((512, 512), 7, np.uint16)))
    with pytest.raises(InputError, match="--overwrite"):
        export_ome_tiff(discover(root), out, "d")
    export_ome_tiff(discover(root), out, "d", overwrite=True)
    assert (tifffile.imread(target)[0, 2, 0] == 7).all()


@pytest.mark.parametrize("compression", ["zlib", "zstd"])
def test_compression_round_trip(build_layout, tmp_path, compression):
    root = build_layout(["pos001"])
    result = export_ome_tiff(discover(root), tmp_path / "o", compression=compression)
    with tifffile.TiffFile(result.files[0]) as tif:
        expected = {"zlib": tifffile.COMPRESSION.ADOBE_DEFLATE, "zstd": tifffile.COMPRESSION.ZSTD}
        assert tif.pages[0].compression == expected[compression]
        data = tif.series[0].asarray()
    src = read_png(root / "pos001" / "microscope1_000002_DIC_003.png")
    np.testing.assert_array_equal(data[1, 1, 2], src)
    assert result.files[0].stat().st_size < result.nbytes


def test_pyramid_on_request(build_layout, tmp_path):
    root = build_layout(["pos001"])
    result = export_ome_tiff(discover(root), tmp_path / "o", pyramid=True)
    src = read_png(root / "pos001" / "microscope1_000003_GFP_005.png")
    with tifffile.TiffFile(result.files[0]) as tif:
        levels = tif.series[0].levels
        assert [lv.shape for lv in levels] == [(3, 3, 5, 512, 512), (3, 3, 5, 256, 256)]
        np.testing.assert_array_equal(levels[0].asarray()[2, 2, 4], src)
        np.testing.assert_array_equal(levels[1].asarray()[2, 2, 4], downsample(src))
        from_xml(tif.ome_metadata, validate=True)


def test_pyramid_levels_for_large_planes():
    assert pyramid_shapes((512, 512), None) == []
    assert pyramid_shapes((8192, 6000), None)[0] == (4096, 3000)
    assert pyramid_shapes((8192, 6000), None)[-1] == (256, 187)
    assert pyramid_shapes((8192, 8192), False) == []


def test_downsample_averages():
    a = np.array([[0, 2, 10, 10], [4, 6, 10, 11]], np.uint16)
    np.testing.assert_array_equal(downsample(a), [[3, 10]])


@pytest.mark.parametrize(
    "dtype", ["uint8", "int16", "uint32", "float32"]
)
def test_pixel_type_preserved(build_layout, tmp_path, dtype):
    def convert(a):
        buf = io.BytesIO()
        if dtype == "float32":
            b = a.astype(np.float32) / 3.0
        elif dtype == "int16":
            b = (a.astype(np.int32) - 30000).astype(np.int16)
        else:
            b = a.astype(dtype) if dtype != "uint8" else (a >> 8).astype(np.uint8)
        tifffile.imwrite(buf, b)
        return buf.getvalue(), ".tiff"

    root = build_layout(["pos001"], convert=convert)
    result = export_ome_tiff(discover(root), tmp_path / "o")
    with tifffile.TiffFile(result.files[0]) as tif:
        assert tif.series[0].dtype == np.dtype(dtype)
        ome = from_xml(tif.ome_metadata, validate=True)
        assert ome.images[0].pixels.type.value == {"float32": "float"}.get(dtype, dtype)
        data = tif.series[0].asarray()
    ref = tifffile.imread(root / "pos001" / "microscope1_000002_GFP_001.tiff")
    np.testing.assert_array_equal(data[1, 2, 0], ref)


def test_allow_missing_fills_zeros_and_records(build_layout, tmp_path):
    root = build_layout(["pos001"])
    (root / "pos001" / "microscope1_000002_DIC_003.png").unlink()
    result = export_ome_tiff(discover(root, allow_missing=True), tmp_path / "o")
    with tifffile.TiffFile(result.files[0]) as tif:
        data = tif.series[0].asarray()
        ome = from_xml(tif.ome_metadata)
    assert not data[1, 1, 2].any() and data[1, 1, 1].any()
    filled = [m for m in ome.structured_annotations.map_annotations
              if m.namespace == "pyomero-upload/filled-planes"]
    assert [(m.k, m.value) for m in filled[0].value.ms] == [("Filled plane", "T=2 C=DIC Z=3")]


def test_failure_midway_leaves_only_complete_files(build_layout, tmp_path):
    root = build_layout()
    bad = root / "pos002" / "microscope1_000002_GFP_003.png"
    data = bad.read_bytes()
    bad.unlink()
    bad.write_bytes(data[: len(data) // 2])
    out = tmp_path / "o"
    meta = load_metadata(root)
    assert meta.tables  # a metadata folder is being built beside the pixels
    with pytest.raises(InputError) as err:
        export_ome_tiff(discover(root), out, "d", metadata=meta)
    assert bad.name in str(err.value) and "truncated" in str(err.value)
    assert [f.name for f in ome_files(out)] == ["pos001.ome.tiff"]
    assert leftovers(out) == []
    assert not (out / "d" / "metadata").exists()  # put in place only on success
    tifffile.imread(out / "d" / "pos001.ome.tiff")  # the complete one is whole


def test_interrupt_leaves_no_partial_file(build_layout, tmp_path):
    root = build_layout(["pos001"])
    seen = []

    def interrupt(nbytes):
        seen.append(nbytes)
        if len(seen) == 20:
            raise KeyboardInterrupt

    out = tmp_path / "o"
    with pytest.raises(KeyboardInterrupt):
        export_ome_tiff(discover(root), out, "d", on_plane=interrupt,
                        metadata=load_metadata(root))
    assert ome_files(out) == [] and leftovers(out) == []
    assert not out.exists()  # the folders this run made are gone too


def test_output_permissions_follow_umask(build_layout, tmp_path):
    root = build_layout(["pos001"])
    old = os.umask(0o027)
    try:
        result = export_ome_tiff(discover(root), tmp_path / "o")
    finally:
        os.umask(old)
    assert result.files[0].stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("fmt", ["ome-tiff", "ome-zarr"])
def test_json_report_lists_every_output_with_its_status(build_layout, tmp_path, capsys, fmt):
    """`export --json`: one entry per position, created, then skipped on the re-run, then
    replaced when the settings change (with --overwrite); the paths are the files there."""
    from pyomero_upload.cli import main

    if fmt == "ome-zarr":
        pytest.importorskip("zarr", minversion="3")
    root = build_layout(["pos001", "pos002"])
    out = tmp_path / "out"
    base = ["export", str(root), "-o", str(out), "-n", "ds", "--format", fmt, "--json"]

    def run(*extra: str) -> dict:
        assert main([*base, *extra]) == 0
        return json.loads(capsys.readouterr().out)

    first = run()
    suffix = ".ome.tiff" if fmt == "ome-tiff" else ".ome.zarr"
    assert first["format"] == fmt and first["dataset"] == "ds"
    assert [(e["position"], e["status"]) for e in first["outputs"]] == [
        ("pos001", "created"), ("pos002", "created")]
    assert [e["path"] for e in first["outputs"]] == [
        str(out.resolve() / "ds" / f"pos00{i}{suffix}") for i in (1, 2)]
    assert all(os.path.exists(e["path"]) for e in first["outputs"])
    assert first["planes"] == 2 * 45 and first["metadata_dir"]
    assert [e["status"] for e in run()["outputs"]] == ["skipped", "skipped"]
    other = "zlib" if fmt == "ome-tiff" else "lz4"
    changed = run("--compression", other, "--overwrite")
    assert [e["status"] for e in changed["outputs"]] == ["replaced", "replaced"]


def test_provenance_flag_both_ways(build_layout, tmp_path):
    """`export --provenance` (the default, as on `upload`) and `--no-provenance`."""
    from pyomero_upload.cli import main

    root = build_layout(["pos001"])
    for flag, want in (("--provenance", True), ("--no-provenance", False)):
        out = tmp_path / flag
        assert main(["-q", "export", str(root), "-o", str(out), "-n", "d", flag]) == 0
        xml = tifffile.TiffFile(out / "d" / "pos001.ome.tiff").ome_metadata
        assert ("pyomero-upload/provenance" in xml) is want
