"""Layout discovery on the demo (real or synthetic) and on variants built from it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import imagecodecs
import numpy as np
import pytest
import tifffile

from helpers import demo_planes, read_png
from pyomero_upload import layout, planes
from pyomero_upload.errors import InputError
from pyomero_upload.layout import NamingRule, Position, discover, natural_key, order_channels


def test_demo_sizes_and_order(demo):
    exp = discover(demo)
    assert [p.name for p in exp.positions] == ["pos001", "pos002", "pos003"]
    assert (exp.size_t, exp.size_c, exp.size_z) == (3, 3, 5)
    assert exp.channels == ["Brightfield", "DIC", "GFP"]
    assert exp.t_values == [1, 2, 3] and exp.z_values == [1, 2, 3, 4, 5]
    for p in exp.positions:
        assert p.shape == (512, 512)
        assert p.dtype == np.uint16
        assert len(p.files) == 45 and p.missing == []
    assert exp.nbytes == 3 * 45 * 512 * 512 * 2


def test_plane_order_is_xyzct(demo):
    exp = discover(demo)
    keys = exp.plane_keys()
    # Z fastest, then C, then T
    assert keys[:6] == [(1, "Brightfield", z) for z in range(1, 6)] + [(1, "DIC", 1)]
    assert keys[-1] == (3, "GFP", 5)
    paths = exp.plane_paths(exp.positions[1])
    assert paths[7].name == "microscope1_000001_DIC_003.png"
    assert paths[7].parent.name == "pos002"


def test_channel_order_identical_across_runs_and_hash_seeds(demo):
    orders = set()
    for seed in ("0", "1", "12345", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-m", "pyomero_upload", "plan", "--json", str(demo)],
            capture_output=True, text=True, env=env, check=True,
        ).stdout
        orders.add(tuple(json.loads(out)["channels"]))
    assert orders == {("Brightfield", "DIC", "GFP")}


def test_one_position(build_layout):
    exp = discover(build_layout(["pos001"]))
    assert len(exp.positions) == 1 and exp.planes_per_position == 45


def test_twenty_five_positions_natural_order(build_layout):
    names = [f"pos{i:03d}" for i in range(1, 26)]
    exp = discover(build_layout(list(reversed(names))))
    assert [p.name for p in exp.positions] == names
    assert all(len(p.files) == 45 for p in exp.positions)


def test_two_hundred_tiny_positions(tmp_path):
    root = tmp_path / "many"
    plane = imagecodecs.png_encode(np.arange(64, dtype=np.uint16).reshape(8, 8))
    for i in range(1, 201):
        (root / f"pos{i}").mkdir(parents=True)
        (root / f"pos{i}" / "x_1_GFP_1.png").write_bytes(plane)
    exp = discover(root)
    assert [p.name for p in exp.positions][:3] == ["pos1", "pos2", "pos3"]
    assert exp.positions[-1].name == "pos200" and len(exp.positions) == 200


def test_zero_based_and_other_padding(build_layout):
    root = build_layout(name=lambda t, c, z: f"run_{t - 1}_{c}_{z - 1:04d}")
    exp = discover(root)
    assert exp.t_values == [0, 1, 2] and exp.z_values == [0, 1, 2, 3, 4]
    assert (exp.size_t, exp.size_z) == (3, 5)
    assert exp.positions[0].missing == []


def test_tiff_and_8bit_planes(build_layout, demo):
    def to_tiff(a):
        import io

        buf = io.BytesIO()
        tifffile.imwrite(buf, a)
        return buf.getvalue(), ".tif"

    exp = discover(build_layout(["pos001"], convert=to_tiff))
    assert exp.positions[0].dtype == np.uint16 and exp.positions[0].shape == (512, 512)

    # 8-bit TIFF planes keep their type, and decode to what was written
    root = build_layout(["pos001"], convert=lambda a: to_tiff((a >> 8).astype(np.uint8)),
                        folder="exp8")
    exp = discover(root)
    pos = exp.positions[0]
    assert pos.dtype == np.uint8 and pos.shape == (512, 512)
    t, c, z, src = demo_planes(demo)[-1]
    plane = pos.read_plane(pos.files[(t, c, z)])
    assert plane.dtype == np.uint8
    np.testing.assert_array_equal(plane, (read_png(src) >> 8).astype(np.uint8))


def test_8bit_png(build_layout):
    def to_u8(a):
        return imagecodecs.png_encode((a >> 8).astype(np.uint8)), ".png"

    exp = discover(build_layout(["pos001"], convert=to_u8))
    assert exp.positions[0].dtype == np.uint8


@pytest.mark.parametrize("slow_header", [float("inf"), -1.0], ids=["calling thread", "threads"])
def test_probing_alone_or_in_threads_finds_the_same_first_bad_header(
        build_layout, monkeypatch, slow_header):
    """Headers are read by the calling thread where they come fast and by threads
    where they come slowly (a network share): shapes, pixel types and the file
    named by the first bad header are the same either way."""
    monkeypatch.setattr(layout, "PROBE_BATCH", 4)
    monkeypatch.setattr(layout, "PROBE_SLOW_HEADER", slow_header)
    readers = []
    real_probe = planes.probe_plane

    def probe_plane(path):
        readers.append(threading.current_thread())
        return real_probe(path)

    monkeypatch.setattr(planes, "probe_plane", probe_plane)
    root = build_layout()
    exp = discover(root, workers=2)
    assert [(p.shape, p.dtype) for p in exp.positions] == [((512, 512), np.uint16)] * 3
    assert len(readers) == 135
    others = {t for t in readers if t is not threading.main_thread()}
    assert (len(others) > 0) == (slow_header < 0)
    bad = [root / "pos002" / "microscope1_000003_DIC_004.png",
           root / "pos003" / "microscope1_000001_GFP_001.png"]
    for f in bad:
        f.unlink()  # a link to the demo's file: never write through it
        f.write_bytes(b"not a png")
    with pytest.raises(InputError, match="bad or truncated header") as err:
        discover(root, workers=2)
    assert err.value.path == str(bad[0])


def test_stray_files_are_ignored(build_layout):
    root = build_layout()
    (root / "pos002" / "notes.txt").write_text("focus drifted at T2")
    (root / "pos002" / "Thumbs.db").write_bytes(b"\0" * 100)
    (root / "pos002" / ".DS_Store").write_bytes(b"\0" * 10)
    (root / "pos002" / "thumbnail.png").write_bytes(b"not even a png")
    (root / "notes").mkdir()  # not a position folder
    exp = discover(root)
    assert exp.channels == ["Brightfield", "DIC", "GFP"]
    ignored = {p.name for p in exp.ignored}
    assert {"notes.txt", "Thumbs.db", ".DS_Store", "thumbnail.png"} <= ignored


def test_explicit_channel_order(demo):
    exp = discover(demo, channel_order=["gfp", "Brightfield"])
    assert exp.channels == ["GFP", "Brightfield", "DIC"]


def test_order_channels_by_first_appearance_then_name():
    found = {"mCherry": (1, 1), "GFP": (1, 1), "DIC": (0, 3), "cy5": (2, 0)}
    assert order_channels(found, None) == ["DIC", "GFP", "mCherry", "cy5"]


def test_natural_key():
    assert sorted(["pos10", "pos2", "pos1"], key=natural_key) == ["pos1", "pos2", "pos10"]


def test_custom_naming_rule(build_layout):
    root = build_layout(
        ["site_1", "site_2"], name=lambda t, c, z: f"img_t{t}_z{z}_{c}"
    )
    rule = NamingRule(r"site_\d+", "img_t{T}_z{Z}_{C}.{ext}")
    exp = discover(root, rule)
    assert [p.name for p in exp.positions] == ["site_1", "site_2"]
    assert (exp.size_t, exp.size_c, exp.size_z) == (3, 3, 5)
    regex = NamingRule(plane_pattern=r"img_t(?P<T>\d+)_z(?P<Z>\d+)_(?P<C>\w+)\.png")
    assert discover(root, NamingRule(r"site_\d+", regex.plane_pattern)).size_z == 5


def test_missing_plane_is_named(build_layout):
    root = build_layout()
    (root / "pos002" / "microscope1_000002_GFP_004.png").unlink()
    with pytest.raises(InputError) as err:
        discover(root)
    assert "pos002 T=2 C=GFP Z=4" in str(err.value)
    exp = discover(root, allow_missing=True)
    assert exp.positions[1].missing == [(2, "GFP", 4)]
    assert exp.size_t == 3 and exp.size_z == 5


def test_duplicate_plane_with_other_padding(build_layout):
    root = build_layout(["pos001"])
    src = root / "pos001" / "microscope1_000001_GFP_001.png"
    os.link(src, root / "pos001" / "microscope1_1_GFP_1.png")
    with pytest.raises(InputError, match="same plane"):
        discover(root)


def test_reading_a_plane_of_an_unindexed_position_names_it(demo):
    folder = demo / "pos001"
    files = {(t, c, z): f for t, c, z, f in demo_planes(demo)}
    pos = Position("pos001", folder, files)  # built by hand: size and pixel type unknown
    with pytest.raises(InputError) as err:
        pos.read_plane(files[(1, "GFP", 1)])
    assert str(err.value).startswith(f"{folder}: ") and "discover()" in str(err.value)
    assert "\n" not in str(err.value)
    indexed = discover(demo).positions[0]
    np.testing.assert_array_equal(indexed.read_plane(files[(1, "GFP", 1)]),
                                  read_png(files[(1, "GFP", 1)]))


def _chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@pytest.mark.parametrize("text_bytes", [0, 10, planes.PNG_HEAD_READ, 3 * planes.PNG_HEAD_READ + 5])
def test_png_time_is_found_behind_text_chunks_of_any_size_and_never_after_the_pixels(
        tmp_path, text_bytes):
    """The tIME chunk wherever it stands before the pixels: within the first
    read, across its end, or reads further in; none after IDAT, none from a
    file cut short."""
    import struct
    from datetime import datetime

    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 3, 16, 0, 0, 0, 0))
    text = _chunk(b"tEXt", b"Comment\0" + b"x" * text_bytes)
    when = _chunk(b"tIME", struct.pack(">HBBBBB", 2018, 9, 28, 16, 18, 14))
    idat = _chunk(b"IDAT", imagecodecs.zlib_encode(bytes(3 * (1 + 8))))
    end = _chunk(b"IEND", b"")
    before = tmp_path / "before.png"
    before.write_bytes(planes.PNG_SIGNATURE + ihdr + text + when + idat + end)
    assert planes.png_time(before) == datetime(2018, 9, 28, 16, 18, 14)
    assert planes.read_plane(before).shape == (3, 4)  # a real PNG, as libpng reads it
    after = tmp_path / "after.png"
    after.write_bytes(planes.PNG_SIGNATURE + ihdr + text + idat + when + end)
    assert planes.png_time(after) is None
    cut = tmp_path / "cut.png"
    cut.write_bytes((planes.PNG_SIGNATURE + ihdr + text + when)[:-10])  # tIME's data cut
    assert planes.png_time(cut) is None
    headless = tmp_path / "headless.png"
    headless.write_bytes(planes.PNG_SIGNATURE + ihdr + text)  # ends before any pixels
    assert planes.png_time(headless) is None
    assert planes.png_time(tmp_path / "absent.png") is None
