"""Command line: ``python -m pyomero_upload.testing.omero_double --help``."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

DESCRIPTION = (
    "A TEST DOUBLE for a subset of OMERO (Glacier2 login, IAdmin, IQuery with a small HQL "
    "interpreter, IUpdate, IPixels, RawPixelsStore, RawFileStore, ThumbnailStore, tables, "
    "Delete2), reached with the real omero.client. Everything is held in memory: it is not "
    "an OMERO server and not a place to keep data. Prints 'ready HOST:PORT' once a login "
    "works; SIGTERM or Ctrl-C stops it; SIGUSR1 writes --state without stopping. With "
    "--store it keeps its database in a file and starts again from it."
)


def main(argv: list[str] | None = None) -> int:
    """Run the double until SIGTERM/SIGINT; return the exit code."""
    ap = argparse.ArgumentParser(prog="python -m pyomero_upload.testing.omero_double",
                                 description=DESCRIPTION)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=4064, help="SSL port (default 4064)")
    ap.add_argument("--insecure-port", type=int, default=None,
                    help="plain TCP port for createClient(secure=False) (default PORT-1)")
    ap.add_argument("--user", default="root", help="the admin user (default root)")
    ap.add_argument("--password", default="omero")
    ap.add_argument("--state", type=Path, help="write a JSON of everything held here on exit")
    ap.add_argument("--store", type=Path,
                    help="keep the database in this file (written after every change, read "
                         "at start when it exists): a double killed and started again with "
                         "the same --store and --workdir holds what it held")
    ap.add_argument("--workdir", type=Path,
                    help="where the self-signed certificate and the pixel files go "
                         "(default: a temporary directory, removed on exit)")
    args = ap.parse_args(argv)
    insecure = args.insecure_port if args.insecure_port is not None else args.port - 1

    from .server import DoubleServer, check_login  # needs omero-py (the [omero] extra)

    own_workdir = args.workdir is None
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="omero-double-"))
    if args.store is not None and own_workdir:
        ap.error("--store needs --workdir (the pixel files must outlive the process)")
    server = DoubleServer(args.host, args.port, insecure, args.user, args.password, workdir,
                          args.store)
    stop = threading.Event()

    def dump() -> None:
        if args.state:
            tmp = args.state.with_suffix(".tmp")
            tmp.write_text(json.dumps(server.snapshot(), indent=1, default=str))
            os.replace(tmp, args.state)

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    dumping = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: dumping.set())
    try:
        check_login(args.host, args.port, args.user, args.password)
        print(f"ready {args.host}:{args.port}", flush=True)
        while not stop.wait(0.1):
            if dumping.is_set():
                dumping.clear()
                dump()
    finally:
        dump()
        server.shutdown()
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
