"""Shared fixtures: the demo experiment (real where present, else synthetic) and
layouts built from its planes.

``demo`` is the real demo experiment (``../shared/data/demo`` or
``$PYOMERO_DEMO_DATA``) where it exists, and otherwise a synthetic experiment of
the same shape written by ``pyomero_upload.demo_data`` (``synthetic``): 3
positions x 3 T x 3 C (Brightfield, DIC, GFP) x 5 Z, 512x512 uint16 PNG named
``microscope1_{T:06d}_{C}_{Z:03d}.png``, with ``microscope1_Acq.txt`` and
``microscope1_log.txt``.  Tests of values only the real files hold use
``real_demo`` and the ``real_data`` marker; where the real data is absent they
are deselected (each has a twin that checks the synthetic values), so a fresh
clone runs every other test.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from helpers import DEMO, HAVE_REAL_DEMO, SYNTHETIC, copy_lab_files, demo_planes, read_png
from pyomero_upload.demo_data import write_demo_experiment
from web_fixtures import demo_upload, omero_web, web_session  # noqa: F401 (fixtures)


def pytest_report_header(config: pytest.Config) -> str:
    if HAVE_REAL_DEMO:
        return f"demo data: real, at {DEMO}"
    return (f"demo data: synthetic (pyomero_upload.demo_data); no real demo data at {DEMO}, "
            "so the real_data tests are deselected")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAVE_REAL_DEMO:
        return
    real = [item for item in items if item.get_closest_marker("real_data")]
    if real:
        config.hook.pytest_deselected(items=real)
        items[:] = [item for item in items if not item.get_closest_marker("real_data")]


@pytest.fixture(autouse=True)
def _cli_logging_reset():
    """``cli.main`` sets the package logger up for a terminal (its own handler, no
    propagation); undo it after each test so later ``caplog`` tests see records."""
    import logging

    yield
    logger = logging.getLogger("pyomero_upload")
    logger.handlers.clear()
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


@pytest.fixture(scope="session")
def double(tmp_path_factory: pytest.TempPathFactory):
    """The OMERO double (:mod:`pyomero_upload.testing.omero_double`), one for the whole run.

    Tests share it, so each makes the objects it checks under names of its own.
    Skipped where omero-py is not installed (``make install-omero``).
    """
    pytest.importorskip("omero", reason="omero-py not installed (make install-omero)")
    from pyomero_upload.testing.omero_double import running_double

    with running_double(tmp_path_factory.mktemp("double")) as d:
        yield d


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic experiment shaped like the real demo (``helpers.SYNTHETIC``), its
    folder named ``demo`` like the real one's."""
    return write_demo_experiment(tmp_path_factory.mktemp("synthetic") / "demo", **SYNTHETIC)


@pytest.fixture(scope="session")
def real_demo() -> Path:
    """The real demo experiment, for tests of the values its files hold."""
    if not HAVE_REAL_DEMO:
        pytest.skip(f"real demo data not found at {DEMO} (set PYOMERO_DEMO_DATA)")
    return DEMO


@pytest.fixture(scope="session")
def demo(request: pytest.FixtureRequest) -> Path:
    """The real demo experiment where present, else ``synthetic`` (same shape and names)."""
    return DEMO if HAVE_REAL_DEMO else request.getfixturevalue("synthetic")


@pytest.fixture
def build_layout(demo: Path, tmp_path: Path) -> Callable[..., Path]:
    """Build an experiment folder from the demo's planes with another layout.

    ``positions``: names of the position folders (the source's positions are
    reused cyclically); ``name``: file-name function of (T, C, Z) with the
    source's 1-based indices; ``convert``: plane -> (bytes, suffix) for other
    formats; by default planes are hard-linked (copied if linking fails).
    ``source``: another experiment to take the planes from (default ``demo``).
    """

    def make(
        positions: list[str] | None = None,
        name: Callable[[int, str, int], str] | None = None,
        convert: Callable[[np.ndarray], tuple[bytes, str]] | None = None,
        folder: str = "exp",
        lab_files: bool = True,
        source: Path | None = None,
    ) -> Path:
        src_root = source or demo
        root = tmp_path / folder
        if lab_files:  # the Acq and log files, as a real experiment has
            copy_lab_files(src_root, root)
        else:
            root.mkdir()
        sources = sorted(
            p.name for p in src_root.iterdir() if p.is_dir() and p.name.startswith("pos"))
        name = name or (lambda t, c, z: f"microscope1_{t:06d}_{c}_{z:03d}")
        for i, pos in enumerate(positions or sources):
            (root / pos).mkdir()
            for t, c, z, src in demo_planes(src_root, sources[i % len(sources)]):
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
