"""Shared fixtures: the real demo experiment and layouts built from its planes."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from helpers import DEMO, demo_planes, read_png


@pytest.fixture(scope="session")
def demo() -> Path:
    """The real demo experiment (3 positions x 3 T x 3 C x 5 Z, 16-bit PNG)."""
    if not (DEMO / "pos001").is_dir():
        pytest.skip(f"real demo data not found at {DEMO} (set PYOMERO_DEMO_DATA)")
    return DEMO


@pytest.fixture
def build_layout(demo: Path, tmp_path: Path) -> Callable[..., Path]:
    """Build an experiment folder from the real planes with another layout.

    ``positions``: names of the position folders (the real positions are
    reused cyclically); ``name``: file-name function of (T, C, Z) with the
    real 1-based indices; ``convert``: plane -> (bytes, suffix) for other
    formats; by default planes are hard-linked (copied if linking fails).
    """

    def make(
        positions: list[str] | None = None,
        name: Callable[[int, str, int], str] | None = None,
        convert: Callable[[np.ndarray], tuple[bytes, str]] | None = None,
        folder: str = "exp",
        lab_files: bool = True,
    ) -> Path:
        root = tmp_path / folder
        root.mkdir()
        if lab_files:  # the Acq and log files, as a real experiment has
            for f in demo.glob("*.txt"):
                shutil.copyfile(f, root / f.name)
        sources = sorted(p.name for p in demo.iterdir() if p.is_dir() and p.name.startswith("pos"))
        name = name or (lambda t, c, z: f"microscope1_{t:06d}_{c}_{z:03d}")
        for i, pos in enumerate(positions or sources):
            (root / pos).mkdir()
            for t, c, z, src in demo_planes(demo, sources[i % len(sources)]):
                base = root / pos / name(t, c, z)
                if convert is None:
                    dst = base.with_name(base.name + ".png")
                    try:
                        os.link(src, dst)
                    except OSError:
                        shutil.copyfile(src, dst)
                else:
                    data, suffix = convert(read_png(src))
                    base.with_name(base.name + suffix).write_bytes(data)
        return root

    return make
