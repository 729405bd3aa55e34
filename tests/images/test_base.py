"""omero_base's promises, checked on it and on every image built on it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dockerutil import by_image, docker

#: The docker tier: `make test-images` runs it (`make test` leaves it out).
pytestmark = pytest.mark.docker

ENTRY = ("--entrypoint", "/usr/local/bin/entrypoint.sh")


def run(image: str, *cmd: str, opts: tuple[str, ...] = ()) -> str:
    return docker("run", "--rm", *ENTRY, *opts, image, *cmd).stdout


@by_image("omero_base")
def test_python_omero_and_versions(image):
    labels = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]["Labels"]
    out = run(image, "python", "-c",
              "import os, sys, Ice, omero, importlib.metadata as m; "
              "print(Ice.stringVersion(), m.version('omero-py'), os.environ['OMERO_VERSION'], "
              "'%d.%d' % sys.version_info[:2], os.environ['PYTHON_VERSION'])").split()
    ice, omero_py, omero_env, python, python_env = out
    assert ice == "3.6.5" == labels["org.pyomero-upload.zeroc-ice-version"]
    assert omero_py == omero_env == labels["org.pyomero-upload.omero-version"]
    assert python == python_env == labels["org.pyomero-upload.python-version"]


@by_image("omero_base")
def test_runs_as_jovyan_with_writable_work(image):
    out = run(image, "bash", "-c", "id -u; id -g; id -un; pwd; touch ~/work/probe && echo ok")
    assert out.split() == ["1000", "100", "jovyan", "/home/jovyan", "ok"]


@by_image("omero_base")
def test_no_secret_or_proxy_ca_in_the_image(image):
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    assert "BEGIN CERTIFICATE" not in history
    env = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]["Env"]
    assert not [e for e in env if e.split("=")[0] in ("PIP_CERT", "OMERO_PASSWORD",
                                                       "JUPYTER_TOKEN", "REQUESTS_CA_BUNDLE")]
    bundle = run(image, "bash", "-c", "cat /etc/ssl/certs/ca-certificates.crt; "
                 "ls /run/secrets 2>/dev/null; cat /etc/pip.conf ~/.config/pip/pip.conf "
                 "2>/dev/null; true")
    for extra in Path("/usr/local/share/ca-certificates").glob("*.crt"):
        body = "".join(extra.read_text().split("-----")[2].split())[:200]
        assert body not in bundle.replace("\n", ""), f"{extra.name} found in {image}"


@pytest.mark.parametrize("image,limit_mb", [("omero_base", 450), ("omero_uploader", 600)],
                         indirect=["image"])
def test_image_size_targets(image, limit_mb):
    size = json.loads(docker("image", "inspect", image).stdout)[0]["Size"] / 1e6
    assert size <= limit_mb, f"{image} is {size:.0f} MB (target {limit_mb} MB)"


@by_image("omero_base")
def test_debian_release_and_build_date_labelled(image):
    labels = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]["Labels"]
    if "org.pyomero-upload.debian-release" not in labels:
        pytest.skip("built FROM a registry's Debian image, not the local root image")
    release = run(image, "cat", "/etc/debian_version").strip()
    assert labels["org.pyomero-upload.debian-release"] == release
    assert labels["org.pyomero-upload.debian-suite"] == "bookworm" and release.startswith("12.")
    built = labels["org.pyomero-upload.root-built"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", built)
