"""omero_ide: sshd accepts only jovyan's key, and Spyder opens over X11."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from dockerutil import docker
from helpers import DEMO

#: The docker tier: `make test-images` runs it (`make test` leaves it out).
pytestmark = pytest.mark.docker

IMAGE = pytest.mark.parametrize("image", ["omero_ide"], indirect=True)
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"


@pytest.fixture
def key(tmp_path):
    if shutil.which("ssh") is None:
        pytest.skip("no ssh client (apt-get install openssh-client)")
    path = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@pytest.fixture
def sshd(image, containers, key):
    public = key.with_suffix(".pub").read_text()
    opts = ("-p", "127.0.0.1::22", "-e", f"SSH_AUTHORIZED_KEYS={public}")
    if (DEMO / "pos001").is_dir():
        opts += ("-v", f"{DEMO}:/data:ro")
    cid = containers.run(image, opts=opts)
    containers.wait_healthy(cid)
    return cid, containers.port(cid, 22)


def ssh(port: int, key: Path | None, user: str, *cmd: str, extra: tuple[str, ...] = (),
        timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    args = ["ssh", "-p", str(port), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
            *extra]
    if key is not None:
        args += ["-i", str(key), "-o", "IdentitiesOnly=yes"]
    return subprocess.run([*args, f"{user}@127.0.0.1", *cmd], capture_output=True, text=True,
                          timeout=timeout, env=env)


@IMAGE
def test_key_login_as_jovyan_with_the_package(sshd, key):
    _, port = sshd
    r = ssh(port, key, "jovyan", "id -u; python -c 'import omero, pyomero_upload; print(1)'")
    assert r.stdout.split() == ["1000", "1"], r.stderr


@IMAGE
def test_passwords_and_root_refused(sshd, key):
    _, port = sshd
    r = ssh(port, None, "jovyan", "true", extra=(
        "-o", "PreferredAuthentications=password,keyboard-interactive",
        "-o", "PubkeyAuthentication=no"))
    assert r.returncode == 255 and "Permission denied (publickey)" in r.stderr
    r = ssh(port, key, "root", "true")
    assert r.returncode == 255 and "Permission denied" in r.stderr


@IMAGE
def test_host_keys_made_at_start_not_in_the_image(image, sshd):
    cid, _ = sshd
    r = docker("run", "--rm", "--entrypoint", "bash", image, "-c",
               "ls /etc/ssh/ssh_host_* 2>/dev/null | wc -l")
    assert r.stdout.strip() == "0"
    assert int(docker("exec", cid, "bash", "-c", "ls /etc/ssh/ssh_host_*_key | wc -l")
               .stdout) >= 2


@IMAGE
def test_plugin_template_runs(sshd, key):
    if not (DEMO / "pos001").is_dir():
        pytest.skip("real demo data absent")
    _, port = sshd
    r = ssh(port, key, "jovyan", "pyomero-upload metadata /data -m ~/work/plugin-template -p "
            "--json")
    assert '"Parsed by"' in r.stdout and "custom-parser" in r.stdout, r.stderr


@IMAGE
def test_spyder_window_over_x11(sshd, key):
    for tool in ("Xvfb", "xauth", "xwininfo"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} missing (apt-get install xvfb xauth x11-utils)")
    _, port = sshd
    display = ":87"
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {**os.environ, "DISPLAY": display}
    spyder = None
    try:
        time.sleep(1)
        spyder = subprocess.Popen(
            ["ssh", "-X", "-p", str(port), "-i", str(key), "-o", "IdentitiesOnly=yes",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "BatchMode=yes", "jovyan@127.0.0.1", "spyder --new-instance"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 150
        title = ""
        while time.monotonic() < deadline:
            tree = subprocess.run(["xwininfo", "-root", "-tree"], env=env, capture_output=True,
                                  text=True).stdout
            titles = [line for line in tree.splitlines() if "Spyder" in line and "(Python" in line]
            if titles:
                title = titles[0]
                break
            time.sleep(2)
        time.sleep(8)  # let the window paint
        from PIL import ImageGrab

        shot = ImageGrab.grab(xdisplay=display)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shot.save(SCREENSHOTS / "spyder.png")
        assert title, "no Spyder window appeared"
        pixels = np.asarray(shot.convert("L"), dtype=float)
        assert pixels.std() > 10  # a drawn window, not an empty screen
    finally:
        if spyder is not None:
            spyder.kill()
        xvfb.kill()
