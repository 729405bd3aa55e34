"""omero_uploader: the CLI in a container, on mounted data, as the host user."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from dockerutil import by_image, docker
from helpers import DEMO, read_png

#: The docker tier: `make test-images` runs it (`make test` leaves it out).
pytestmark = pytest.mark.docker

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


# --- upload to the OMERO double on the host -------------------------------------------------


def _plane_sha1(path: Path) -> str:
    import hashlib

    return hashlib.sha1(read_png(path).astype(">u2").tobytes()).hexdigest()


@IMAGE
@pytest.mark.parametrize("extra", [(), ("--insecure",)], ids=["ssl", "insecure"])
def test_upload_to_the_omero_double(image, demo_data, double, extra):
    """`pyomero-upload upload` in the container, over SSL (or --insecure pixels on the
    double's plain port), checked through the double's state: every plane's SHA-1."""
    d = double
    dataset = "container-" + ("-".join(extra).strip("-") or "ssl")
    r = docker("run", "--rm", "--network", "host", "-e", f"OMERO_PASSWORD={d.password}",
               "-v", f"{demo_data}:/data:ro", image,
               "upload", "/data", "--dataset", dataset, "--host", d.host,
               "--port", str(d.port), "--user", d.user, *extra, check=False)
    assert r.returncode == 0, r.stderr
    assert "uploaded 3 image(s), 135 planes" in r.stdout and "(9 pixel calls)" in r.stdout
    state = d.state()
    objs = state["objects"]
    (ds,) = [o for o in objs if o["class"] == "Dataset" and o["fields"]["name"] == dataset]
    links = {o["fields"]["child"]["id"] for o in objs
             if o["class"] == "DatasetImageLink" and o["fields"]["parent"]["id"] == ds["id"]}
    images = {o["id"]: o["fields"]["name"] for o in objs if o["id"] in links
              and o["class"] == "Image"}
    assert sorted(images.values()) == ["pos001", "pos002", "pos003"]
    channels = ["Brightfield", "DIC", "GFP"]
    for px in (o for o in objs if o["class"] == "Pixels"
               and o["fields"]["image"]["id"] in images):
        held = state["pixels"][str(px["id"])]
        assert held["size"] == [512, 512, 5, 3, 3] and not held["pyramid"]
        name = images[px["fields"]["image"]["id"]]
        for f in sorted((demo_data / name).glob("*.png")):
            _, t, c, z = f.stem.rsplit("_", 3)
            key = f"{int(z) - 1},{channels.index(c)},{int(t) - 1}"
            assert held["planes"][key] == _plane_sha1(f), (name, f.name)
    # the container's session was ended on the way out
    assert all(not s["alive"] for s in state["sessions"] if s["user"] == d.user)


# --- a Dask scheduler and workers from the image (docker/cluster.yml) -------------------------


@IMAGE
def test_image_runs_as_dask_scheduler_and_workers(image, demo_data, containers, tmp_path):
    """The uploader image as `dask scheduler` and two `dask worker`s on the host's
    loopback; an export from the host goes through them, position by position."""
    pytest.importorskip("distributed", reason="the coordinator needs Dask on the host")
    import socket

    from pyomero_upload.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    work = tmp_path / "work"
    work.mkdir()
    work.chmod(0o777)
    dask = ("--network", "host", "--entrypoint", "tini")
    containers.run(image, "-g", "--", "dask", "scheduler", "--host", "127.0.0.1", "--port",
                   str(port), "--no-dashboard", opts=dask)
    user = f"{os.geteuid()}:{os.getegid()}"
    for _ in range(2):
        containers.run(image, "-g", "--", "dask", "worker", f"tcp://127.0.0.1:{port}",
                       "--host", "127.0.0.1", "--nthreads", "1", "--no-dashboard",
                       opts=(*dask, "--user", user, "-v", f"{demo_data}:{demo_data}:ro",
                             "-v", f"{work}:{work}"))
    import distributed

    with distributed.Client(f"tcp://127.0.0.1:{port}", timeout=120) as client:
        client.wait_for_workers(2, timeout=120)
        workers = client.scheduler_info()["workers"]
    assert len(workers) == 2
    assert main(["-q", "export", str(demo_data), "-o", str(work / "out"), "--dataset", "demo",
                 "--scheduler", f"tcp://127.0.0.1:{port}", "--workers", "1"]) == 0
    check_export(work / "out", os.geteuid())
