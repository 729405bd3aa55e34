"""One writer per dataset, across processes and machines: a claim kept in OMERO itself.

A run that writes into a dataset first links a map annotation in
:data:`~pyomero_upload.model.CLAIM_NS` to it (run id, user, host, process,
start time, heartbeat), in one save, then lists the dataset's claims.  Of the
live ones (a heartbeat within :data:`STALE_AFTER_S`), the lowest id is the
writer; every other run waits or refuses, naming the writer.  The writer
keeps its heartbeat fresh from a thread, removes stale claims (runs that were
killed; at once where the claiming process is gone from this host), and
removes its own claim when it ends.  Two runs that claim at once
both see both claims and agree on the lowest id, so exactly one proceeds.  A
lock file would hold on one machine only; this holds for two laptops, a
cluster's workers and a login node alike.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from ..errors import DatasetBusyError
from ..model import CLAIM_NS
from . import _ice
from ._ice import rstring

if TYPE_CHECKING:
    from .connection import Connection

log = logging.getLogger(__name__)

#: A claim whose heartbeat is older than this is a dead run's, and is removed.
STALE_AFTER_S = 300.0
#: How often the writer renews its heartbeat.
HEARTBEAT_S = 30.0
#: How often a waiting run looks again.
POLL_S = 5.0


@dataclass
class Claim:
    """One run's claim on a dataset, as stored in its map annotation."""

    id: int
    run: str
    user: str
    host: str
    started: str
    heartbeat: float
    #: The claiming process's id on ``host`` (None where the claim does not say).
    process: int | None = None

    def describe(self) -> str:
        return f"{self.user} on {self.host}, started {self.started} (run {self.run})"

    def dead_here(self) -> bool:
        """A claim of a process on this host that no longer exists (a killed run, or a
        watcher restarted after SIGKILL): dead at once, not after STALE_AFTER_S.  Our
        own process id could be a killed predecessor's in a container (PID 1 again),
        or a live claim of this process; it is left to the heartbeat rule."""
        if self.process is None or self.host != socket.gethostname() or \
                self.process == os.getpid():
            return False
        try:
            os.kill(self.process, 0)
        except ProcessLookupError:
            return True
        except OSError:  # exists, another user's
            return False
        return False


def _clock() -> float:
    """Wall-clock seconds for heartbeats (UTC epoch; a seam for tests)."""
    return time.time()


def _pairs(run: str, user: str, host: str, started: str, beat: float) -> list[tuple[str, str]]:
    return [("Run", run), ("User", user), ("Host", host), ("Process", str(os.getpid())),
            ("Started", started), ("Heartbeat", f"{beat:.3f}")]


def claims_on(conn: Connection, dataset_id: int) -> list[Claim]:
    """Every claim linked to the dataset, lowest id first."""
    from .queries import annotations_of

    out = []
    for ann in annotations_of(conn, "Dataset", dataset_id):
        if ann.kind != "MapAnnotation" or ann.ns != CLAIM_NS:
            continue
        pairs = dict(ann.pairs)
        try:
            beat = float(pairs.get("Heartbeat", "0"))
        except ValueError:
            beat = 0.0
        process = pairs.get("Process", "")
        out.append(Claim(ann.id, pairs.get("Run", "?"), pairs.get("User", "?"),
                         pairs.get("Host", "?"), pairs.get("Started", "?"), beat,
                         int(process) if process.isdigit() else None))
    return sorted(out, key=lambda c: c.id)


def take(conn: Connection, dataset_id: int, user: str) -> Claim:
    """Link a new claim to the dataset: the link and its annotation in one save, so a
    kill leaves either both or neither."""
    model = _ice.omero.model
    run = uuid.uuid4().hex[:12]
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    host = socket.gethostname()
    now = _clock()
    ann = model.MapAnnotationI()
    ann.setNs(rstring(CLAIM_NS))
    ann.setMapValue([model.NamedValue(k, v) for k, v in _pairs(run, user, host, started, now)])
    link = model.DatasetAnnotationLinkI()
    link.setParent(model.DatasetI(dataset_id, False))
    link.setChild(ann)
    saved = conn.update.saveAndReturnObject(link)
    return Claim(saved.child.id.val, run, user, host, started, now, os.getpid())


def beat(conn: Connection, claim: Claim) -> None:
    """Renew the claim's heartbeat."""
    from .annotations import set_map

    claim.heartbeat = _clock()
    set_map(conn, claim.id, _pairs(claim.run, claim.user, claim.host, claim.started,
                                   claim.heartbeat))


def drop(conn: Connection, ids: list[int]) -> None:
    """Remove claims (their annotations and links)."""
    if ids:
        cmd = _ice.omero.cmd.Delete2(targetObjects={"MapAnnotation": list(ids)})
        conn.client.submit(cmd, loops=120, ms=500)


class DatasetClaim:
    """Hold the dataset's claim for a ``with`` block: wait for (or refuse) another
    live writer, keep the heartbeat, release on leaving.

    Args:
        conn: The run's connection.
        dataset_id: The dataset to write into.
        wait_s: How long to wait for another writer to finish (0: refuse at once).
        stale_after_s: Claims without a heartbeat for this long are dead runs'.
    """

    def __init__(self, conn: Connection, dataset_id: int, wait_s: float = 0.0,
                 stale_after_s: float = STALE_AFTER_S, heartbeat_s: float = HEARTBEAT_S):
        self.conn = conn
        self.dataset_id = dataset_id
        self.wait_s = wait_s
        self.stale_after_s = stale_after_s
        self.heartbeat_s = heartbeat_s
        self.claim: Claim | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> DatasetClaim:
        user = getattr(self.conn, "user_name", None) or getpass.getuser()
        mine = self.claim = take(self.conn, self.dataset_id, str(user))
        deadline = time.monotonic() + self.wait_s
        try:
            while True:
                now = _clock()
                claims = claims_on(self.conn, self.dataset_id)
                live = [c for c in claims if c.id == mine.id or (
                    now - c.heartbeat < self.stale_after_s and not c.dead_here())]
                writer = live[0] if live else mine
                if writer.id == mine.id:
                    stale = [c for c in claims if c not in live]
                    for c in stale:
                        log.warning("dataset %d: removing the claim of a run that stopped "
                                    "without releasing it (%s)", self.dataset_id, c.describe())
                    drop(self.conn, [c.id for c in stale])
                    break
                if time.monotonic() >= deadline:
                    waited = f" for {self.wait_s:.0f} s" if self.wait_s else ""
                    raise DatasetBusyError(
                        f"dataset {self.dataset_id} is being written by another upload: "
                        f"{writer.describe()}; waited{waited or ' not at all'}: run again "
                        "when it has finished, or add --wait SECONDS")
                log.info("dataset %d: waiting for the upload of %s", self.dataset_id,
                         writer.describe())
                time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
                beat(self.conn, mine)
        except BaseException:
            self._release()
            raise
        self._thread = threading.Thread(target=self._beat, name="claim-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if self.claim is None:
                return
            try:
                beat(self.conn, self.claim)
            except Exception as exc:  # the run itself reports a lost connection
                log.debug("claim heartbeat failed: %s", exc)

    def _release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        claim, self.claim = self.claim, None
        if claim is not None:
            with contextlib.suppress(Exception):  # a stale claim is removed by the next run
                drop(self.conn, [claim.id])

    def __exit__(self, *exc: object) -> None:
        self._release()


__all__ = ["Claim", "DatasetClaim", "beat", "claims_on", "drop", "take"]
