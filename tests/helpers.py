"""Helpers shared by the tests (imported as ``helpers``; fixtures live in conftest.py)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import imagecodecs
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEMO = Path(os.environ.get("PYOMERO_DEMO_DATA") or ROOT.parent / "shared" / "data" / "demo")
#: The real demo experiment (3 positions x 3 T x 3 C x 5 Z, 512x512 16-bit PNG) is here.
HAVE_REAL_DEMO = (DEMO / "pos001").is_dir()
#: ``demo_data.write_demo_experiment`` arguments for a synthetic twin of the real demo:
#: the same positions, sizes, channels and file names, the synthetic metadata.
SYNTHETIC = {"positions": 3, "timepoints": 3, "z_sections": 5, "size": 512,
             "prefix": "microscope1"}
PLANE_RE = re.compile(r"^(?P<prefix>.+)_(?P<T>\d+)_(?P<C>[^_]+)_(?P<Z>\d+)\.png$")


def read_png(path: Path) -> np.ndarray:
    return imagecodecs.png_decode(path.read_bytes())


def demo_planes(demo: Path, position: str = "pos001") -> list[tuple[int, str, int, Path]]:
    """(T, C, Z, path) of every plane of one position of a demo experiment."""
    out = []
    for f in sorted((demo / position).iterdir()):
        m = PLANE_RE.match(f.name)
        if m:
            out.append((int(m["T"]), m["C"], int(m["Z"]), f))
    return out


def ome_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.ome.tiff")) if folder.exists() else []


def leftovers(folder: Path) -> list[Path]:
    """Anything a failed run may have left: partial files, level caches."""
    if not folder.exists():
        return []
    return sorted(p for p in folder.rglob("*") if p.name.startswith(".") or p.suffix == ".part")


def copy_lab_files(source: Path, dest: Path) -> Path:
    """A folder ``dest`` with copies of ``source``'s Acq and log files only."""
    dest.mkdir()
    for f in source.glob("*.txt"):
        if f.name.lower().endswith(("acq.txt", "log.txt")):
            shutil.copyfile(f, dest / f.name)
    return dest
