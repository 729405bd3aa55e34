"""Fault injection for tests: a signal to this process at a named call.

``kill_at("pyomero_upload.omero.images:link_image", n=1, when="before")`` makes the
process receive SIGKILL (or SIGINT, ...) just before (or after) the n-th call of
that function, as a power cut, the OOM killer or a user's Ctrl-C would at that
point.  Run a command under it from a test with::

    python -m pyomero_upload.testing.faults MODULE:FUNCTION N before|after SIGNAL -- ARGS...

which installs the fault and then runs ``pyomero-upload ARGS...`` in the same
process.  Only for tests: nothing in the package imports it.
"""

from __future__ import annotations

import functools
import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any


def kill_at(target: str, n: int = 1, when: str = "before",
            sig: int | str = signal.SIGKILL) -> None:
    """Patch ``module:function`` (or ``module:Class.method``) so that this process gets
    ``sig`` before or after its ``n``-th call (counted across threads)."""
    if when not in ("before", "after"):
        raise ValueError(f"when must be 'before' or 'after', not {when!r}")
    signum = getattr(signal, sig) if isinstance(sig, str) else sig
    module_name, _, attr = target.partition(":")
    owner: Any = importlib.import_module(module_name)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    original: Callable[..., Any] = getattr(owner, name)
    lock = threading.Lock()
    count = 0

    @functools.wraps(original)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        nonlocal count
        with lock:
            count += 1
            hit = count == n
        if hit and when == "before":
            os.kill(os.getpid(), signum)
        out = original(*args, **kwargs)
        if hit and when == "after":
            os.kill(os.getpid(), signum)
        return out

    setattr(owner, name, wrapped)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 5 or argv[4] != "--":
        print("usage: python -m pyomero_upload.testing.faults MODULE:FUNCTION N "
              "before|after SIGNAL -- ARGS...", file=sys.stderr)
        return 2
    target, n, when, sig = argv[:4]
    kill_at(target, int(n), when, sig)
    from ..cli import main as cli_main

    return cli_main(argv[5:])


if __name__ == "__main__":
    sys.exit(main())
