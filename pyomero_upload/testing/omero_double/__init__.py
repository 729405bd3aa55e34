"""A test double for a subset of OMERO: a real Ice server on 127.0.0.1.

This is NOT an OMERO server and not a place to keep data: objects live in
memory, pixels in sparse files under the work directory, and all of it is gone
when it stops.  It exists so that tests can drive the
real, unmodified ``omero.client`` (omero-py) over real TCP/SSL against
servants built on omero-py's own generated interfaces (``Glacier2.Router``,
``omero.api.ServiceFactory``, ``omero.api.RawPixelsStore`` ...), which check
every argument count and type and copy every object across the wire.

What it serves, one module per service: Glacier2 ``createSession``/
``joinSession``/``destroySession`` (:mod:`.router`, :mod:`.server`); the
ServiceFactory with security contexts, keep-alive and detach/closeOnDestroy
(:mod:`.factory`); IAdmin, IConfig, ISession (:mod:`.admin`); IQuery (an
HQL interpreter: see :mod:`.hql`; :mod:`.query`); IUpdate (:mod:`.update`);
IPixels ``createImage`` and ``setChannelGlobalMinMax``, RawPixelsStore,
IRenderingSettings, ThumbnailStore (:mod:`.pixels`); RenderingEngine
(:mod:`.rendering`); IContainer (:mod:`.container`); IMetadata
(:mod:`.metadata`); ITypes (:mod:`.types`); IScript, with no scripts
(:mod:`.scripts`); RawFileStore (:mod:`.files`); SharedResources/Tables
(:mod:`.tables`); ``submit(Delete2)`` (:mod:`.delete`).  What OMERO.web,
ezomero and BlitzGateway need of these is tested with those clients
(``tests/test_omero_web.py``, ``tests/test_ezomero.py``; OMERO.web runs from
:mod:`pyomero_upload.testing.omero_web`).  What they share is in
:mod:`._base`.  Any other operation raises ``omero.ApiUsageException`` saying
the double does not implement it.  The server rules it enforces, each taken
from OMERO's source (named in comments beside the code that enforces them, in
those modules): optimistic locking on the update event
(``RawPixelsStore.save()`` moves the Pixels row's event on), the pyramid
threshold and tile rules, session reference counting, unique links and
not-null columns, the 64 MB server message limit, owner/group visibility,
Delete2 errors and the OMERO.tables column rules.

Starting it from a shell::

    python -m pyomero_upload.testing.omero_double [--host 127.0.0.1] [--port 4064]
        [--insecure-port PORT-1] [--user root] [--password omero] [--state FILE]
        [--workdir DIR [--store FILE]]

It prints ``ready HOST:PORT`` once a login through ``omero.client`` works,
stops on SIGTERM or Ctrl-C and then writes ``--state FILE`` (a JSON of every
object, pixels SHA-1 per plane, tables and sessions).  ``SIGUSR1`` writes the
state file without stopping.  ``--store FILE`` keeps its database (pickled)
in that file, written atomically after every call that may change it, and
read at start when it exists: a double killed (SIGKILL) and started again
with the same ``--store`` and ``--workdir`` holds every object, pixel and
table it held, with the same ``omero.db.uuid``; sessions are not kept, so
clients log in again, as after a restart.

From tests (runs the double as a subprocess; needs the ``[omero]`` extra)::

    from pyomero_upload.testing.omero_double import running_double

    with running_double(tmp_path) as d:
        c = omero.client(d.host, d.port)          # SSL, as users connect
        c.createSession(d.user, d.password)
        ...
        state = d.state()                         # the JSON snapshot, now

``d`` is a :class:`DoubleHandle`: ``host``, ``port``, ``insecure_port``,
``user``, ``password``, ``state_file`` and ``state()``.  The admin (``root``
by default, in the ``system`` and ``user`` groups) can create groups and
users over IAdmin (``createGroup``, ``createExperimenterWithPassword``,
``addGroups``) for permission tests.  Needs the ``[omero]`` extra and the
``openssl`` command (for the certificate).

Not modelled: session timeouts, server-side pyramid generation (a pyramid
image reads back at full resolution only, tiles at any position are
accepted while writing), thumbnails beyond a plain JPEG of the middle plane,
rendering beyond the linear family (no lookup tables, no overlays), ROIs,
scripts, imports, Delete2 options other than ``targetObjects`` and ``dryRun``,
HQL beyond the shapes in :mod:`.hql`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._process import stop

__all__ = ["DoubleHandle", "free_port", "running_double"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class DoubleHandle:
    """A running double: where to reach it and how to read what it holds."""

    host: str
    port: int
    insecure_port: int
    user: str
    password: str
    state_file: Path
    process: subprocess.Popen

    def state(self, timeout_s: float = 120.0) -> dict[str, Any]:
        """The double's current state (objects, pixels, tables, sessions) as a dict.

        Asks the server for a fresh dump (SIGUSR1) and waits for it.
        """
        before = self.state_file.stat().st_mtime_ns if self.state_file.exists() else 0
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.state_file.exists() and self.state_file.stat().st_mtime_ns != before:
                with contextlib.suppress(json.JSONDecodeError):
                    return json.loads(self.state_file.read_text())
            time.sleep(0.05)
        raise TimeoutError("the OMERO double did not write its state")


@contextlib.contextmanager
def running_double(tmp_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 0,
                   insecure_port: int = 0, user: str = "root", password: str = "omero",
                   timeout_s: float = 60.0, store: bool = False) -> Iterator[DoubleHandle]:
    """Start the double in a subprocess, yield a :class:`DoubleHandle`, stop it on exit.

    Args:
        tmp_dir: Where the certificate, the log and the state file go.
        host: Address to listen on.
        port: SSL port (0: a free one).
        insecure_port: Plain TCP port for ``createClient(secure=False)`` (0: a free one).
        user: The admin user's name.
        password: Its password.
        timeout_s: How long to wait for ``ready``.
        store: Keep the database in ``tmp_dir/omero-double.db`` (``--store``): a double
            started again on the same ``tmp_dir`` holds what this one held.
    """
    tmp = Path(tmp_dir)
    tmp.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    insecure_port = insecure_port or free_port(host)
    state = tmp / "omero-double-state.json"
    log = open(tmp / "omero-double.log", "wb")  # noqa: SIM115 (closed below)
    cmd = [sys.executable, "-m", "pyomero_upload.testing.omero_double", "--host", host,
           "--port", str(port), "--insecure-port", str(insecure_port), "--user", user,
           "--password", password, "--state", str(state), "--workdir", str(tmp)]
    if store:
        cmd += ["--store", str(tmp / "omero-double.db")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log)
    try:
        assert proc.stdout is not None
        line = _readline(proc, timeout_s)
        if not line.startswith("ready "):
            raise RuntimeError(f"the OMERO double did not start: {line!r}; see {log.name}")
        yield DoubleHandle(host, port, insecure_port, user, password, state, proc)
    finally:
        stop(proc)
        log.close()


def _readline(proc: subprocess.Popen, timeout_s: float) -> str:
    import selectors

    if proc.stdout is None:
        raise RuntimeError("the OMERO double was started without a stdout pipe")
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout_s):
        proc.kill()
        raise TimeoutError("the OMERO double printed nothing")
    return proc.stdout.readline().decode().strip()
