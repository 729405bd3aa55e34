"""Fixtures for the Docker image tests: the docker CLI, built images, tracked containers.

Tests of an image run on it and on every image built on it (``dockerutil.CHAIN``).
They skip with a reason where Docker or the image is missing.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from dockerutil import OWNER, Containers, docker


@pytest.fixture(scope="session")
def docker_ok() -> None:
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI on this machine")
    try:
        docker("info", timeout=30)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"no Docker engine reachable ({exc})")


@pytest.fixture
def image(request, docker_ok) -> str:
    """The full tag of the image the test is parametrized with."""
    tag = f"{OWNER}/{request.param}"
    if docker("image", "inspect", tag, check=False).returncode != 0:
        pytest.skip(f"image {tag} is not built (make build-all)")
    return tag


@pytest.fixture
def containers():
    c = Containers()
    yield c
    c.remove_all()
