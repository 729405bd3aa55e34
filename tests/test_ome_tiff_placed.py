"""OME-TIFF planes placed by the decode threads (``os.pwrite`` into a laid-out file).

The placed path must make the very file the streamed path (tifffile writing
the planes in order) makes, keep every crash guarantee, and never touch a
file descriptor after its file is closed.
"""

from __future__ import annotations

import os
import pickle
import threading

import imagecodecs
import numpy as np
import pytest
import tifffile

from helpers import leftovers, ome_files, read_png
from pyomero_upload.errors import InputError
from pyomero_upload.export import export_ome_tiff, ome_tiff_writer
from pyomero_upload.export.ome_tiff_writer import OmeTiffWriter, _Placement, placeable
from pyomero_upload.layout import discover
from pyomero_upload.metadata import load_metadata

pytestmark = pytest.mark.skipif(not hasattr(os, "pwrite"), reason="no os.pwrite here")


def _u8_png(plane: np.ndarray) -> tuple[bytes, str]:
    return imagecodecs.png_encode((plane >> 8).astype(np.uint8)), ".png"


def _spy(monkeypatch) -> list[str]:
    """The names of the images written by the placed path."""
    placed: list[str] = []
    real = ome_tiff_writer.write_placed

    def spy(spec, *args, **kwargs):
        placed.append(spec.name)
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(ome_tiff_writer, "write_placed", spy)
    return placed


def _export_both(monkeypatch, root, tmp_path, **options):
    """The same export by the placed and by the streamed path: (placed, streamed) files."""
    exp = discover(root)
    meta = load_metadata(root)
    placed = _spy(monkeypatch)
    a = export_ome_tiff(exp, tmp_path / "placed", "d", metadata=meta, provenance=False,
                        workers=2, **options).files
    assert placed == [p.name for p in exp.positions]  # every image took the placed path
    monkeypatch.setattr(ome_tiff_writer, "placeable", lambda *args: False)
    b = export_ome_tiff(exp, tmp_path / "streamed", "d", metadata=meta, provenance=False,
                        workers=2, **options).files
    assert len(placed) == len(exp.positions)  # ... and none of these
    return a, b


@pytest.mark.parametrize("variant", ["uint16", "uint8", "bigtiff"])
def test_placed_file_is_byte_identical_to_the_streamed_one(monkeypatch, build_layout, tmp_path,
                                                            variant):
    root = build_layout(["pos001", "pos002"], convert=_u8_png if variant == "uint8" else None)
    options = {"bigtiff": True} if variant == "bigtiff" else {}
    placed, streamed = _export_both(monkeypatch, root, tmp_path, **options)
    assert [f.name for f in placed] == ["pos001.ome.tiff", "pos002.ome.tiff"]
    for a, b in zip(placed, streamed, strict=True):
        assert a.read_bytes() == b.read_bytes()
        with tifffile.TiffFile(a) as tif:
            assert tif.is_bigtiff == (variant == "bigtiff")
            offsets = [p.dataoffsets[0] for p in tif.pages]
            nbytes = tif.pages[0].nbytes
            assert offsets == [offsets[0] + i * nbytes for i in range(len(tif.pages))]
            data = tif.series[0].asarray()
    expected = read_png(root / "pos002" / "microscope1_000003_GFP_004.png")
    np.testing.assert_array_equal(data[2, 2, 3], expected)


@pytest.mark.parametrize("options", [{"compression": "zlib"}, {"pyramid": True}])
def test_compressed_and_pyramid_files_keep_the_streamed_path(monkeypatch, build_layout,
                                                             tmp_path, options):
    placed = _spy(monkeypatch)
    root = build_layout(["pos001"])
    files = export_ome_tiff(discover(root), tmp_path / "o", "d", workers=2, **options).files
    assert placed == []
    with tifffile.TiffFile(files[0]) as tif:
        assert (len(tif.series[0].levels) > 1) == ("pyramid" in options)
        assert (tif.pages[0].compression.name == "ADOBE_DEFLATE") == ("compression" in options)
        np.testing.assert_array_equal(
            tif.series[0].asarray()[0, 0, 0],
            read_png(root / "pos001" / "microscope1_000001_Brightfield_001.png"))


def test_placeable_only_for_uncompressed_files_without_sub_resolutions():
    u16 = np.dtype("uint16")
    assert placeable((512, 512), u16, "none", None)
    assert not placeable((512, 512), u16, "zstd", None)
    assert not placeable((512, 512), u16, "none", True)
    assert not placeable((8192, 8192), u16, "none", None)  # automatic pyramid


def test_decode_error_while_others_write_leaves_no_file(build_layout, tmp_path):
    root = build_layout(["pos001", "pos002"])
    bad = root / "pos002" / "microscope1_000002_DIC_003.png"
    data = bad.read_bytes()
    bad.unlink()
    bad.write_bytes(data[:100])
    out = tmp_path / "o"
    with pytest.raises(InputError, match=bad.name):
        export_ome_tiff(discover(root), out, "d", workers=2)
    assert [f.name for f in ome_files(out)] == ["pos001.ome.tiff"]
    assert leftovers(out) == []
    tifffile.imread(out / "d" / "pos001.ome.tiff")


def test_placement_hands_planes_back_until_open_and_close_waits_for_writes(tmp_path,
                                                                          monkeypatch):
    plane = np.arange(16, dtype=np.uint16).reshape(4, 4)
    placement = _Placement(plane.nbytes)
    assert placement.place(0, plane) is plane  # no file yet: the writer places it
    path = tmp_path / "f"
    path.write_bytes(bytes(10 + 3 * plane.nbytes))
    fd = os.open(path, os.O_RDWR)
    try:
        placement.open(fd, 10)
        assert placement.place(2, plane) == plane.nbytes
        assert path.read_bytes()[10 + 2 * plane.nbytes:] == plane.tobytes()

        entered, release = threading.Event(), threading.Event()
        real = ome_tiff_writer._pwrite

        def slow(*args):
            entered.set()
            release.wait(10)
            real(*args)

        monkeypatch.setattr(ome_tiff_writer, "_pwrite", slow)
        writer = threading.Thread(target=placement.place, args=(1, plane))
        writer.start()
        assert entered.wait(10)
        closer = threading.Thread(target=placement.close)
        closer.start()
        closer.join(0.2)
        assert closer.is_alive()  # a write is under way: close waits
        release.set()
        closer.join(10)
        writer.join(10)
        assert not closer.is_alive()
        assert placement.place(0, plane) is plane  # closed: handed back, fd untouched
    finally:
        os.close(fd)
    written = path.read_bytes()
    assert written[10 + plane.nbytes:10 + 2 * plane.nbytes] == plane.tobytes()
    assert written[10:10 + plane.nbytes] == bytes(plane.nbytes)


def test_writer_pickles_without_its_placements(build_layout):
    exp = discover(build_layout(["pos001"]))
    writer = OmeTiffWriter()
    writer.plane_work(exp.positions[0])
    assert writer._placements  # a Condition: not picklable itself
    copy = pickle.loads(pickle.dumps(writer))
    assert copy._placements == {} and copy.compression == "none"
