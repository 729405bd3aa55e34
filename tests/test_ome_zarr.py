"""OME-Zarr export: valid NGFF 0.5 and 0.4, read right by the field's readers.

Every store is validated against the specification by two independent
validators (ome-zarr-models and yaozarrs) and read back through plain zarr,
ome-zarr-py, bioio-ome-zarr and ngff-zarr: every plane must equal its source file
(decoded by imagecodecs/tifffile alone).  The metadata (axes, units, scales,
channels, the OME-XML beside the image) is checked against what the
experiment says, and against the OME-TIFF export of the same data.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile

if sys.version_info < (3, 11):  # zarr 3 and the NGFF validators need 3.11+
    pytest.skip("OME-Zarr export needs Python 3.11 or later (zarr 3)", allow_module_level=True)

import zarr  # noqa: E402
from ome_types import from_xml

from helpers import export_killed_at, random_experiment, read_png
from pyomero_upload.cli import main
from pyomero_upload.errors import InputError
from pyomero_upload.export import export_ome_tiff
from pyomero_upload.export.ome_zarr_writer import (
    OME_XML_PATH,
    TILE,
    count_files,
    export_ome_zarr,
    levels_for,
    read_fingerprint,
)
from pyomero_upload.export.pyramid import downsample, pyramid_shapes
from pyomero_upload.layout import NamingRule, discover
from pyomero_upload.metadata import load_metadata
from pyomero_upload.model import PROVENANCE_NS, SOURCE_NS

VERSIONS = ["0.5", "0.4"]


# --- helpers ------------------------------------------------------------------------


def read_source(path: Path) -> np.ndarray:
    return read_png(path) if path.suffix == ".png" else tifffile.imread(path)


def source_stack(exp, position) -> np.ndarray:
    """The position's source planes as (T, C, Z, Y, X), decoded without our code."""
    planes = [read_source(p) for p in exp.plane_paths(position)]
    return np.stack(planes).reshape(exp.size_t, exp.size_c, exp.size_z, *planes[0].shape)


def export(data: Path, out: Path, *extra: str) -> list[Path]:
    """The command line's OME-Zarr export; the stores it wrote."""
    assert main(["export", str(data), "-o", str(out), "--dataset", "ds",
                 "--format", "ome-zarr", *extra]) == 0
    return sorted((out / "ds").glob("*.ome.zarr"))


def attrs(store: Path) -> dict:
    """The image's NGFF attributes (under ``ome`` in 0.5)."""
    group = zarr.open_group(store, mode="r")
    a = group.attrs.asdict()
    return a.get("ome", a)


def validate(store: Path, version: str) -> None:
    """Both validators accept ``store`` as an NGFF ``version`` image."""
    import yaozarrs

    if version == "0.5":
        from ome_zarr_models.v05.image import Image
    else:
        from ome_zarr_models.v04.image import Image
    group = zarr.open_group(store, mode="r")
    assert group.metadata.zarr_format == (3 if version == "0.5" else 2)
    Image.from_zarr(group)  # raises on any violation
    result = yaozarrs.validate_zarr_store(str(store))
    assert result is not None
    ome = attrs(store)
    assert ome.get("version", ome["multiscales"][0].get("version")) == version


def read_zarr(store: Path, level: int = 0) -> np.ndarray:
    return zarr.open_array(store / str(level), mode="r")[...]


