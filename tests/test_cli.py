"""The command line: plan, export, demo-data, exit codes and bad input."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile

from helpers import leftovers, ome_files, read_png
from pyomero_upload import demo_data
from pyomero_upload.cli import main
from pyomero_upload.planes import png_time
from pyomero_upload.plugins.acqlog import ACQ_SECTIONS


def snapshot(folder):
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


def test_plan_human(demo, capsys):
    assert main(["plan", str(demo)]) == 0
    out = capsys.readouterr().out
    assert "X=512 Y=512 Z=5 C=3 T=3 (XYZCT), uint16" in out
    assert "Channels (in order): Brightfield, DIC, GFP" in out
    assert "Total: 135 planes, 70.8 MB" in out


def test_plan_json_writes_nothing(build_layout, capsys):
    root = build_layout()
    (root / "pos001" / "microscope1_000003_GFP_005.png").unlink()
    before = snapshot(root.parent)
    assert main(["plan", "--json", "--allow-missing", str(root)]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert snapshot(root.parent) == before
    assert (plan["size_t"], plan["size_c"], plan["size_z"]) == (3, 3, 5)
    assert plan["channels"] == ["Brightfield", "DIC", "GFP"]
    assert plan["positions"][0]["missing"] == [{"T": 3, "C": "GFP", "Z": 5}]
    assert plan["positions"][0]["pixel_type"] == "uint16"
    assert plan["bytes"] == 3 * 45 * 512 * 512 * 2


def test_export_summary_and_files(demo, tmp_path, capsys):
    assert main(["export", str(demo), "-o", str(tmp_path), "--dataset", "run1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("wrote 3 file(s), 135 planes, 70.8 MB in ")
    files = ome_files(tmp_path / "run1")
    assert [f.name for f in files] == ["pos001.ome.tiff", "pos002.ome.tiff", "pos003.ome.tiff"]
    src = read_png(demo / "pos002" / "microscope1_000001_Brightfield_005.png")
    np.testing.assert_array_equal(tifffile.imread(files[1])[0, 0, 4], src)


def test_python_dash_m_and_version():
    out = subprocess.run(
        [sys.executable, "-m", "pyomero_upload", "--version"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert out.startswith("pyomero-upload 0.")


def test_console_script_exits_with_mains_code_after_freezing_and_atexit(tmp_path):
    """``run`` (the console script) exits with main's code; what is alive is frozen
    out of the collector, and atexit handlers still run and still print."""
    script = (
        "import atexit, gc, sys\n"
        "from pyomero_upload import cli\n"
        "atexit.register(lambda: print('atexit ran; frozen:', gc.get_freeze_count() > 0))\n"
        f"sys.argv = ['pyomero-upload', 'plan', {str(tmp_path / 'missing')!r}]\n"
        "cli.run()\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert "missing" in proc.stderr and proc.stdout == "atexit ran; frozen: True\n"


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["export", str(tmp_path)]) == 2  # no -o
    assert main(["plan", str(tmp_path), "--workers", "0"]) == 2
    assert main(["plan", str(tmp_path), "--plane-pattern", "{prefix}_{Q}.{ext}"]) == 2
    assert "unknown field {Q}" in capsys.readouterr().err


def test_demo_data_layout(tmp_path, capsys):
    root = tmp_path / "demo"
    assert main(["demo-data", str(root), "--positions", "3", "--timepoints", "2"]) == 0
    assert sorted(p.name for p in root.iterdir()) == [
        "demo_Acq.txt", "demo_log.txt", "pos001", "pos002", "pos003"
    ]
    planes = sorted((root / "pos001").iterdir())
    assert len(planes) == 2 * 3 * 3
    assert planes[0].name == "demo_000001_Brightfield_001.png"
    gfp = read_png(root / "pos001" / "demo_000002_GFP_002.png")
    assert gfp.dtype == np.uint16 and gfp.shape == (256, 256)
    assert gfp.std() > 50 and gfp.max() > 2 * np.median(gfp)  # bright cells on dark ground
    acq = (root / "demo_Acq.txt").read_bytes()
    assert acq.startswith(b"Channels:\r\n") and b"\r\nPoints:\r\n" in acq
    log = (root / "demo_log.txt").read_bytes()
    assert b"Experiment started at:28-Sep-2018 17:18:14\r\n" in log
    assert b"------Time point_2------" in log
    # like the lab's files: every section, CRLF throughout, a Windows path after a colon
    for section in ACQ_SECTIONS:
        assert f"\r\n{section}:\r\n".encode() in b"\r\n" + acq
    for text in (acq, log):
        assert text.count(b"\n") == text.count(b"\r\n")
    assert b"\r\nMicromanager config file:C:\\Users\\" in log
    # each PNG carries the (UTC) time its plane was taken, as the microscope's do
    first = root / "pos002" / "demo_000002_GFP_001.png"
    taken = demo_data.START - demo_data.UTC_OFFSET + timedelta(
        seconds=demo_data.plane_offset_s(1, 1, 2) + 1)
    assert png_time(first) == taken
    # deterministic, and refuses to write into a non-empty folder
    again = tmp_path / "again"
    main(["demo-data", str(again), "--positions", "3", "--timepoints", "2"])
    assert (again / "pos003" / planes[5].name).read_bytes() == (
        root / "pos003" / planes[5].name
    ).read_bytes()
    capsys.readouterr()
    assert main(["demo-data", str(root)]) == 1
    assert "not an empty folder" in capsys.readouterr().err


def _bad(exp, out, capsys, *needles, args=()):
    code = main(["export", str(exp), "-o", str(out), *args])
    err = capsys.readouterr().err
    assert code == 1, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in err and len(errors) == 1, err
    for needle in needles:
        assert needle in err, err
    assert ome_files(out) == [] and leftovers(out) == []
    return err


def test_bad_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _bad(tmp_path / "empty", tmp_path / "out", capsys, "empty", "is empty")
    assert not (tmp_path / "out").exists()


def test_bad_no_position_folders(tmp_path, capsys):
    root = tmp_path / "flat"
    root.mkdir()
    (root / "img_1_GFP_1.png").write_bytes(b"x")
    (root / "images").mkdir()
    _bad(root, tmp_path / "out", capsys, str(root), "no position folders", "pos001")


def test_bad_missing_plane(build_layout, tmp_path, capsys):
    root = build_layout()
    (root / "pos003" / "microscope1_000001_DIC_002.png").unlink()
    _bad(root, tmp_path / "out", capsys, "missing plane", "pos003 T=1 C=DIC Z=2",
         "--allow-missing")


def test_bad_truncated_png(build_layout, tmp_path, capsys):
    root = build_layout()
    bad = root / "pos001" / "microscope1_000002_GFP_003.png"
    data = bad.read_bytes()
    bad.unlink()
    bad.write_bytes(data[:5000])
    _bad(root, tmp_path / "out", capsys, str(bad), "truncated")


def test_bad_rgb_plane(build_layout, tmp_path, capsys):
    root = build_layout()
    bad = root / "pos002" / "microscope1_000001_DIC_001.png"
    bad.unlink()
    bad.write_bytes(imagecodecs.png_encode(np.zeros((512, 512, 3), np.uint8)))
    _bad(root, tmp_path / "out", capsys, str(bad), "RGB PNG")


def test_bad_mixed_sizes(build_layout, tmp_path, capsys):
    root = build_layout()
    bad = root / "pos001" / "microscope1_000003_DIC_001.png"
    bad.unlink()
    bad.write_bytes(imagecodecs.png_encode(np.zeros((256, 512), np.uint16)))
    _bad(root, tmp_path / "out", capsys, str(bad), "is 512x256", "one size")


def test_bad_mixed_pixel_types(build_layout, tmp_path, capsys):
    root = build_layout()
    bad = root / "pos001" / "microscope1_000001_GFP_001.png"
    bad.unlink()
    bad.write_bytes(imagecodecs.png_encode(np.zeros((512, 512), np.uint8)))
    _bad(root, tmp_path / "out", capsys, str(bad), "pixel type uint8", "one pixel type")


def test_bad_output_blocked_by_a_file(build_layout, tmp_path, capsys):
    root = build_layout(["pos001"])
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    _bad(root, blocker / "out", capsys, "cannot create output folder")
    assert blocker.read_text() == "a file, not a folder"


def test_bad_unwritable_output(build_layout, tmp_path, capsys, monkeypatch):
    root = build_layout(["pos001"])
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.geteuid() == 0:  # root writes to read-only folders: the refusal is simulated
        mkstemp = tempfile.mkstemp

        def refuse(*args, dir=None, **kwargs):
            if dir is not None and Path(dir).resolve().is_relative_to(locked.resolve()):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
            return mkstemp(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    try:
        _bad(root, locked, capsys, "not writable")
    finally:
        locked.chmod(0o700)


def test_bad_output_inside_input(build_layout, capsys):
    root = build_layout(["pos001"])
    before = snapshot(root)
    _bad(root, root / "out", capsys, "inside the input folder")
    assert snapshot(root) == before


def test_works_where_omero_is_absent(demo, tmp_path):
    """Only pyomero_upload.omero imports omero: everything else (the omero package's
    modules included) imports and runs without it, and upload says what to install."""
    script = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('omero', 'Ice', 'Glacier2', 'IcePy'):
            raise ImportError('blocked ' + name)
sys.meta_path.insert(0, Block())
import pyomero_upload.upload, pyomero_upload.pyomero_upload, pyomero_upload.upload_cli
from pyomero_upload.omero import annotations, connection, containers, images, pixels, queries
assert connection.stored_session() is None
from pyomero_upload.cli import main
from pyomero_upload.planes import png_time
assert main(['-q', 'export', {str(demo)!r}, '-o', {str(tmp_path)!r}]) == 0
sys.exit(main(['upload', {str(demo)!r}, '--host', 'h', '--user', 'u']))
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert r.returncode == 8, r.stderr
    assert "make ice-wheel" in r.stderr and "Traceback" not in r.stderr
    assert len(ome_files(tmp_path)) == 3


def test_only_the_omero_package_imports_omero():
    root = Path(__file__).resolve().parents[1] / "pyomero_upload"
    pattern = re.compile(r"^\s*(import|from)\s+(omero|Ice|Glacier2|IcePy)\b", re.M)
    offenders = sorted(
        str(f.relative_to(root)) for f in root.rglob("*.py")
        if pattern.search(f.read_text(encoding="utf-8"))
        and f.relative_to(root).parts[0] not in ("omero", "testing"))
    assert offenders == []


def test_short_flags_mean_one_thing_across_subcommands():
    """-o is --output wherever it exists, -v is --verbose, -n --dataset, and so on."""
    import argparse

    from pyomero_upload.cli import build_parser

    parser = build_parser()
    meaning: dict[str, set[str]] = {}

    def collect(p: argparse.ArgumentParser) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    collect(sub)
                continue
            longs = [o for o in action.option_strings if o.startswith("--")]
            for short in (o for o in action.option_strings if len(o) == 2):
                meaning.setdefault(short, set()).add(longs[0] if longs else action.dest)

    collect(parser)
    clashes = {short: longs for short, longs in meaning.items() if len(longs) > 1}
    assert clashes == {}
    assert meaning["-o"] == {"--output"} and meaning["-v"] == {"--verbose"}
    assert meaning["-n"] == {"--dataset"}
