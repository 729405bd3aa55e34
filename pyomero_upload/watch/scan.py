"""Listing the watched folders at a cost that grows with what changed.

A pass stats every directory it knows (the roots, the folders between them and
the experiments, each experiment and its position folders) and lists again
only those whose modification time or inode moved: adding, removing or
renaming a file changes its folder's time, on local disks as on NFS and SMB.
A folder that gained or lost files stats only its new files and those still
being written at its last listing, so a growing position of 2,000 planes
costs one ``scandir`` and its new planes' ``stat`` calls; a folder whose
names did not change (a file replaced) has every file stat'ed.
Polling only: inotify sees nothing that other NFS/SMB clients write.

Two things a folder's time does not show, and how they are caught:

* a file that grows in place.  A folder holding a file modified within
  :data:`RACY_S` of its listing is listed again on the next pass (git's
  "racy clean" rule), until its files are quiet; the lab's text files of an
  experiment not yet done are stat'ed on every pass (the log grows in
  place); and an experiment is stat'ed whole (:meth:`Scanner.restat`) just
  before it is processed.
* a folder time with coarse resolution (whole seconds on some servers): a
  folder whose time is within :data:`RACY_S` of its listing is listed again.

Nothing here writes anywhere: the watched trees are read-only to us.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

#: A folder (or file) modified this recently when listed may still change unseen.
RACY_S = 2.0

FileStat = tuple[int, int]  # (size, mtime_ns)


@dataclass
class DirState:
    """One folder as last listed."""

    path: str
    mtime_ns: int
    ino: int
    #: Sub-folders (not hidden), in name order.
    dirs: list[str]
    #: Regular files (not hidden): name -> (size, mtime_ns).
    files: dict[str, FileStat]
    #: Hidden names (``.pyomero-ready``), not stat'ed.
    hidden: frozenset[str]
    #: List again on the next pass (something in it was modified just before).
    racy: bool
    digest: bytes = b""
    #: Of ``files``, computed once per listing: count, total size, newest time.
    count: int = 0
    size: int = 0
    newest_ns: int = 0
    #: When it was listed (time.time_ns()).
    listed_ns: int = 0
    #: The files' inodes (from the listing itself: no extra call).
    inodes: dict[str, int] = field(default_factory=dict)
    #: Every name listed (not hidden): files and folders.
    names: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Signature:
    """What changes when an experiment changes: its files' count, total size and newest
    time (the issue's rule), and a digest of every name, size and time."""

    files: int
    size: int
    newest_ns: int
    digest: str

    def __str__(self) -> str:
        return f"{self.files}:{self.size}:{self.newest_ns}:{self.digest}"


@dataclass
class Listing:
    """A candidate experiment folder (one holding position folders) as listed now."""

    path: str
    positions: list[str]
    #: The experiment folder's own files (the Acq and log files, experiment.yml ...).
    top_files: dict[str, FileStat]
    hidden: frozenset[str]
    signature: Signature
    #: Files in the position folders.
    planes: int = 0


class Scanner:
    """Incremental listing of the experiment folders under ``roots``.

    Args:
        roots: The watched folders.
        position_regex: What a position folder's name matches (whole).
        depth: How many folder levels below a root an experiment may sit (0: the
            root itself is the experiment).
    """

    def __init__(self, roots: list[str], position_regex: re.Pattern[str], depth: int = 3):
        self.roots = [os.path.abspath(r) for r in roots]
        self.position_regex = position_regex
        self.depth = depth
        self.dirs: dict[str, DirState] = {}
        self._warned: dict[str, str] = {}
        #: Per pass: ``stat`` calls (folders and files) and folders listed.
        self.stats = 0
        self.listed = 0

    # --- one folder -------------------------------------------------------------------

    def _list(self, path: str, st: os.stat_result, old: DirState | None) -> DirState:
        """List a folder.

        Where files were added or removed since ``old`` (a growing position), a file
        ``old`` saw already quiet (modified more than :data:`RACY_S` before that
        listing), under the same name and inode, keeps its size and time without a
        new stat: a growing folder costs its new files, not all of them.  Where the
        names are the same as before, the change was a file replaced or rewritten:
        every file is stat'ed.
        """
        self.listed += 1
        dirs: list[str] = []
        now_ns = time.time_ns()
        racy = now_ns - st.st_mtime_ns < RACY_S * 1e9
        with os.scandir(path) as it:
            by_name = {e.name: e for e in it}
        hidden = frozenset(n for n in by_name if n.startswith("."))
        names = frozenset(by_name.keys() - hidden)
        files: dict[str, FileStat] = {}
        inodes: dict[str, int] = {}
        todo = names
        if old is not None and names != old.names:
            quiet_before = old.listed_ns - RACY_S * 1e9
            of, oi = old.files, old.inodes
            keep = [n for n in names & of.keys()
                    if of[n][1] < quiet_before and oi.get(n) == by_name[n].inode()]
            files = {n: of[n] for n in keep}
            inodes = {n: oi[n] for n in keep}
            todo = names.difference(keep)
        for name in todo:
            entry = by_name[name]
            try:
                if entry.is_dir():
                    dirs.append(name)
                elif entry.is_file():
                    self.stats += 1
                    s = entry.stat()
                    files[name], inodes[name] = (s.st_size, s.st_mtime_ns), entry.inode()
                    if now_ns - s.st_mtime_ns < RACY_S * 1e9:
                        racy = True
            except OSError:  # gone between the listing and the stat: seen next pass
                racy = True
        dirs.sort()
        # repr of the sorted entries: C speed, the same in every process (the journal
        # compares signatures across restarts, so no salted hash()).
        digest = hashlib.blake2b(repr((sorted(files.items()), dirs)).encode(),
                                 digest_size=16).digest()
        sizes = [v[0] for v in files.values()]
        return DirState(path, st.st_mtime_ns, st.st_ino, dirs, files, hidden, racy,
                        digest, len(files), sum(sizes),
                        max((v[1] for v in files.values()), default=0), now_ns, inodes, names)

    def folder(self, path: str, force: bool = False) -> DirState | None:
        """The folder's state: its cached listing where its time and inode are unchanged,
        else a new listing; None where it is gone or unreadable (one log line)."""
        self.stats += 1
        try:
            st = os.stat(path)
            old = self.dirs.get(path)
            if (old is not None and not force and not old.racy and old.mtime_ns == st.st_mtime_ns
                    and old.ino == st.st_ino):
                return old
            # A forced listing (just before processing) stats every file again.
            state = self._list(path, st, old if old is not None and not force and
                               old.ino == st.st_ino else None)
        except FileNotFoundError:
            self.dirs.pop(path, None)
            return None
        except OSError as exc:
            line = f"cannot list folder ({exc.strerror or exc})"
            if self._warned.get(path) != line:  # once, not every pass
                self._warned[path] = line
                log.warning("%s: %s", path, line)
            self.dirs.pop(path, None)
            return None
        self._warned.pop(path, None)
        self.dirs[path] = state
        return state

    def _top_files(self, state: DirState) -> dict[str, FileStat]:
        """Stat the experiment folder's own files again (they grow in place)."""
        files = {}
        for name in state.files:
            self.stats += 1
            try:
                s = os.stat(os.path.join(state.path, name))
            except OSError:
                continue
            files[name] = (s.st_size, s.st_mtime_ns)
        return files

    # --- a pass -----------------------------------------------------------------------

    def scan(self, settled: set[str] | frozenset[str] = frozenset()) -> list[Listing]:
        """Every candidate experiment under the roots, in path order.

        ``settled``: experiments already processed in their present state; their own
        files are not stat'ed again unless their folder changed.
        """
        self.stats = self.listed = 0
        seen: set[str] = set()
        found: list[Listing] = []
        for root in self.roots:
            self._walk(root, 0, seen, found, settled)
        for path in [p for p in self.dirs if p not in seen]:
            del self.dirs[path]
        found.sort(key=lambda x: x.path)
        return found

    def _walk(self, path: str, depth: int, seen: set[str], found: list[Listing],
              settled: set[str] | frozenset[str]) -> None:
        before = self.listed
        state = self.folder(path)
        if state is None:
            return
        seen.add(path)
        positions = [d for d in state.dirs if self.position_regex.fullmatch(d)]
        if not positions:
            if depth < self.depth:
                for name in state.dirs:
                    self._walk(os.path.join(path, name), depth + 1, seen, found, settled)
            return
        found.append(self._experiment(state, positions, seen, settled, self.listed > before))

    def _experiment(self, state: DirState, positions: list[str], seen: set[str],
                    settled: set[str] | frozenset[str], changed: bool) -> Listing:
        top = state.files if changed or state.path in settled else self._top_files(state)
        h = hashlib.blake2b(digest_size=16)
        h.update(state.digest)
        count, size, newest, planes = 0, 0, 0, 0
        for name, (s, m) in sorted(top.items()):
            h.update(f"{name}\0{s}\0{m}\n".encode())
            count, size, newest = count + 1, size + s, max(newest, m)
        for name in positions:
            pos = self.folder(os.path.join(state.path, name))
            if pos is None:
                continue
            seen.add(pos.path)
            h.update(name.encode() + b"\0" + pos.digest)
            count, size, planes = count + pos.count, size + pos.size, planes + pos.count
            newest = max(newest, pos.newest_ns)
        return Listing(state.path, positions, top, state.hidden,
                       Signature(count, size, newest, h.hexdigest()), planes)

    def restat(self, path: str) -> Listing | None:
        """The experiment listed and stat'ed whole, whatever the folders' times say
        (just before it is processed: a file that grew in place shows here)."""
        state = self.folder(path, force=True)
        if state is None:
            return None
        positions = [d for d in state.dirs if self.position_regex.fullmatch(d)]
        for name in positions:
            self.folder(os.path.join(path, name), force=True)
        if not positions:
            return None
        return self._experiment(state, positions, set(), frozenset({path}), True)
