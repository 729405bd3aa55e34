"""Helpers for the Docker image tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

OWNER = os.environ.get("OWNER", "pyomero-upload")
#: The images in build order, each built on the one before (as the Makefile builds them).
CHAIN = [
    line.strip()
    for line in (Path(__file__).resolve().parents[2] / "docker" / "images").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]


def images_from(name: str) -> list[str]:
    """``name`` and every image built on it."""
    return CHAIN[CHAIN.index(name):]


def by_image(name: str):
    """Parametrize a test over ``name`` and the images built on it."""
    return pytest.mark.parametrize("image", images_from(name), indirect=True)


def docker(*args: str, check: bool = True, timeout: float = 600, **kw
           ) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check,
                          timeout=timeout, **kw)


class Containers:
    """Starts containers and always removes them."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def run(self, image: str, *args: str, opts: tuple[str, ...] = ()) -> str:
        name = f"pyomero-test-{uuid.uuid4().hex[:10]}"
        cid = docker("run", "-d", "--name", name, *opts, image, *args).stdout.strip()
        self.ids.append(cid)
        return cid

    def port(self, cid: str, inner: int) -> int:
        out = docker("port", cid, f"{inner}/tcp").stdout.strip().splitlines()[0]
        return int(out.rsplit(":", 1)[1])

    def wait_healthy(self, cid: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        state: dict = {}
        while time.monotonic() < deadline:
            state = json.loads(docker("inspect", cid).stdout)[0]["State"]
            if state.get("Health", {}).get("Status") == "healthy":
                return
            if not state["Running"]:
                break
            time.sleep(1)
        logs = docker("logs", cid, check=False)
        raise AssertionError(f"container not healthy: {state}\n{logs.stdout}\n{logs.stderr}")

    def remove_all(self) -> None:
        for cid in self.ids:
            docker("rm", "-f", "-v", cid, check=False)
