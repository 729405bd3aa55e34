"""When an experiment is ready: three rules, tried in this order.

1. **marker**: a ``.pyomero-ready`` file in the experiment folder, or
   ``complete: true`` in its ``experiment.yml``;
2. **log**: the lab's log's last ``Timepoint:N completed`` line says N, the Acq
   file (or ``experiment.yml``'s ``acquisition.n_timepoints``) promises N time
   points, and every expected plane is there (the layout's own check:
   N time points, no plane missing in any position);
3. **quiet**: nothing changed (file count, total size, newest time) for the
   settle time.  ``--settle auto`` is max(2 x interval, interval + 120 s), the
   interval from the Acq file (or ``experiment.yml``), 10 minutes where unknown.
   An aborted acquisition (the Acq file promised more than the log reached)
   finishes by this rule.

What the rules read comes from the package's parsers
(:func:`pyomero_upload.plugins.acqlog.parse_acq`, ``last_completed_timepoint``,
:func:`pyomero_upload.plugins.sidecar.watch_settings`,
:func:`pyomero_upload.layout.discover`), read again only when a file's size or
time moved.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..layout import NamingRule, discover
from .scan import FileStat, Listing

log = logging.getLogger(__name__)

MARKER = ".pyomero-ready"
#: The settle time where the interval is unknown.
DEFAULT_SETTLE_S = 600.0


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``5m``, ``1.5h``, ``1d`` -> seconds (ValueError otherwise)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|min|h|d)?\s*", text or "")
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 5m, 1h)")
    scale = {"ms": 0.001, None: 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
    return float(m.group(1)) * scale[m.group(2)]


def auto_settle(interval_s: float | None) -> float:
    """max(2 x interval, interval + 120 s); :data:`DEFAULT_SETTLE_S` where unknown."""
    if not interval_s or interval_s <= 0:
        return DEFAULT_SETTLE_S
    return max(2 * interval_s, interval_s + 120)


@dataclass
class LabFacts:
    """What an experiment's own files say about its acquisition."""

    n_timepoints: int | None = None
    interval_s: float | None = None
    #: The N of the log's last ``Timepoint:N completed`` line.
    completed: int | None = None
    #: experiment.yml's watch keys (``dataset``, ``complete``, ``owner``) and ``project``.
    sidecar: dict[str, Any] = field(default_factory=dict)
    #: Problems reading them (one line each, naming the file).
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Readiness:
    ready: bool
    #: ``marker``, ``log`` or ``quiet`` where ready.
    rule: str | None
    #: What was seen, for the log and the report.
    detail: str


def _acq_and_log(files: dict[str, FileStat]) -> tuple[str | None, str | None]:
    """The names the Acq/log parser would pick (first by name)."""
    acq = sorted(n for n in files if n.lower().endswith("acq.txt"))
    logs = sorted(n for n in files if n.lower().endswith("log.txt"))
    return (acq[0] if acq else None), (logs[0] if logs else None)


def _sidecar(files: dict[str, FileStat]) -> str | None:
    from ..plugins.sidecar import SIDECAR_NAMES

    return next((n for n in SIDECAR_NAMES if n in files), None)


class FactsCache:
    """Each experiment's :class:`LabFacts`, parsed again only when its files changed."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[tuple, LabFacts]] = {}

    def facts(self, listing: Listing) -> LabFacts:
        acq, lab_log = _acq_and_log(listing.top_files)
        sidecar = _sidecar(listing.top_files)
        key = tuple((n, listing.top_files[n]) for n in (acq, lab_log, sidecar) if n)
        cached = self._cache.get(listing.path)
        if cached is not None and cached[0] == key:
            return cached[1]
        facts = read_facts(Path(listing.path), acq, lab_log, sidecar)
        self._cache[listing.path] = (key, facts)
        return facts

    def forget(self, path: str) -> None:
        self._cache.pop(path, None)


def read_facts(root: Path, acq: str | None, lab_log: str | None,
               sidecar: str | None) -> LabFacts:
    """Parse the Acq file's time settings, the log's last completed time point and the
    sidecar's watch keys; a file that cannot be read is a problem, not an exception."""
    from ..model import ExperimentMetadata
    from ..plugins.acqlog import last_completed_timepoint, parse_acq
    from ..plugins.sidecar import parse_sidecar, watch_settings

    facts = LabFacts()
    if acq:
        meta = ExperimentMetadata()
        try:
            _quietly(parse_acq, root / acq, meta)
            facts.n_timepoints = meta.acquisition.n_timepoints
            facts.interval_s = meta.acquisition.time_interval_s
        except InputError as exc:
            facts.problems.append(str(exc))
    if lab_log:
        try:
            facts.completed = last_completed_timepoint(root / lab_log)
        except InputError as exc:
            facts.problems.append(str(exc))
    if sidecar:
        try:
            facts.sidecar = watch_settings(root / sidecar)
            acq_meta = _quietly(parse_sidecar, root / sidecar).acquisition
            facts.n_timepoints = acq_meta.n_timepoints or facts.n_timepoints
            facts.interval_s = acq_meta.time_interval_s or facts.interval_s
        except InputError as exc:
            facts.problems.append(str(exc))
    return facts


def _quietly(fn, *args):
    """The parsers warn about every missing section; a pass every minute would repeat
    each warning every minute (the upload logs them once, when it reads the metadata)."""
    logger = logging.getLogger("pyomero_upload.plugins")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return fn(*args)
    finally:
        logger.setLevel(level)


def check(listing: Listing, facts: LabFacts, quiet_s: float, settle_s: float,
          rule: NamingRule) -> Readiness:
    """Whether ``listing`` is ready, by the first rule that says so.

    Args:
        listing: The experiment as listed now.
        facts: Its lab files' facts.
        quiet_s: For how long its signature has been unchanged.
        settle_s: The settle time (rule 3).
        rule: How position folders and planes are named (rule 2's plane check).
    """
    if MARKER in listing.hidden:
        return Readiness(True, "marker", f"{MARKER} present")
    if facts.sidecar.get("complete") is True:
        return Readiness(True, "marker", "experiment.yml says complete: true")
    waiting = []
    n, done = facts.n_timepoints, facts.completed
    if n and done is not None and done == n:
        try:
            exp = discover(listing.path, rule, allow_missing=True, probe=False)
        except InputError as exc:
            waiting.append(f"log says {done} of {n} time points completed, but {exc}")
        else:
            if exp.size_t == n and not exp.missing:
                return Readiness(True, "log", f"log says {done} of {n} time points completed; "
                                 f"all {exp.planes_per_position * len(exp.positions)} planes "
                                 "present")
            waiting.append(f"log says {done} of {n} time points completed, but the folders "
                           f"hold {exp.size_t} time point(s) and {len(exp.missing)} plane(s) "
                           "are missing")
    elif n and done is not None:
        waiting.append(f"log at {done} of {n} time points")
    if quiet_s >= settle_s:
        return Readiness(True, "quiet", f"unchanged for {quiet_s:.0f} s (settle {settle_s:.0f} s)"
                         + (f"; {waiting[0]}" if waiting else ""))
    waiting.append(f"unchanged for {quiet_s:.0f} s of {settle_s:.0f} s")
    return Readiness(False, None, "; ".join(waiting))
