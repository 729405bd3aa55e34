"""Bio-Formats, the reference reader (OMERO import, Fiji, QuPath), reads every file we write.

Each variant is exported, then read by Bio-Formats' own tools: it must pick
its OME-TIFF reader, report XYZCT as *certain* with the right sizes and
pixel type, decode every plane equal to its source file, and see the same
metadata we wrote.  Skips where Java is absent, unless
``PYOMERO_REQUIRE_BIOFORMATS=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile
from ome_types import from_xml

from helpers import demo_planes, random_experiment, read_png
from pyomero_upload.export import export_ome_tiff
from pyomero_upload.export.pyramid import downsample, pyramid_shapes
from pyomero_upload.layout import discover
from pyomero_upload.metadata import load_metadata
from pyomero_upload.testing import bioformats

PIXEL_TYPES = {
    np.dtype(np.uint8): "uint8", np.dtype(np.uint16): "uint16", np.dtype(np.int16): "int16",
    np.dtype(np.float32): "float",
}


@pytest.fixture(scope="session")
def bf() -> None:
    reason = bioformats.unavailable_reason()
    if reason:
        if os.environ.get("PYOMERO_REQUIRE_BIOFORMATS") == "1":
            pytest.fail(f"Bio-Formats is required here but unavailable: {reason}")
        pytest.skip(f"Bio-Formats cannot run here: {reason}")


def source_stack(exp, position) -> np.ndarray:
    """The position's source planes in XYZCT order, decoded by imagecodecs alone."""
    return np.stack([imagecodecs.imread(p) for p in exp.plane_paths(position)])


def check_file(path: Path, expected: np.ndarray, sizes: tuple[int, int, int], tmp: Path,
               resolutions: int = 1) -> bioformats.Info:
    """Bio-Formats reads ``path`` as OME-TIFF, XYZCT certain, and decodes ``expected``."""
    info = bioformats.image_info(path)
    assert info.reader == "OME-TIFF", f"{path.name}: read as {info.reader}"
    assert info.validation == "No validation errors found."
    assert len(info.series) == 1
    s = info.series[0]
    assert (s.dimension_order, s.order_certain) == ("XYZCT", True)
    n, y, x = expected.shape
    assert (s.size_x, s.size_y, (s.size_z, s.size_c, s.size_t)) == (x, y, sizes)
    assert s.image_count == n
    assert s.pixel_type == PIXEL_TYPES[expected.dtype]
    assert len(s.resolution_widths) == resolutions
    decoded = bioformats.decode(path, tmp)
    assert decoded.dtype == expected.dtype
    np.testing.assert_array_equal(decoded, expected)
    return info


def export(exp, out: Path, **options) -> list[Path]:
    return export_ome_tiff(exp, out, "ds", workers=2, **options).files


# -- the demo and its metadata ------------------------------------------------------


@pytest.fixture(scope="module")
def demo_files(demo, tmp_path_factory):
    meta = load_metadata(demo)
    exp = discover(demo, channel_order=meta.channel_order())
    files = export(exp, tmp_path_factory.mktemp("bf-demo"), metadata=meta)
    return exp, meta, files


def test_demo_reads_as_ome_tiff_plane_for_plane(bf, demo, demo_files, tmp_path):
    exp, _meta, files = demo_files
    assert [f.name for f in files] == [f"{p.name}.ome.tiff" for p in exp.positions]
    for f, pos in zip(files, exp.positions, strict=True):
        expected = np.zeros((exp.planes_per_position, 512, 512), np.uint16)
        for t, c, z, src in demo_planes(demo, pos.name):
            index = z - 1 + exp.size_z * (exp.channels.index(c) + exp.size_c * (t - 1))
            expected[index] = read_png(src)
        check_file(f, expected, (exp.size_z, exp.size_c, exp.size_t), tmp_path)


def test_demo_metadata_as_bioformats_sees_it(bf, demo_files):
    exp, meta, files = demo_files
    ours = from_xml(tifffile.TiffFile(files[0]).ome_metadata, validate=False)
    theirs = from_xml(bioformats.image_info(files[0]).omexml, validate=False)
    mine, seen = ours.images[0], theirs.images[0]
    px, spx = mine.pixels, seen.pixels
    # The values the lab's files hold ...
    assert [c.name for c in spx.channels] == exp.channels
    assert spx.physical_size_z == pytest.approx(meta.acquisition.z_spacing_um)
    assert spx.physical_size_z_unit.value == "µm"
    assert spx.time_increment == pytest.approx(meta.acquisition.time_interval_s)
    assert spx.time_increment_unit.value == "s"
    assert seen.acquisition_date == meta.acquisition.started
    # ... and everything else exactly as we wrote it.
    assert [c.color for c in spx.channels] == [c.color for c in px.channels]
    assert [(c.excitation_wavelength, c.emission_wavelength) for c in spx.channels] == [
        (c.excitation_wavelength, c.emission_wavelength) for c in px.channels
    ]
    assert seen.description == mine.description

    def planes(p):
        return {
            (q.the_z, q.the_c, q.the_t): (
                q.delta_t, q.delta_t_unit, q.exposure_time, q.exposure_time_unit,
                q.position_x, q.position_x_unit, q.position_y, q.position_y_unit,
                q.position_z, q.position_z_unit,
            )
            for q in p.planes
        }

    assert len(spx.planes) == exp.planes_per_position
    assert planes(spx) == planes(px)
    first = spx.planes[0]
    assert first.exposure_time is not None and first.position_x is not None
    assert first.position_x_unit.value == "µm" and first.exposure_time_unit.value == "ms"

    def annotations(o):
        sa = o.structured_annotations
        return (
            sorted((a.namespace, tuple((m.k, m.value) for m in a.value.ms))
                   for a in sa.map_annotations),
            sorted(a.value for a in sa.tag_annotations),
            sorted(a.value for a in sa.comment_annotations),
        )

    maps, tags, comments = annotations(ours)
    assert maps and tags == sorted(meta.tags)
    assert annotations(theirs)[0] == maps
    assert annotations(theirs)[1:] == (tags, comments)


