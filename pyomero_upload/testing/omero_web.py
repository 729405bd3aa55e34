"""A stock OMERO.web (``omero-web`` from PyPI) in front of an OMERO server, for tests.

Nothing of OMERO.web is changed: this starts its Django application with the
development server on 127.0.0.1, configured the way ``omero config set`` would
(``$OMERODIR/etc/grid/config.xml``, through omero-py's ``ConfigXml``) with the
server list pointing at one OMERO server (the double, in the tests).  Sessions are
kept in the process's memory (Django's cache session engine over a local-memory
cache), static files are served by the development server (``--insecure``), and
the Django secret key is made at start and handed to OMERO.web's settings in
memory, never written to a file or a command line.

From tests::

    from pyomero_upload.testing.omero_web import running_web

    with running_web(tmp_path, "127.0.0.1", double.port) as web:
        requests.get(f"{web.url}/api/")

From a shell (Django's development server says where it listens; stops on SIGTERM
or Ctrl-C)::

    OMERODIR=/tmp/web python -m pyomero_upload.testing.omero_web --server-port 4064

Needs the ``omero-web`` package (and omero-py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ._process import stop

__all__ = ["WebHandle", "running_web", "write_config"]


def write_config(omerodir: Path, server_host: str, server_port: int) -> None:
    """OMERO.web's configuration in ``omerodir`` (what ``omero config set`` writes)."""
    from omero.config import ConfigXml

    (omerodir / "etc" / "grid").mkdir(parents=True, exist_ok=True)
    (omerodir / "var" / "log").mkdir(parents=True, exist_ok=True)
    settings = {
        "omero.web.server_list": json.dumps([[server_host, server_port, "omero"]]),
        "omero.web.debug": "false",
        "omero.web.session_engine": "django.contrib.sessions.backends.cache",
        "omero.web.caches": json.dumps(
            {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}),
        "omero.web.allowed_hosts": json.dumps(["127.0.0.1", "localhost"]),
    }
    config = ConfigXml(str(omerodir / "etc" / "grid" / "config.xml"))
    try:
        for key, value in settings.items():
            config[key] = value
    finally:
        config.close()


def serve(host: str, port: int) -> None:
    """Run OMERO.web's Django application here until stopped (``$OMERODIR`` set up by
    :func:`write_config`)."""
    import omero.config

    key = secrets.token_urlsafe(50)
    read = omero.config.ConfigXml.as_map

    def as_map(self):  # the secret key reaches the settings in memory only
        values = read(self)
        values.setdefault("omero.web.secret_key", key)
        return values

    omero.config.ConfigXml.as_map = as_map
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omeroweb.settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("runserver", f"{host}:{port}", use_reloader=False, insecure_serving=True,
                 use_threading=True)


@dataclass
class WebHandle:
    """A running OMERO.web: its address and its log."""

    url: str
    omerodir: Path
    process: subprocess.Popen

    @property
    def log(self) -> Path:
        return self.omerodir / "var" / "log" / "OMEROweb.log"


@contextlib.contextmanager
def running_web(tmp_dir: str | os.PathLike, server_host: str, server_port: int,
                port: int = 0, timeout_s: float = 120.0) -> Iterator[WebHandle]:
    """Start OMERO.web in a subprocess against ``server_host:server_port``; yield a
    :class:`WebHandle` once ``/api/`` answers; stop it on exit."""
    from .omero_double import free_port

    omerodir = Path(tmp_dir)
    write_config(omerodir, server_host, server_port)
    port = port or free_port()
    env = {**os.environ, "OMERODIR": str(omerodir), "PYTHONUNBUFFERED": "1"}
    out = open(omerodir / "var" / "log" / "runserver.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([sys.executable, "-m", __name__, "--port", str(port)], env=env,
                            stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"OMERO.web exited ({proc.returncode}); see {out.name}")
            try:
                with urllib.request.urlopen(f"{url}/api/", timeout=10) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"OMERO.web did not answer at {url}; see {out.name}")
            time.sleep(0.3)
        yield WebHandle(url, omerodir, proc)
    finally:
        stop(proc)
        out.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on")
    parser.add_argument("--port", type=int, default=4080)
    parser.add_argument("--server-host", default="127.0.0.1", help="the OMERO server")
    parser.add_argument("--server-port", type=int, default=None,
                        help="write $OMERODIR's config for this OMERO server port first")
    args = parser.parse_args(argv)
    if not os.environ.get("OMERODIR"):
        parser.error("set OMERODIR (a folder for OMERO.web's config and logs)")
    if args.server_port is not None:
        write_config(Path(os.environ["OMERODIR"]), args.server_host, args.server_port)
    serve(args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
