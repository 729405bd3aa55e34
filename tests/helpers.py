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


def random_experiment(root: Path, dtype: np.dtype, shape: tuple[int, int] = (48, 64),
                      sizes: tuple[int, int, int] = (3, 2, 2), seed: int = 7) -> Path:
    """Two positions of random ``dtype`` TIFF planes (Z, C, T = ``sizes``), non-square
    so X/Y swaps show; floats include a negative and a tiny value."""
    import tifffile

    rng = np.random.default_rng(seed)
    size_z, size_c, size_t = sizes
    for p in (1, 2):
        (root / f"pos{p:03d}").mkdir(parents=True)
        for t in range(1, size_t + 1):
            for c in ["GFP", "mCherry"][:size_c]:
                for z in range(1, size_z + 1):
                    if dtype.kind == "f":
                        plane = rng.normal(100, 30, shape).astype(dtype)
                        plane[0, 0] = -1.5e-3  # negative and tiny values survive
                    else:
                        info = np.iinfo(dtype)
                        plane = rng.integers(info.min, info.max, shape, dtype=dtype,
                                             endpoint=True)
                    tifffile.imwrite(root / f"pos{p:03d}" / f"exp_{t:06d}_{c}_{z:03d}.tif",
                                     plane)
    return root


#: Runs an export as the command line would, and SIGKILLs it at the N-th plane.
_KILLED_EXPORT = """
import os, signal, sys
from pyomero_upload.experiment import open_experiment

seen = 0
def on_plane(nbytes):
    global seen
    seen += 1
    if seen == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)

exp, meta = open_experiment(sys.argv[1])
if sys.argv[4] == "ome-tiff":
    from pyomero_upload.export import export_ome_tiff as export
    extra = {}
else:
    from pyomero_upload.export import export_ome_zarr as export
    extra = {"ngff_version": sys.argv[4]}
export(exp, sys.argv[2], "ds", metadata=meta, workers=2, on_plane=on_plane, **extra)
"""


def export_killed_at(data: Path, out: Path, plane: int, writer: str = "ome-tiff") -> int:
    """Export ``data`` into ``out/ds`` in a child process killed hard (SIGKILL) at its
    ``plane``-th plane; ``writer`` is "ome-tiff" or an NGFF version. Its return code."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-c", _KILLED_EXPORT, str(data), str(out),
                           str(plane), writer], env=env).returncode
