"""omero_uploader: the CLI in a container, on mounted data, as the host user."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from dockerutil import by_image, docker
from helpers import DEMO, read_png

IMAGE = pytest.mark.parametrize("image", ["omero_uploader"], indirect=True)


@pytest.fixture
def demo_data():
    if not (DEMO / "pos001").is_dir():
        pytest.skip(f"real demo data not found at {DEMO}")
    return DEMO


def check_export(out: Path, uid: int) -> None:
    files = sorted((out / "demo").glob("*.ome.tiff"))
    assert [f.name for f in files] == ["pos001.ome.tiff", "pos002.ome.tiff", "pos003.ome.tiff"]
    for f in [out, out / "demo", *files]:
        assert f.stat().st_uid == uid, f
    data = tifffile.imread(files[1])
    assert data.shape == (3, 3, 5, 512, 512)
    np.testing.assert_array_equal(
        data[2, 1, 3], read_png(DEMO / "pos002" / "microscope1_000003_DIC_004.png"))


@IMAGE
def test_export_as_the_calling_user(image, demo_data, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    os.chown(work, 1234, 1234) if os.geteuid() == 0 else None
    uid = 1234 if os.geteuid() == 0 else os.geteuid()
    gid = 1234 if os.geteuid() == 0 else os.getegid()
    docker("run", "--rm", "--user", f"{uid}:{gid}", "-v", f"{demo_data}:/data:ro",
           "-v", f"{work}:/home/jovyan/work", image,
           "export", "/data", "-o", "/home/jovyan/work/out", "--dataset", "demo")
    check_export(work / "out", uid)


@IMAGE
def test_export_with_nb_uid(image, demo_data, tmp_path):
    work = tmp_path / "work"
    work.mkdir(mode=0o777)
    work.chmod(0o777)
    docker("run", "--rm", "--user", "root", "-e", "NB_UID=2345", "-e", "NB_GID=2345",
           "-v", f"{demo_data}:/data:ro", "-v", f"{work}:/home/jovyan/work", image,
           "-q", "export", "/data", "-o", "/home/jovyan/work/out", "--dataset", "demo")
    check_export(work / "out", 2345)


@IMAGE
def test_bad_path_is_a_clean_error(image):
    r = docker("run", "--rm", image, "export", "/nope", "-o", "/home/jovyan/work/out",
               check=False)
    assert r.returncode == 1
    assert r.stderr.strip() == "error: /nope: folder does not exist"


@by_image("omero_uploader")
def test_cli_version_matches_the_package(image):
    from pyomero_upload import __version__

    out = docker("run", "--rm", "--entrypoint", "/usr/local/bin/entrypoint.sh", image,
                 "pyomero-upload", "--version").stdout
    assert out.strip() == f"pyomero-upload {__version__}"