# -- layout and pixel-type variants ----------------------------------------------------


def _u8_png(plane: np.ndarray) -> tuple[bytes, str]:
    return imagecodecs.png_encode((plane >> 8).astype(np.uint8)), ".png"


def _tiff(plane: np.ndarray) -> tuple[bytes, str]:
    out = io.BytesIO()
    tifffile.imwrite(out, plane)
    return out.getvalue(), ".tif"


@pytest.mark.parametrize(
    "variant",
    ["uint8 png", "tiff input", "0-based", "one position"],
)
def test_layout_variants(bf, build_layout, tmp_path, variant):
    if variant == "uint8 png":
        root = build_layout(convert=_u8_png)
    elif variant == "tiff input":
        root = build_layout(convert=_tiff)
    elif variant == "0-based":
        root = build_layout(name=lambda t, c, z: f"microscope1_{t - 1:06d}_{c}_{z - 1:03d}")
    else:
        root = build_layout(positions=["pos001"])
    exp = discover(root)
    files = export(exp, tmp_path / "out")
    assert len(files) == len(exp.positions)
    for f, pos in zip(files, exp.positions, strict=True):
        check_file(f, source_stack(exp, pos), (exp.size_z, exp.size_c, exp.size_t), tmp_path)


def test_twenty_five_positions(bf, build_layout, tmp_path):
    root = build_layout(positions=[f"pos{i:03d}" for i in range(1, 26)])
    exp = discover(root)
    files = export(exp, tmp_path / "out")
    assert [f.name for f in files] == [f"pos{i:03d}.ome.tiff" for i in range(1, 26)]
    for i in (0, 9, 24):  # first, the first two-digit, last
        check_file(files[i], source_stack(exp, exp.positions[i]), (5, 3, 3), tmp_path)




@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint8])
def test_pixel_types(bf, tmp_path, dtype):
    exp = discover(random_experiment(tmp_path / "exp", np.dtype(dtype)))
    files = export(exp, tmp_path / "out")
    for f, pos in zip(files, exp.positions, strict=True):
        check_file(f, source_stack(exp, pos), (3, 2, 2), tmp_path)


@pytest.mark.parametrize("compression", ["zlib", "zstd"])
@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_compressions(bf, tmp_path, compression, dtype):
    exp = discover(random_experiment(tmp_path / "exp", np.dtype(dtype)))
    files = export(exp, tmp_path / "out", compression=compression)
    with tifffile.TiffFile(files[0]) as tif:
        assert tif.pages[0].compression.name == {"zlib": "ADOBE_DEFLATE", "zstd": "ZSTD"}[
            compression
        ]
    check_file(files[0], source_stack(exp, exp.positions[0]), (3, 2, 2), tmp_path)


def test_pyramid_sub_resolutions_visible(bf, tmp_path):
    exp = discover(random_experiment(tmp_path / "exp", np.dtype(np.uint16), shape=(600, 1100)))
    files = export(exp, tmp_path / "out", pyramid=True)
    expected = source_stack(exp, exp.positions[0])
    shapes = pyramid_shapes((600, 1100), True)
    assert len(shapes) == 3
    info = check_file(files[0], expected, (3, 2, 2), tmp_path, resolutions=1 + len(shapes))
    assert info.series[0].resolution_widths == [1100] + [x for _y, x in shapes]
    # Flattened, sub-resolution k is Bio-Formats' series k: check every one.
    for k in range(1, len(shapes) + 1):
        expected = np.stack([downsample(p) for p in expected])
        np.testing.assert_array_equal(bioformats.decode(files[0], tmp_path, series=k), expected)


def test_bigtiff(bf, tmp_path):
    exp = discover(random_experiment(tmp_path / "exp", np.dtype(np.uint16)))
    files = export(exp, tmp_path / "out", bigtiff=True)
    with tifffile.TiffFile(files[0]) as tif:
        assert tif.is_bigtiff
    check_file(files[0], source_stack(exp, exp.positions[0]), (3, 2, 2), tmp_path)
