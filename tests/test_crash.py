"""An export killed hard (SIGKILL, power loss) leaves temporaries; the next run removes them.

Only names that our writer makes are removed, under a lock that keeps two
exports out of one dataset folder.
"""

from __future__ import annotations

import signal
import sys

import pytest

from helpers import export_killed_at
from pyomero_upload.cli import main
from pyomero_upload.errors import InputError
from pyomero_upload.export import export_ome_tiff
from pyomero_upload.export.folder import LOCK_NAME, FolderLock
from pyomero_upload.layout import discover


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_rerun_after_sigkill_leaves_exactly_the_finished_files(demo, tmp_path, capsys):
    out = tmp_path / "out"
    # Killed in the middle of the second position's file (45 planes each).
    assert export_killed_at(demo, out, 60) == -signal.SIGKILL
    ds = out / "ds"
    names = {p.name for p in ds.iterdir()}
    assert "pos001.ome.tiff" in names and "pos002.ome.tiff" not in names
    orphans = [n for n in names if n.startswith(".pos002.ome.tiff.") and n.endswith(".part")]
    assert len(orphans) == 1 and (ds / orphans[0]).stat().st_size > 1_000_000
    # Things that are not ours, including look-alikes, must survive the clean-up.
    keep = ["notes.txt", ".hidden", ".pos001.ome.tiff.mine.part", ".level.user-file.npy"]
    for name in keep:
        (ds / name).write_text("the user's")

    capsys.readouterr()
    assert main(["export", str(demo), "-o", str(out), "--dataset", "ds"]) == 0
    after = sorted(p.name for p in ds.iterdir())
    assert after == sorted(
        ["pos001.ome.tiff", "pos002.ome.tiff", "pos003.ome.tiff", "metadata", *keep]
    )
    assert all((ds / n).read_text() == "the user's" for n in keep)
    removal = [line for line in capsys.readouterr().err.splitlines() if "interrupted" in line]
    assert len(removal) == 1 and orphans[0] in removal[0] and "MB reclaimed" in removal[0]


def test_second_export_into_a_locked_folder_is_refused(demo, tmp_path):
    exp = discover(demo)
    ds = tmp_path / "ds"
    ds.mkdir()
    with FolderLock(ds):
        with pytest.raises(InputError, match="another export is writing"):
            export_ome_tiff(exp, tmp_path, "ds", workers=1)
        assert (ds / LOCK_NAME).exists()
    assert not (ds / LOCK_NAME).exists()
    assert list(ds.iterdir()) == []  # the refused export wrote nothing


def test_lock_is_released_after_an_error(demo, tmp_path):
    exp = discover(demo)
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "pos001.ome.tiff").write_bytes(b"not ours")
    with pytest.raises(InputError, match="--overwrite"):
        export_ome_tiff(exp, tmp_path, "ds", workers=1)
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == ["pos001.ome.tiff"]
    with FolderLock(tmp_path / "ds"):  # free again
        pass
