"""The watcher: passes over the watched folders, each ready experiment handed to the
existing upload or export, a report per experiment.

No queue and no scheduler of its own.  A pass lists the candidates
(:mod:`.scan`), asks each whether it is ready (:mod:`.ready`) and processes the
ready ones one after another with :func:`pyomero_upload.upload.upload_experiment`
or the export functions, which already skip what is complete and unchanged and
replace what changed (a new version).  What is done lives where those put it
(OMERO's complete markers and fingerprints, the output files' fingerprints);
the journal (:mod:`.journal`) keeps attempts, failures and back-off only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import InputError, PyOmeroUploadError, UsageError
from ..layout import NamingRule
from . import ready
from .journal import ExperimentRow, Journal
from .scan import Listing, Scanner

log = logging.getLogger("pyomero_upload.watch")

TARGETS = ("omero", "ome-tiff", "ome-zarr")
JOURNAL_NAME = "watch.sqlite"
LOG_NAME = "watch.jsonl"


class Terminated(KeyboardInterrupt):
    """SIGTERM while an experiment was being processed: abandon it as Ctrl-C would."""


@dataclass
class WatchOptions:
    """What to watch, when an experiment is ready, and what to make of it.

    Attributes:
        roots: The watched folders (never written to).
        to: ``omero``, ``ome-tiff`` or ``ome-zarr``.
        report_dir: Where the reports, ``watch.jsonl`` and the journal go.
        output: The output folder (files only).
        every_s: Seconds between passes.
        settle_s: Rule 3's quiet time (None: auto, from each experiment's interval).
        once: One pass, then stop.
        dataset_from: ``folder`` (the experiment folder's name) or ``yaml``
            (``dataset:`` in experiment.yml).
        project_from: ``parent`` (the parent folder's name), ``yaml`` (``project:``
            in experiment.yml) or None (``project``, else the metadata's).
        project: A fixed project name.
        depth: Folder levels below a root where experiments may sit.
        rule: How position folders and plane files are named.
        retry_s: The first back-off after a failure (doubling, at most ``retry_max_s``).
        json: Print each report on stdout as one JSON line.
        open_kwargs: For :func:`pyomero_upload.experiment.open_experiment`.
        export_kwargs: For the export functions (compression, pyramid ...).
        upload_kwargs: For :class:`pyomero_upload.upload.UploadOptions`.
    """

    roots: list[Path]
    to: str
    report_dir: Path
    output: Path | None = None
    every_s: float = 60.0
    settle_s: float | None = None
    once: bool = False
    dataset_from: str = "folder"
    project_from: str | None = None
    project: str | None = None
    depth: int = 3
    rule: NamingRule = field(default_factory=NamingRule)
    retry_s: float = 60.0
    retry_max_s: float = 6 * 3600.0
    json: bool = False
    open_kwargs: dict[str, Any] = field(default_factory=dict)
    export_kwargs: dict[str, Any] = field(default_factory=dict)
    upload_kwargs: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Usage errors, before anything is read or written."""
        if self.to not in TARGETS:
            raise UsageError(f"--to {self.to!r}: use one of {', '.join(TARGETS)}")
        if self.to != "omero" and self.output is None:
            raise UsageError(f"--to {self.to} needs -o/--output OUT")
        if self.to == "omero" and self.output is not None:
            raise UsageError("-o/--output applies to --to ome-tiff/ome-zarr only")
        if self.dataset_from not in ("folder", "yaml"):
            raise UsageError("--dataset-from: use folder or yaml")
        if self.project_from not in (None, "parent", "yaml"):
            raise UsageError("--project-from: use parent or yaml")
        if self.project_from and self.project:
            raise UsageError("give --project or --project-from, not both")
        for root in self.roots:
            if not root.is_dir():
                raise InputError(root, "watched folder does not exist" if not root.exists()
                                 else "watched folder is not a folder")
        for what, folder in (("--report-dir", self.report_dir), ("-o/--output", self.output)):
            if folder is None:
                continue
            for root in self.roots:
                if _within(folder, root):
                    raise UsageError(f"{what} {folder} is inside the watched folder {root}: "
                                     "the watched folders are never written to")


def _within(path: Path, root: Path) -> bool:
    path, root = path.resolve(), root.resolve()
    return path == root or root in path.parents


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


class Watcher:
    """Passes over the watched folders; :meth:`run` until stopped, or one :meth:`pass_once`.

    Args:
        options: What to watch and do.
        connect: Returns a new, open OMERO connection (``--to omero``): called at the
            first upload of a pass; the watcher closes it at the end of the pass.
        engine: A started Dask engine, handed to every upload or export as-is.
        processor: An image processor for the uploads (default: the package's).
        out: Where ``--json`` lines go (default: stdout).
    """

    def __init__(self, options: WatchOptions, connect: Callable[[], Any] | None = None,
                 engine: Any = None, processor: Any = None, out: Any = None):
        options.check()
        if options.to == "omero" and connect is None:
            raise UsageError("--to omero needs a connection")
        self.opt = options
        self.connect = connect
        self.engine = engine
        self.processor = processor
        self.out = out
        try:
            options.report_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(options.report_dir, f"cannot create the report folder "
                             f"({exc.strerror or exc})") from None
        self.journal = Journal(options.report_dir / JOURNAL_NAME, options.retry_s,
                               options.retry_max_s)
        self.scanner = Scanner([str(r) for r in options.roots], options.rule.position_regex(),
                               options.depth)
        self.facts = ready.FactsCache()
        self.rows: dict[str, ExperimentRow] = {}
        #: Experiments processed in their present state: skipped until they change.
        self.settled: dict[str, str] = {}
        self.busy = False
        self._conn: Any = None
        #: The output folder, resolved once (a pass must not stat it per experiment).
        self._output = str(options.output.resolve()) if options.output else None
        self._listed: list[str] = []
        self._stop = threading.Event()
        #: Last "waiting" line per experiment (logged when it changes, not every pass).
        self._said: dict[str, str] = {}

    # --- running -------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop after the current experiment (SIGTERM's handler also interrupts it)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> int:
        """Passes every ``every_s`` until stopped (or one with ``once``); 0, or 1 where
        ``once`` and an experiment failed."""
        try:
            while True:
                start = time.monotonic()
                try:
                    reports = self.pass_once()
                except Exception as exc:  # never crash the service; say it once a pass
                    log.debug("pass failed", exc_info=True)
                    log.error("pass failed: %s", exc if isinstance(exc, PyOmeroUploadError)
                              else repr(exc))
                    if self.opt.once:
                        return 1
                    reports = []
                if self.opt.once:
                    return 1 if any(r["status"] == "failed" for r in reports) else 0
                if self._stop.wait(max(0.0, self.opt.every_s - (time.monotonic() - start))):
                    return 0
        finally:
            self.journal.close()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def pass_once(self) -> list[dict[str, Any]]:
        """One pass: list, check, process what is ready; the reports written.  Uploads
        share one login, made at the first and closed at the end of the pass."""
        try:
            return self._pass()
        finally:
            self._close()

    def _pass(self) -> list[dict[str, Any]]:
        now = time.time()
        listings = self.scanner.scan(frozenset(p for p, s in self.settled.items()))
        self._listed = [x.path for x in listings]
        present = set(self._listed)
        for gone in [p for p in self.settled if p not in present]:
            self.settled.pop(gone)
            self.facts.forget(gone)
        owners = self._owners(listings)
        reports = []
        for listing in listings:
            if self._stop.is_set():
                break
            try:
                report = self._consider(listing, now, owners.get(listing.path))
            except Exception as exc:  # a folder that cannot be read must not stop the rest
                log.debug("%s: cannot check", listing.path, exc_info=True)
                self._say(listing.path, f"cannot check whether it is ready: "
                          f"{exc if isinstance(exc, PyOmeroUploadError) else repr(exc)}",
                          logging.WARNING)
                continue
            if report is not None:
                reports.append(report)
        return reports

    def _consider(self, listing: Listing, now: float,
                  conflict: str | None) -> dict[str, Any] | None:
        """Check one listed experiment; process it if it is ready (its report), else None."""
        sig = str(listing.signature)
        if self.settled.get(listing.path) == sig:
            return None
        self.settled.pop(listing.path, None)
        row = self._row(listing.path)
        self.journal.observe(row, sig, now)
        if row.next_try > now:
            self._say(listing.path, f"failed {row.failures} time(s); next try at "
                      f"{_iso(row.next_try)}")
            return None
        facts = self.facts.facts(listing)
        settle = self.opt.settle_s if self.opt.settle_s is not None else \
            ready.auto_settle(facts.interval_s)
        state = ready.check(listing, facts, now - (row.since or now), settle, self.opt.rule)
        if not state.ready:
            self._say(listing.path, f"not ready: {state.detail}")
            return None
        confirmed = self.scanner.restat(listing.path)
        if confirmed is None or str(confirmed.signature) != sig:
            # Something grew in place since the listing: not ready, quiet time restarts.
            self._say(listing.path, "changed while being checked; waiting")
            if confirmed is not None:
                self.journal.observe(row, str(confirmed.signature), time.time())
            return None
        return self.process(listing, state, row, conflict)

    def _row(self, path: str) -> ExperimentRow:
        if path not in self.rows:
            self.rows[path] = self.journal.row(path)
        return self.rows[path]

    def _say(self, path: str, line: str, level: int = logging.INFO) -> None:
        """Log a waiting line when it says something new (the seconds of quiet grow every
        pass and are not news)."""
        key = re.sub(r"unchanged for \d+ s", "unchanged", line)
        if self._said.get(path) != key:
            self._said[path] = key
            log.log(level, "%s: %s", path, line)

    # --- names -----------------------------------------------------------------------------

    def names(self, listing: Listing) -> tuple[str, str | None]:
        """(dataset, project) of an experiment, as the options say."""
        path = Path(listing.path)
        facts = self.facts.facts(listing)
        if facts.problems and (self.opt.dataset_from == "yaml" or self.opt.project_from == "yaml"):
            raise InputError(None, facts.problems[0])
        yml = path / (ready._sidecar(listing.top_files) or "experiment.yml")
        if self.opt.dataset_from == "yaml":
            dataset = facts.sidecar.get("dataset")
            if not dataset:
                raise InputError(yml, "no 'dataset:' (needed by --dataset-from yaml)")
        else:
            dataset = path.name
        if self.opt.project_from == "parent":
            project: str | None = path.parent.name
        elif self.opt.project_from == "yaml":
            project = facts.sidecar.get("project")
            if not project:
                raise InputError(yml, "no 'project:' (needed by --project-from yaml)")
        else:
            project = self.opt.project
        return str(dataset), project

    def _target(self, listing: Listing) -> tuple[str, ...]:
        """Where an experiment goes: two experiments must never share it (each would
        replace the other's images as a new version)."""
        dataset, project = self.names(listing)
        if self.opt.to == "omero":
            return ("omero", project or "", dataset)
        assert self._output is not None
        return (self.opt.to, os.path.join(self._output, project or "", dataset))

    def _owners(self, listings: list[Listing]) -> dict[str, str | None]:
        """Per experiment, the problem with its target (None: it is its own).  Experiments
        already done keep their target; others claim in path order."""
        taken: dict[tuple[str, ...], str] = {}
        problems: dict[str, str | None] = {}
        done_first = sorted(listings, key=lambda x: (self._row(x.path).done_signature is None,
                                                     x.path))
        for listing in done_first:
            try:
                target = self._target(listing)
            except InputError:
                problems[listing.path] = None  # reported when it is processed
                continue
            other = taken.setdefault(target, listing.path)
            problems[listing.path] = None if other == listing.path else (
                f"goes to the same {'dataset' if self.opt.to == 'omero' else 'folder'} "
                f"({' / '.join(t for t in target[1:] if t)}) as {other}: each would replace "
                "the other's images; rename one, or use --dataset-from yaml / --project-from")
        return problems

    def report_name(self, listing: Listing) -> str:
        """The report's file name: the experiment folder's name, with its parent's where
        another watched experiment has the same name."""
        path = Path(listing.path)
        clash = any(Path(p).name == path.name and p != listing.path for p in self._listed)
        name = f"{path.parent.name}__{path.name}" if clash else path.name
        return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name)

    # --- one experiment ------------------------------------------------------------------

    def process(self, listing: Listing, state: ready.Readiness, row: ExperimentRow,
                conflict: str | None = None) -> dict[str, Any]:
        """Upload or export one ready experiment; write and return its report."""
        path = Path(listing.path)
        sig = str(listing.signature)
        name = self.report_name(listing)
        started = time.time()
        report: dict[str, Any] = {
            "experiment": name, "source": str(path), "to": self.opt.to,
            "ready": {"rule": state.rule, "detail": state.detail, "at": _iso(started)},
            "started": _iso(started),
        }
        log.info("%s: ready (%s: %s); %s", path, state.rule, state.detail,
                 "uploading" if self.opt.to == "omero" else f"exporting as {self.opt.to}")
        attempt = self.journal.start(str(path), state.rule, sig)
        self.busy = True
        try:
            if conflict:
                raise InputError(path, conflict)
            dataset, project = self.names(listing)
            body = self._run(path, dataset, project)
        except KeyboardInterrupt:
            self.journal.finish(attempt, row, "interrupted")
            log.warning("%s: interrupted; %s", path,
                        "images not finished stay marked incomplete and are redone on the "
                        "next start" if self.opt.to == "omero" else
                        "no partial output was left; it is redone on the next start")
            raise
        except Exception as exc:
            if not isinstance(exc, PyOmeroUploadError):  # our bug: keep the traceback
                log.debug("%s: unexpected error", path, exc_info=True)
            error = str(exc) if isinstance(exc, PyOmeroUploadError) else \
                f"{type(exc).__name__}: {exc} (a bug; -v shows the traceback)"
            row = self.journal.finish(attempt, row, "failed", error=error)
            report.update(status="failed", error=error, failures=row.failures,
                          next_try=_iso(row.next_try))
            log.error("%s: failed (%d time(s) in a row; next try at %s): %s", path,
                      row.failures, _iso(row.next_try), error)
            return self._write_report(name, report, started)
        finally:
            self.busy = False
        report.update(body)
        after = self.scanner.restat(str(path))
        if after is not None and str(after.signature) != sig:
            report["note"] = ("changed while being processed: the version processed is the "
                              "one listed; the change is processed as a new version")
        else:
            self.settled[str(path)] = sig
        previous = row.done_signature
        row = self.journal.finish(attempt, row, "ok", signature=sig)
        report["version"] = row.versions
        wrote = bool(body["created"] or body["replaced"])
        # A new version: something done before was replaced, or written again after the
        # experiment changed (a file of the lab's that changed alone rewrites nothing).
        report["new_version"] = bool(body["replaced"]) or (wrote and previous is not None
                                                           and previous != sig)
        report["status"] = "done" if wrote else "unchanged"
        if report["new_version"]:
            log.info("%s: changed after it was done: a new version (%d replaced)", path,
                     len(body["replaced"]))
        return self._write_report(name, report, started)

    def _run(self, path: Path, dataset: str, project: str | None) -> dict[str, Any]:
        from ..experiment import open_experiment

        exp, metadata = open_experiment(path, rule=self.opt.rule, **self.opt.open_kwargs)
        if self.opt.to == "omero":
            return self._upload(exp, metadata, dataset, project)
        return self._export(exp, metadata, dataset, project)

    def _upload(self, exp, metadata, dataset: str, project: str | None) -> dict[str, Any]:
        from ..upload import UploadOptions, upload_experiment

        options = UploadOptions(dataset=dataset, project=project, **self.opt.upload_kwargs)
        options.engine = self.engine
        assert self.connect is not None
        if self._conn is None:  # one login per pass, for every experiment it uploads
            self._conn = self.connect()
        try:
            result = upload_experiment(self._conn, exp, metadata, options, self.processor)
        except BaseException:
            self._close()  # whatever went wrong, the next experiment logs in afresh
            raise
        d = result.to_dict()
        return {"omero": d, "created": list(result.created), "replaced": list(result.replaced),
                "skipped": list(result.skipped), "planes": result.planes,
                "seconds_upload": d["seconds"]}

    def _export(self, exp, metadata, dataset: str, project: str | None) -> dict[str, Any]:
        assert self.opt.output is not None
        out = self.opt.output / project if project else self.opt.output
        # A changed experiment is a new version: its outputs (from our own earlier run
        # of the same experiment; targets are never shared) are replaced.
        common = {"metadata": metadata, "overwrite": True, "engine": self.engine,
                  **self.opt.export_kwargs}
        if self.opt.to == "ome-zarr":
            from ..export.ome_zarr_writer import export_ome_zarr

            result = export_ome_zarr(exp, out, dataset, **common)
        else:
            from ..export import export_ome_tiff

            result = export_ome_tiff(exp, out, dataset, **common)
        d = result.to_dict()
        by = {s: [e["position"] for e in d["outputs"] if e["status"] == s]
              for s in ("created", "replaced", "skipped")}
        return {"export": d, **by, "planes": result.planes}

    def _write_report(self, name: str, report: dict[str, Any], started: float) -> dict[str, Any]:
        finished = time.time()
        seconds = finished - started
        report["finished"] = _iso(finished)
        report["seconds"] = round(seconds, 3)
        planes = report.get("planes", 0)
        report["planes_per_s"] = round(planes / seconds, 1) if seconds > 0 and planes else 0.0
        folder = self.opt.report_dir
        target = folder / f"{name}.json"
        if report["status"] != "unchanged" or not target.exists():
            tmp = folder / f".{name}.json.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, target)
        if report["status"] != "unchanged":
            with open(folder / LOG_NAME, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(report) + "\n")
        else:
            log.info("%s: up to date (nothing to upload or write)", report["source"])
        if report["status"] == "done":
            log.info("%s: done in %.1f s (%s planes/s): %d created, %d replaced, %d skipped",
                     report["source"], seconds, report["planes_per_s"], len(report["created"]),
                     len(report["replaced"]), len(report["skipped"]))
        if self.opt.json:
            out = self.out
            if out is None:
                import sys

                out = sys.stdout
            with contextlib.suppress(BrokenPipeError):
                print(json.dumps(report), file=out, flush=True)
        return report