def read_ome_zarr_py(store: Path) -> list[np.ndarray]:
    """Every resolution, as ome-zarr-py (napari's reader) reads the store."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader

    nodes = list(Reader(parse_url(store))())
    assert len(nodes) == 1 and any(isinstance(s, Multiscales) for s in nodes[0].specs)
    return [np.asarray(d) for d in nodes[0].data]


def read_bioio(store: Path):
    import bioio_ome_zarr
    from bioio import BioImage

    return BioImage(store, reader=bioio_ome_zarr.Reader)


def read_ngff_zarr(store: Path):
    """The full resolution, as ngff-zarr reads the store (its NgffImage)."""
    import ngff_zarr

    return ngff_zarr.from_ngff_zarr(str(store)).images[0]


def check_store(store: Path, expected: np.ndarray, version: str) -> None:
    """Valid, and every plane equal to ``expected`` through zarr, ome-zarr-py, bioio
    and ngff-zarr."""
    validate(store, version)
    np.testing.assert_array_equal(read_zarr(store), expected)
    np.testing.assert_array_equal(read_ome_zarr_py(store)[0], expected)
    image = read_ngff_zarr(store)
    assert tuple(image.dims) == ("t", "c", "z", "y", "x")
    np.testing.assert_array_equal(np.asarray(image.data), expected)
    img = read_bioio(store)
    data = img.get_image_dask_data("TCZYX").compute()
    assert data.dtype == expected.dtype
    np.testing.assert_array_equal(data, expected)




# --- the demo, both versions, every reader ------------------------------------------------


@pytest.fixture(scope="module", params=VERSIONS)
def demo_stores(request, demo, tmp_path_factory) -> tuple[str, list[Path]]:
    version = request.param
    out = tmp_path_factory.mktemp(f"zarr{version}")
    return version, export(demo, out, "--ngff-version", version)


def test_shards_of_several_timepoints_the_last_one_partial(tmp_path, monkeypatch):
    """Where a position's pixels pass SHARD_BYTES, each shard holds as many whole
    timepoints as fit and the last holds the rest; every reader reads every plane."""
    from pyomero_upload.export import ome_zarr_writer

    shape = (48, 64)
    data = random_experiment(tmp_path / "exp", np.dtype(np.uint16), shape=shape,
                             sizes=(2, 2, 5))
    exp = discover(data)
    per_t = 2 * 2 * shape[0] * shape[1] * 2  # C x Z planes of 16 bits
    monkeypatch.setattr(ome_zarr_writer, "SHARD_BYTES", 2 * per_t + per_t // 2)
    stores = export(data, tmp_path / "out")
    for store, pos in zip(stores, exp.positions, strict=True):
        assert zarr.open_array(store / "0", mode="r").shards == (2, 2, 2, *shape)
        shards = sorted(p.relative_to(store / "0").as_posix()
                        for p in (store / "0").rglob("*") if p.name != "zarr.json")
        assert [s for s in shards if (store / "0" / s).is_file()] == [
            "c/0/0/0/0/0", "c/1/0/0/0/0", "c/2/0/0/0/0"]
        check_store(store, source_stack(exp, pos), "0.5")


def test_demo_every_plane_through_every_reader(demo, demo_stores):
    version, stores = demo_stores
    exp = discover(demo)
    assert [s.name for s in stores] == [f"{p.name}.ome.zarr" for p in exp.positions]
    for store, pos in zip(stores, exp.positions, strict=True):
        check_store(store, source_stack(exp, pos), version)


def test_demo_axes_units_scales_channels(demo, demo_stores):
    version, stores = demo_stores
    meta = load_metadata(demo)
    exp = discover(demo, channel_order=meta.channel_order())
    acq = meta.acquisition
    for store, pos in zip(stores, exp.positions, strict=True):
        ome = attrs(store)
        (ms,) = ome["multiscales"]
        assert ms["name"] == pos.name
        axes = {a["name"]: a for a in ms["axes"]}
        assert [a["name"] for a in ms["axes"]] == ["t", "c", "z", "y", "x"]
        assert [a["type"] for a in ms["axes"]] == ["time", "channel", "space", "space", "space"]
        assert axes["t"]["unit"] == "second" and axes["z"]["unit"] == "micrometer"
        assert "unit" not in axes["c"]
        (ds,) = ms["datasets"]
        assert ds["path"] == "0"
        (scale,) = ds["coordinateTransformations"]
        px = acq.pixel_size_um
        expected = [acq.time_interval_s, 1.0, acq.z_spacing_um, px or 1.0, px or 1.0]
        assert scale == {"type": "scale", "scale": pytest.approx(expected)}
        # Units only where the size is known: the lab's files give no pixel size.
        assert ("unit" in axes["x"]) == (px is not None) == ("unit" in axes["y"])

        stack = source_stack(exp, pos)
        channels = ome["omero"]["channels"]
        assert [c["label"] for c in channels] == exp.channels
        colors = {c["label"]: c["color"] for c in channels}
        assert colors["GFP"] == "00FF00" and colors["Brightfield"] == "FFFFFF"
        for c, ch in enumerate(channels):  # windows from each channel's real range
            w = ch["window"]
            assert (w["start"], w["end"]) == (stack[:, c].min(), stack[:, c].max())
            assert (w["min"], w["max"]) == (0, 65535)

        # bioio sees the same names and physical sizes
        img = read_bioio(store)
        assert img.channel_names == exp.channels
        assert pytest.approx(acq.z_spacing_um) == img.physical_pixel_sizes.Z


def test_demo_layout_on_disk(demo, demo_stores):
    """One shard for the position (0.5), one file per plane (0.4), Blosc/zstd, uint16 kept."""
    version, stores = demo_stores
    exp = discover(demo)
    store = stores[0]
    arr = zarr.open_array(store / "0", mode="r")
    assert arr.dtype == np.uint16
    assert arr.chunks == (1, 1, 1, 512, 512)
    data_files = [p for p in (store / "0").rglob("*") if p.is_file()
                  and p.name not in ("zarr.json", ".zarray", ".zattrs")]
    if version == "0.5":
        meta = json.loads((store / "0" / "zarr.json").read_text())
        (sharding,) = meta["codecs"]
        assert sharding["name"] == "sharding_indexed"
        inner = sharding["configuration"]["codecs"]
        assert inner[-1]["name"] == "blosc" and inner[-1]["configuration"]["cname"] == "zstd"
        assert arr.shards == (exp.size_t, 3, 5, 512, 512)
        assert len(data_files) == 1
        # the group, the array, the OME group, the OME-XML: 4 more
        assert count_files(store) == 1 + 4
    else:
        meta = json.loads((store / "0" / ".zarray").read_text())
        assert meta["compressor"]["id"] == "blosc" and meta["compressor"]["cname"] == "zstd"
        assert meta["dimension_separator"] == "/"
        assert len(data_files) == exp.planes_per_position
        # .zgroup, .zattrs, 0/.zarray, 0/.zattrs, OME/.zgroup, OME/.zattrs, the OME-XML
        assert count_files(store) == exp.planes_per_position + 7
    # Compressed: smaller than the raw pixels.
    assert sum(f.stat().st_size for f in data_files) < exp.position_nbytes(exp.positions[0])


def test_ome_xml_beside_the_image_matches_the_ome_tiff(demo, demo_stores, tmp_path):
    version, stores = demo_stores
    meta = load_metadata(demo)
    exp = discover(demo, channel_order=meta.channel_order())
    tiffs = export_ome_tiff(exp, tmp_path, "tiff", metadata=meta, workers=2).files
    for store, tiff in zip(stores, tiffs, strict=True):
        raw = (store / OME_XML_PATH).read_bytes()
        assert b"&#" not in raw  # UTF-8, as bioformats2raw writes it
        zdoc = from_xml(raw.decode("utf-8"), validate=True)
        with tifffile.TiffFile(tiff) as tif:
            tdoc = from_xml(tif.ome_metadata, validate=True)
        (zimg,), (timg,) = zdoc.images, tdoc.images
        assert zimg.name == timg.name == store.name.removesuffix(".ome.zarr")
        zp, tp = zimg.pixels, timg.pixels
        assert zp.metadata_only is not None and not zp.tiff_data_blocks
        for attr in ("dimension_order", "type", "size_x", "size_y", "size_z", "size_c",
                     "size_t", "physical_size_x", "physical_size_z", "time_increment",
                     "channels", "planes"):
            assert getattr(zp, attr) == getattr(tp, attr), attr
        assert len(zp.planes) == exp.planes_per_position
        assert zp.planes[0].exposure_time is not None
        assert zimg.acquisition_date == timg.acquisition_date
        assert zimg.description == timg.description
        assert zdoc.instruments == tdoc.instruments

        def annotations(doc, skip=(SOURCE_NS, PROVENANCE_NS)):
            sa = doc.structured_annotations
            maps = [(a.namespace, [(m.k, m.value) for m in a.value.ms])
                    for a in sa.map_annotations if a.namespace not in skip]
            return (maps, [t.value for t in sa.tag_annotations],
                    [c.value for c in sa.comment_annotations])

        assert annotations(zdoc) == annotations(tdoc)
        assert annotations(zdoc)[1] == meta.tags
        # the fingerprint in the XML is the one in the attributes
        (source,) = [a for a in zdoc.structured_annotations.map_annotations
                     if a.namespace == SOURCE_NS]
        assert source.value.ms[0].value == read_fingerprint(store)
        assert {m.k for a in zdoc.structured_annotations.map_annotations
                if a.namespace == PROVENANCE_NS for m in a.value.ms} >= {"Exported With"}


def test_metadata_folder_written_as_for_ome_tiff(demo, demo_stores):
    _, stores = demo_stores
    folder = stores[0].parent / "metadata"
    meta = load_metadata(demo)
    names = {p.name for p in folder.iterdir()}
    for table in meta.tables:
        assert {f"{table}.csv", f"{table}.h5"} <= names
    assert {a.name for a in meta.attachments} <= names


# --- layouts, pixel types, pyramids, tiles -----------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_layout_variants(build_layout, tmp_path, version):
    # Unpadded 0-based numbers, positions that sort naturally, TIFF planes.
    data = build_layout(
        positions=["pos1", "pos2", "pos10"],
        name=lambda t, c, z: f"img_t{t - 1}_z{z - 1}_{c}",
        convert=lambda a: (imagecodecs.tiff_encode(a), ".tif"),
    )
    pattern = "img_t{T}_z{Z}_{C}.{ext}"
    exp = discover(data, rule=NamingRule(plane_pattern=pattern))
    stores = export(data, tmp_path / "out", "--ngff-version", version, "--plane-pattern", pattern)
    assert [s.name for s in stores] == ["pos1.ome.zarr", "pos10.ome.zarr", "pos2.ome.zarr"]
    for pos in exp.positions:
        check_store(tmp_path / "out" / "ds" / f"{pos.name}.ome.zarr", source_stack(exp, pos),
                    version)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint8])
def test_pixel_types(tmp_path, dtype, version):
    data = random_experiment(tmp_path / "exp", np.dtype(dtype))
    exp = discover(data)
    stores = export(data, tmp_path / "out", "--ngff-version", version)
    for store, pos in zip(stores, exp.positions, strict=True):
        expected = source_stack(exp, pos)
        assert expected.dtype == dtype
        check_store(store, expected, version)
        window = attrs(store)["omero"]["channels"][0]["window"]
        assert (window["start"], window["end"]) == (expected[:, 0].min(), expected[:, 0].max())
        if np.dtype(dtype).kind == "f":
            assert (window["min"], window["max"]) == (window["start"], window["end"])
        else:
            info = np.iinfo(dtype)
            assert (window["min"], window["max"]) == (info.min, info.max)


@pytest.mark.parametrize("version", VERSIONS)
def test_pyramid(tmp_path, version):
    data = random_experiment(tmp_path / "exp", np.dtype(np.uint16), shape=(600, 1100))
    exp = discover(data)
    stores = export(data, tmp_path / "out", "--ngff-version", version, "--pyramid")
    shapes = pyramid_shapes((600, 1100), True)
    assert len(shapes) == 3
    for store, pos in zip(stores, exp.positions, strict=True):
        expected = source_stack(exp, pos)
        check_store(store, expected, version)
        levels = read_ome_zarr_py(store)
        assert [lv.shape[-2:] for lv in levels] == [(600, 1100), *shapes]
        (ms,) = attrs(store)["multiscales"]
        assert [d["path"] for d in ms["datasets"]] == ["0", "1", "2", "3"]
        scales = [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]]
        assert [s[-1] for s in scales] == [1.0, 2.0, 4.0, 8.0]
        assert all(s[:3] == scales[0][:3] for s in scales)
        for k in range(1, len(levels)):
            expected = np.stack([downsample(p) for p in expected.reshape(-1, *expected.shape[-2:])]
                                ).reshape(*expected.shape[:3], *shapes[k - 1])
            np.testing.assert_array_equal(read_zarr(store, k), expected)
            np.testing.assert_array_equal(levels[k], expected)
        img = read_bioio(store)
        assert len(img.resolution_levels) == 4


@pytest.mark.parametrize("version", VERSIONS)
def test_large_planes_are_tiled_with_an_automatic_pyramid(tmp_path, version):
    """Planes beyond 4096 pixels: 2048-pixel chunks (the edge ones padded) and
    sub-resolutions without being asked, as the OME-TIFF writer does."""
    shape = (40, 4100)
    data = random_experiment(tmp_path / "exp", np.dtype(np.uint8), shape=shape, sizes=(2, 1, 2))
    exp = discover(data)
    levels = levels_for(shape, None)
    assert levels[0].chunk == (40, TILE) and levels[0].grid == (1, 3)
    assert len(levels) == 1 + len(pyramid_shapes(shape, None)) > 1
    store = export(data, tmp_path / "out", "--ngff-version", version)[0]
    expected = source_stack(exp, exp.positions[0])
    check_store(store, expected, version)
    assert zarr.open_array(store / "0", mode="r").chunks == (1, 1, 1, 40, TILE)
    small = expected.reshape(-1, *shape)
    for k, level in enumerate(levels[1:], start=1):
        small = np.stack([downsample(p) for p in small])
        assert small.shape[1:] == level.shape
        np.testing.assert_array_equal(read_zarr(store, k).reshape(small.shape), small)


@pytest.mark.parametrize("compression", ["lz4", "zlib", "none"])
def test_other_compressions(tmp_path, compression):
    data = random_experiment(tmp_path / "exp", np.dtype(np.uint16))
    exp = discover(data)
    store = export(data, tmp_path / "out", "--compression", compression)[0]
    check_store(store, source_stack(exp, exp.positions[0]), "0.5")
    inner = json.loads((store / "0" / "zarr.json").read_text())["codecs"][0]["configuration"]
    names = [c["name"] for c in inner["codecs"]]
    if compression == "none":
        assert names == ["bytes"]
    else:
        assert names == ["bytes", "blosc"] and inner["codecs"][1]["configuration"]["cname"] \
            == compression


def test_pixel_size_from_a_sidecar_gives_xy_units_and_scale(build_layout, tmp_path):
    data = build_layout()
    (data / "experiment.yml").write_text("acquisition:\n  pixel_size_um: 0.108\n")
    store = export(data, tmp_path / "out")[0]
    (ms,) = attrs(store)["multiscales"]
    axes = {a["name"]: a for a in ms["axes"]}
    assert axes["x"]["unit"] == axes["y"]["unit"] == "micrometer"
    scale = ms["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale[3:] == pytest.approx([0.108, 0.108])
    assert pytest.approx(0.108) == read_bioio(store).physical_pixel_sizes.X


# --- re-runs, overwrite, interruption ----------------------------------------------------------


def test_rerun_skips_and_changed_data_needs_overwrite(build_layout, tmp_path, capsys):
    data = build_layout(positions=["pos001"])
    out = tmp_path / "out"
    (store,) = export(data, out)
    xml_mtime = (store / OME_XML_PATH).stat().st_mtime_ns
    capsys.readouterr()
    assert main(["export", str(data), "-o", str(out), "--dataset", "ds",
                 "--format", "ome-zarr"]) == 0
    assert "1 up to date, skipped" in capsys.readouterr().out
    assert (store / OME_XML_PATH).stat().st_mtime_ns == xml_mtime

    # Another NGFF version is other settings: refused, the store untouched.
    assert main(["export", str(data), "-o", str(out), "--dataset", "ds",
                 "--format", "ome-zarr", "--ngff-version", "0.4"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (store / "zarr.json").is_file()

    # Changed source planes: replaced with --overwrite.
    victim = sorted((data / "pos001").iterdir())[0]
    plane = read_png(victim)
    victim.unlink()
    victim.write_bytes(imagecodecs.png_encode(plane[::-1].copy()))
    exp = discover(data)
    with pytest.raises(InputError, match="--overwrite"):
        export_ome_zarr(exp, out, "ds", workers=1)
    (store,) = export(data, out, "--overwrite")
    check_store(store, source_stack(exp, exp.positions[0]), "0.5")
    assert sorted(p.name for p in (out / "ds").iterdir()) == ["metadata", "pos001.ome.zarr"]


def test_a_folder_not_ours_is_never_replaced_without_overwrite(build_layout, tmp_path):
    data = build_layout(positions=["pos001"], lab_files=False)
    ds = tmp_path / "out" / "ds"
    (ds / "pos001.ome.zarr").mkdir(parents=True)
    (ds / "pos001.ome.zarr" / "mine.txt").write_text("the user's")
    with pytest.raises(InputError, match="pos001.ome.zarr: exists"):
        export_ome_zarr(discover(data), tmp_path / "out", "ds", workers=1)
    assert [p.name for p in (ds / "pos001.ome.zarr").iterdir()] == ["mine.txt"]
    assert sorted(p.name for p in ds.iterdir()) == ["pos001.ome.zarr"]


def test_ctrl_c_mid_write_leaves_nothing_finished_looking(demo, tmp_path):
    exp = discover(demo)
    seen = 0

    def interrupt(nbytes: int) -> None:
        nonlocal seen
        seen += 1
        if seen == 50:  # in the second position's store
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_ome_zarr(exp, tmp_path, "ds", workers=2, on_plane=interrupt)
    ds = tmp_path / "ds"
    assert sorted(p.name for p in ds.iterdir()) == ["pos001.ome.zarr"]
    result = export_ome_zarr(exp, tmp_path, "ds", workers=2)
    assert [s.name for s in result.skipped] == ["pos001.ome.zarr"]
    assert [s.name for s in result.files] == ["pos002.ome.zarr", "pos003.ome.zarr"]
    stores = sorted(ds.iterdir())
    assert [s.name for s in stores] == [f"{p.name}.ome.zarr" for p in exp.positions]
    for store, pos in zip(stores, exp.positions, strict=True):
        np.testing.assert_array_equal(read_zarr(store), source_stack(exp, pos))




@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
@pytest.mark.parametrize("version", VERSIONS)
def test_rerun_after_sigkill_completes_the_export(demo, tmp_path, capsys, version):
    out = tmp_path / "out"
    assert export_killed_at(demo, out, 60, version) == -signal.SIGKILL
    ds = out / "ds"
    names = {p.name for p in ds.iterdir()}
    assert "pos001.ome.zarr" in names and "pos002.ome.zarr" not in names
    (orphan,) = [n for n in names if n.startswith(".pos002.ome.zarr.") and n.endswith(".part")]
    assert len(orphan) == len(".pos002.ome.zarr.") + 8 + len(".part")
    assert count_files(ds / orphan) > 1
    # A look-alike that is not ours survives the clean-up.
    (ds / ".pos003.ome.zarr.mine.part").mkdir()

    capsys.readouterr()
    exp = discover(demo)
    stores = export(demo, out, "--ngff-version", version)
    assert [s.name for s in stores] == [f"{p.name}.ome.zarr" for p in exp.positions]
    assert sorted(p.name for p in ds.iterdir()) == sorted(
        [".pos003.ome.zarr.mine.part", "metadata", *(s.name for s in stores)])
    removal = [line for line in capsys.readouterr().err.splitlines() if "interrupted" in line]
    assert len(removal) == 1 and orphan in removal[0]
    for store, pos in zip(stores, exp.positions, strict=True):
        check_store(store, source_stack(exp, pos), version)


# --- the command line --------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["--format", "ome-zarr", "--bigtiff"],
    ["--ngff-version", "0.4"],
    ["--compression", "lz4"],
    ["--format", "ome-zarr", "--ngff-version", "0.6"],
])
def test_options_that_do_not_fit_the_format_are_usage_errors(demo, tmp_path, args):
    assert main(["export", str(demo), "-o", str(tmp_path / "out"), *args]) == 2
    assert not (tmp_path / "out").exists()


def test_windows_ignore_nan_and_infinity():
    from pyomero_upload.export.ome_zarr_writer import value_range

    plane = np.array([[np.nan, 2.5], [-1.0, np.inf]], np.float32)
    assert value_range(plane) == (-1.0, 2.5)
    assert value_range(np.full((2, 2), np.nan, np.float32)) == (0.0, 0.0)
    assert value_range(np.array([[3, 7]], np.uint16)) == (3.0, 7.0)


def test_verbose_export_prints_its_profile(demo, tmp_path, capsys):
    assert main(["-v", "export", str(demo), "-o", str(tmp_path), "--format", "ome-zarr"]) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "profile:" in ln]
    assert len(lines) == 1 and lines[0].startswith("DEBUG: profile: ")
    for stage in ("decode", "measure", "compress", "writing thread", "waiting for planes"):
        assert stage in lines[0]


def test_writer_and_its_profile_pickle_for_dask_workers():
    import pickle

    from pyomero_upload.export.ome_zarr_writer import OmeZarrWriter, StoreFormat

    writer = pickle.loads(pickle.dumps(OmeZarrWriter(StoreFormat("0.4", "lz4"))))
    writer.profile.add_plane(0.1, 0.0, 0.1)
    assert writer.fmt == StoreFormat("0.4", "lz4") and writer.profile.planes == 1
