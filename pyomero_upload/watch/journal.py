"""The watcher's journal: a small SQLite file (WAL mode) in the report folder.

Bookkeeping only, never the source of truth: what is done lives in OMERO
(each image's complete marker and fingerprint) and in the output files'
fingerprints, and a lost journal costs only a settle period and a re-check.
It records each attempt (start, end, outcome, the error's one line), the
failures of each experiment with the time of its next try (exponential
back-off), and the signature last seen with the time it was first seen (so a
``--once`` run from cron, or a restart, counts the quiet time already passed).

No secret is ever written here: rows hold paths, times, rules and the error
lines the package's own exceptions carry (which name files, never passwords).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import InputError

SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    path TEXT PRIMARY KEY,
    signature TEXT,
    since REAL,
    failures INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    done_signature TEXT,
    versions INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    status TEXT NOT NULL,
    rule TEXT,
    signature TEXT,
    error TEXT
);
"""


def _lock(path: Path) -> IO[bytes]:
    """One watcher per report folder: an exclusive lock held while it runs (two would
    report and retry each experiment twice); released by the kernel if it dies."""
    try:
        fh = open(path, "ab")  # noqa: SIM115 - held for the watcher's life
    except OSError as exc:
        raise InputError(path.parent, f"cannot write the report folder "
                         f"({exc.strerror or exc})") from None
    try:
        import fcntl

        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # not POSIX: no lock
        pass
    except OSError:
        fh.close()
        raise InputError(path.parent, "another watcher is using this report folder "
                         "(its journal is locked); give each watcher its own "
                         "--report-dir") from None
    return fh


@dataclass
class ExperimentRow:
    path: str
    signature: str | None = None
    since: float | None = None
    failures: int = 0
    next_try: float = 0.0
    last_error: str | None = None
    done_signature: str | None = None
    versions: int = 0


class Journal:
    """The journal at ``path`` (created, WAL mode); one per watcher process."""

    def __init__(self, path: Path, retry_s: float = 60.0, retry_max_s: float = 6 * 3600):
        self.path = Path(path)
        self.retry_s = retry_s
        self.retry_max_s = retry_max_s
        self._lock = _lock(self.path.with_suffix(".lock"))
        try:
            # Made by whichever thread starts the watcher, used by the one running it.
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                      check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            # What a killed watcher left running was interrupted.
            self.db.execute("UPDATE attempts SET status='interrupted', finished=? "
                            "WHERE status='running'", (time.time(),))
        except sqlite3.Error as exc:
            self._lock.close()
            raise InputError(self.path, f"cannot use the journal ({exc})") from None

    def close(self) -> None:
        self.db.close()
        self._lock.close()

    def row(self, path: str) -> ExperimentRow:
        cur = self.db.execute(
            "SELECT path, signature, since, failures, next_try, last_error, done_signature, "
            "versions FROM experiments WHERE path=?", (path,))
        found = cur.fetchone()
        return ExperimentRow(*found) if found else ExperimentRow(path)

    def _save(self, r: ExperimentRow) -> None:
        self.db.execute(
            "INSERT INTO experiments (path, signature, since, failures, next_try, last_error, "
            "done_signature, versions) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(path) DO UPDATE SET "
            "signature=excluded.signature, since=excluded.since, failures=excluded.failures, "
            "next_try=excluded.next_try, last_error=excluded.last_error, "
            "done_signature=excluded.done_signature, versions=excluded.versions",
            (r.path, r.signature, r.since, r.failures, r.next_try, r.last_error,
             r.done_signature, r.versions))

    def observe(self, r: ExperimentRow, signature: str, now: float) -> ExperimentRow:
        """Record the signature seen now; a new one restarts the quiet time and clears
        the back-off (new data may mend what failed)."""
        if r.signature != signature:
            r.signature, r.since = signature, now
            r.failures, r.next_try = 0, 0.0
            self._save(r)
        return r

    def start(self, path: str, rule: str | None, signature: str) -> int:
        cur = self.db.execute(
            "INSERT INTO attempts (path, started, status, rule, signature) "
            "VALUES (?,?,?,?,?)", (path, time.time(), "running", rule, signature))
        return int(cur.lastrowid or 0)

    def finish(self, attempt: int, r: ExperimentRow, status: str, error: str | None = None,
               signature: str | None = None) -> ExperimentRow:
        """Close an attempt: ``ok`` (done in ``signature``), ``failed`` (backed off) or
        ``interrupted``."""
        now = time.time()
        self.db.execute("UPDATE attempts SET finished=?, status=?, error=? WHERE id=?",
                        (now, status, error, attempt))
        if status == "ok":
            if signature != r.done_signature:
                r.versions += 1
            r.done_signature, r.failures, r.next_try, r.last_error = signature, 0, 0.0, None
        elif status == "failed":
            r.failures += 1
            r.next_try = now + self.backoff(r.failures)
            r.last_error = error
        self._save(r)
        return r

    def backoff(self, failures: int) -> float:
        """Seconds before the next try after ``failures`` failures in a row."""
        return float(min(self.retry_max_s, self.retry_s * 2 ** max(0, failures - 1)))

    def attempts(self, path: str | None = None) -> list[dict]:
        """Every attempt (of ``path``), oldest first: for reports and tests."""
        cur = self.db.execute(
            "SELECT id, path, started, finished, status, rule, signature, error FROM attempts"
            + (" WHERE path=?" if path else "") + " ORDER BY id", (path,) if path else ())
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
