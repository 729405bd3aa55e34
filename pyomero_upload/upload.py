"""Putting an experiment into OMERO: what to create, skip or replace, and the
default image processor.  No ``omero`` import here: the server work goes
through :mod:`pyomero_upload.omero`, which answers with ids and dataclasses.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from .describe import (
    describe,
    describe_file,
    file_fingerprint,
    fingerprint_settings,
    provenance_pairs,
    source_fingerprint,
)
from .errors import InputError, OmeroError, PluginError, UsageError
from .layout import Experiment, Position
from .model import (
    ATTACHMENT_NS,
    BULK_ANNOTATIONS_NS,
    CLIENT_MAP_NS,
    PROVENANCE_NS,
    SOURCE_NS,
    ExperimentMetadata,
)
from .omero import annotations as anns
from .omero import containers, images, queries
from .omero.claims import DatasetClaim
from .omero.connection import Connection
from .parallel import InOrder, default_workers, ordered_map, prefetch_window
from .planes import read_plane
from .plugins.base import DatasetRef, ImageProcessor, UploadOptions, UploadResult

log = logging.getLogger(__name__)


def unit_identity(exp: Experiment, position: Position, plane: Path | None = None) -> str:
    """What an image is the upload of, stored on it and never inferred from its name:
    the position, or in one-image-per-file mode the plane file's path in the experiment."""
    if plane is None:
        return position.name
    try:
        return plane.relative_to(exp.root).as_posix()
    except ValueError:
        return f"{position.name}/{plane.name}"


class DefaultImageProcessor(ImageProcessor):
    """One hypercube per position (or one image per plane file), in parallel.

    Each image records its identity (:func:`unit_identity`) and fingerprint; a
    unit sees, skips, replaces and removes only images of its own identity.  A
    replacement is written as a new image and the old one removed only once
    the new one is complete, so a failed replacement leaves the good copy.
    Extra images of a unit (what an interrupted run left: incomplete or
    superseded copies) are removed once a complete, current one exists.
    """

    def process(self, conn, exp, metadata, dataset, options, result, on_plane=None) -> None:
        workers = options.workers or default_workers()
        checksum = options.checksum
        settings = fingerprint_settings(metadata, options.provenance, options.hypercube,
                                        "omero-1", *(("checksum",) if checksum else ()))
        existing: dict[str, list[queries.ExistingImage]] = {}
        for img in queries.existing_images(conn, dataset.id):
            # Images from before identities were recorded: a hypercube's name is its
            # position; a single-plane image's name is not unique, so it is left alone.
            ident = img.source or (img.name if options.hypercube else None)
            if ident is not None:
                existing.setdefault(ident, []).append(img)
        tags = anns.ensure_tags(conn, metadata.tags) if metadata and metadata.tags else []
        prov = provenance_pairs(exp, action="Upload") if options.provenance else []
        lock = threading.Lock()

        # What to upload: (image name, position, and in non-hypercube mode the
        # plane file with its channel).
        units = (
            [(p.name, p, None) for p in exp.positions]
            if options.hypercube
            else [(f.name, p, (f, key[1])) for p in exp.positions
                  for key, f in zip(exp.plane_keys(), exp.plane_paths(p), strict=True) if f]
        )
        # What to write: (position, plane file and channel or None, identity, fingerprint,
        # the unit's older images, removed once the new one is complete).
        jobs: list[tuple[Position, tuple[Path, str] | None, str, str, list[int]]] = []
        extras: list[int] = []
        for name, pos, single in units:
            ident = unit_identity(exp, pos, single[0] if single else None)
            key = name if options.hypercube else ident
            result.positions.setdefault(key, pos.name)
            fp = (source_fingerprint(exp, pos, settings, checksum) if single is None
                  else file_fingerprint(single[0], settings, ident, checksum))
            old = existing.get(ident, [])
            done = sorted((o for o in old if o.complete and o.fingerprint == fp),
                          key=lambda o: o.id)
            if done:
                result.skipped.append(key)
                result.skipped_ids[key] = done[0].id
                extras += [o.id for o in old if o.id != done[0].id]
                continue
            (result.replaced if old else result.created).append(key)
            if old and options.dry_run:
                files = ([single[0]] if single else [f for f in exp.plane_paths(pos) if f])
                result.reasons[key] = (f"image(s) {', '.join(str(o.id) for o in old)}: "
                                       f"{why_replace(exp, old, files)}")
            jobs.append((pos, single, ident, fp, [o.id for o in old]))
        if options.dry_run:
            return
        if extras:  # under the dataset's claim: no other run is writing them
            log.info("removing %d image(s) an earlier run left beside complete ones: %s",
                     len(extras), ", ".join(map(str, extras)))
            containers.delete_images(conn, extras)
        if not jobs:
            return
        if options.engine is not None:
            self._process_on(options.engine, conn, exp, metadata, dataset, options, result,
                             jobs, tags, prov, settings, on_plane)
            return
        # Positions in parallel hide the server's latency; the cores are shared
        # among their decoders rather than oversubscribed.
        parallel = max(1, min(workers, len(jobs)))
        decoders = max(1, workers // parallel)

        # Images are created in position order (ids follow the positions, as a
        # serial upload would give them); the pixels then go in parallel.
        turns = InOrder()

        def run(i: int, pos: Position, single: tuple[Path, str] | None, ident: str, fp: str,
                old: list[int]) -> None:
            provenance = [*prov, ("Source checksum", fp)] if prov else []
            try:
                if single is None:
                    spec = describe(exp, pos, metadata, provenance=provenance, fingerprint=fp)
                else:
                    path, channel = single
                    plane = read_plane(path)
                    spec = describe_file(path, channel, plane.shape, plane.dtype.name, metadata,
                                         provenance=provenance, settings=settings,
                                         fingerprint=fp)
                turns.wait(i)
                new = images.create_image(conn, dataset.id, spec, identity=ident)
            finally:
                turns.done(i)
            if single is None:
                written = write_position(conn, dataset.id, pos, spec, new, tags, decoders,
                                         on_plane)
            else:
                written = _write_or_remove(conn, dataset.id, spec, [plane], tags, on_plane, new)
            # Only now, with the new image complete, does the old copy go.
            containers.delete_images(conn, old)
            key = spec.name if single is None else ident
            with lock:
                result.image_ids[key] = written.image_id
                result.planes += spec.n_planes
                result.nbytes += spec.nbytes
                result.pixel_calls += written.pixel_calls

        with ThreadPoolExecutor(parallel, thread_name_prefix="upload") as pool:
            futures = [pool.submit(run, i, *job) for i, job in enumerate(jobs)]
            try:
                for fut in futures:
                    fut.result()
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise


    def _process_on(self, engine, conn, exp, metadata, dataset, options, result, jobs, tags,
                    prov, settings, on_plane) -> None:
        """The jobs as Dask tasks, one per position; this process coordinates.

        The empty images are created here, in position order (ids follow the
        positions); workers, joined to this session, write the pixels and mark
        each complete.  A reconcile pass then keeps, per unit, the one complete
        image with the expected fingerprint (the lowest id) and removes every
        other: the old copies replaced, and any a dead worker's attempt left.
        """
        decoders = options.workers or 1
        planned = []
        for pos, single, ident, fp, _old in jobs:
            if single is not None:
                raise UsageError("--no-hypercube uploads run in one process; leave out "
                                 "--cluster/--scheduler")
            provenance = [*prov, ("Source checksum", fp)] if prov else []
            spec = describe(exp, pos, metadata, provenance=provenance, fingerprint=fp)
            planned.append((pos, spec, images.create_image(conn, dataset.id, spec,
                                                           identity=ident)))
        engine.join_omero(conn.worker_settings())
        semaphore = engine.semaphore(options.max_uploads)
        # Only what the task uses: the position (its files) and its spec, never the
        # whole experiment, which would send every plane's path with every task.
        items = [(pos, spec, new, dataset.id, tags, decoders, semaphore, options.max_uploads)
                 for pos, spec, new in planned]
        results = engine.map_ordered(upload_position, items,
                                     [f"upload-{pos.name}" for pos, _, _ in planned])
        for (pos, spec, _new), (image_id, planes, calls) in zip(planned, results, strict=True):
            result.image_ids[spec.name] = image_id
            result.planes += planes
            result.nbytes += spec.nbytes if planes else 0
            result.pixel_calls += calls
            if on_plane:
                on_plane(exp.position_nbytes(pos))
        missing = reconcile(conn, dataset.id, {ident: fp for _, _, ident, fp, _ in jobs})
        if missing:
            raise OmeroError(f"no complete image after the run for: {', '.join(missing)}; "
                             "run the same command again")


def why_replace(exp: Experiment, old: list[queries.ExistingImage], files: list[Path]) -> str:
    """Why a unit's images would be replaced, for ``--dry-run``: an incomplete upload,
    or the plane files changed since the upload (named, up to five), or else a
    setting or a file's size, name or time."""
    complete = [o for o in old if o.complete]
    if not complete:
        return "an incomplete upload"
    stamps = [o.completed for o in complete if o.completed]
    if not stamps:
        return "changed source planes or settings"
    try:
        since = max(datetime.fromisoformat(t) for t in stamps).timestamp()
    except ValueError:
        return "changed source planes or settings"
    newer = []
    for f in files:
        with contextlib.suppress(OSError):
            if f.stat().st_mtime > since:
                newer.append(f)
    if not newer:
        return ("no plane file is newer than the upload: a setting, or a file's size, "
                "name or time, changed")

    def shown(f: Path) -> str:
        try:
            return f.relative_to(exp.root).as_posix()
        except ValueError:
            return f.name

    names = ", ".join(shown(f) for f in newer[:5])
    more = f" and {len(newer) - 5} more" if len(newer) > 5 else ""
    return f"changed since the upload: {names}{more}"


def reconcile(conn: Connection, dataset_id: int, expected: dict[str, str]) -> list[str]:
    """Per unit (identity -> fingerprint), keep the lowest-id complete image with the
    expected fingerprint and remove every other image of that unit; return the units
    left without one."""
    by_ident: dict[str, list[queries.ExistingImage]] = {}
    for img in queries.existing_images(conn, dataset_id):
        if img.source in expected:
            by_ident.setdefault(img.source, []).append(img)
    doomed, missing = [], []
    for ident, fp in expected.items():
        mine = sorted(by_ident.get(ident, []), key=lambda o: o.id)
        good = [o for o in mine if o.complete and o.fingerprint == fp]
        if not good:
            missing.append(ident)
            continue
        doomed += [o.id for o in mine if o.id != good[0].id]
    if doomed:
        log.info("removing %d superseded or unfinished image(s): %s", len(doomed),
                 ", ".join(map(str, doomed)))
        containers.delete_images(conn, doomed)
    return missing


def write_position(conn: Connection, dataset_id: int, pos: Position, spec, new: images.NewImage,
                   tags, decoders: int, on_plane: Callable[[int], None] | None
                   ) -> images.WrittenImage:
    """Decode a position's planes with ``decoders`` threads, a bounded number ahead,
    and write them into the image ``new``."""
    window = prefetch_window(decoders, max(1, spec.nbytes // spec.n_planes))
    stream = ordered_map(pos.read_plane, spec.sources, decoders, window)
    try:
        return _write_or_remove(conn, dataset_id, spec, stream, tags, on_plane, new)
    finally:
        stream.close()


def _write_or_remove(conn: Connection, dataset_id: int, spec, planes, tags,
                     on_plane: Callable[[int], None] | None,
                     new: images.NewImage) -> images.WrittenImage:
    """:func:`images.write`; where a source plane cannot be read the new image can
    never be finished, so it goes at once (any older copy stays, untouched)."""
    try:
        return images.write(conn, dataset_id, spec, planes, tags, on_plane, new)
    except InputError:
        with contextlib.suppress(Exception):
            containers.delete_images(conn, [new.image_id])
        raise
    except Exception as exc:
        err = conn.translate(exc)
        # A server error (not a lost connection) on an image that is no longer there:
        # someone deleted it under this run; say so rather than the server's words.
        if type(err) is OmeroError and images.is_gone(conn, new.image_id):
            raise images.gone(new.image_id, spec.name) from None
        raise


def upload_position(pos: Position, spec, new: images.NewImage,
                    dataset_id: int, tags, decoders: int, semaphore: str,
                    max_leases: int) -> tuple[int, int, int]:
    """One position's pixels and metadata, as a Dask task on a worker joined to the
    coordinator's session; (image id, planes sent, pixel calls).

    A task may run more than once: an image already complete is left as it is;
    one a dead attempt began (``writing``) has pixels OMERO now opens read-only,
    so a new image is made for this attempt (the reconcile pass removes the
    other).
    """
    import distributed

    from .engine import worker_connection

    conn = worker_connection()
    with distributed.Semaphore(max_leases=max_leases, name=semaphore):
        status = images.source_status(conn, new)
        if status == "complete":
            return new.image_id, 0, 0
        if status != "incomplete":
            new = images.create_image(conn, dataset_id, spec, identity=new.identity)
        images.mark_writing(conn, new, spec.fingerprint)
        written = write_position(conn, dataset_id, pos, spec, new, tags, decoders, None)
    return written.image_id, spec.n_planes, written.pixel_calls


def annotation_digest(metadata: ExperimentMetadata | None) -> str:
    """A hash of what the dataset's annotations say (key-value pairs, tags, each
    table's rows and each attached file's bytes; not the provenance, which holds a
    time): when it changes, the experiment's metadata is a new version."""
    doc: dict = {"kvps": [], "tags": [], "tables": {}, "files": {}}
    if metadata is not None:
        doc["kvps"] = [list(p) for p in metadata.kvps]
        doc["tags"] = list(metadata.tags)
        for name, df in metadata.tables.items():
            doc["tables"][name] = hashlib.sha1(
                df.to_csv(index=False).encode()).hexdigest()
        for path in metadata.attachments:
            digest = hashlib.sha1()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            doc["files"][Path(path).name] = digest.hexdigest()
    return hashlib.sha1(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def annotate_dataset(conn: Connection, dataset_id: int, exp: Experiment,
                     metadata: ExperimentMetadata | None, provenance: bool) -> None:
    """Description, tags, key-value pairs, tables, raw files and provenance on
    the dataset, once: a marker annotation records that it was done, with a hash
    of their content and the ids of what it wrote.

    After an interrupted first run, only what is missing is added: a namespace's
    map, a tag, a table or a file already there is neither added nor linked again,
    and a table an interrupted run made but never annotated is removed.  Where the
    metadata changed since (a log that grew, a new table), the new set is written
    first, then the marker, and only then is the old set removed.  Copies of our
    own annotations that earlier races left are removed too (the oldest kept).
    Call under the dataset's claim.
    """
    present = queries.annotations_of(conn, "Dataset", dataset_id)
    ours, kvps = _what_we_write(metadata)
    doomed = duplicate_annotations(present, ours)
    if doomed:
        log.info("removing %d duplicated dataset annotation(s): %s", len(doomed),
                 ", ".join(str(a.id) for a in doomed))
        containers.delete_annotations(conn, doomed)
        gone = {a.id for a in doomed}
        present = [a for a in present if a.id not in gone]
    digest = annotation_digest(metadata)
    marker = next((a for a in present if a.kind == "MapAnnotation" and a.ns == SOURCE_NS),
                  None)
    if marker is not None:
        facts = dict(marker.pairs)
        if facts.get("Content") in (None, digest):  # up to date (or from before hashes)
            return
        listed = {int(x) for x in facts.get("Annotations", "").split(",") if x.isdigit()}
        # Ours but in no marker's list: what a run killed mid-replacement wrote.
        leftovers = [a for a in present if a.id not in listed and a.id != marker.id
                     and _ours(a, ours, kvps)]
        if leftovers:
            containers.delete_annotations(conn, leftovers)
        new_ids = _write_dataset_annotations(conn, dataset_id, exp, metadata, provenance, [],
                                             ours, kvps)
        _save_marker(conn, dataset_id, digest, new_ids)
        old = [a for a in present if a.id == marker.id
               or (a.id in listed and a.kind != "TagAnnotation")]
        containers.delete_annotations(conn, old)
        log.warning("dataset %d: the experiment's metadata changed since it was uploaded; "
                    "its annotations were replaced", dataset_id)
        return
    orphans = queries.orphan_tables(conn, dataset_id)
    if orphans:
        log.info("removing %d table file(s) an interrupted run left unannotated: %s",
                 len(orphans), ", ".join(map(str, orphans)))
        containers.delete_files(conn, orphans)
    new_ids = _write_dataset_annotations(conn, dataset_id, exp, metadata, provenance, present,
                                         ours, kvps)
    _save_marker(conn, dataset_id, digest, new_ids)


def _what_we_write(metadata: ExperimentMetadata | None
                   ) -> tuple[set[str], list[tuple[str, ...]]]:
    """The names of the tables and files this upload attaches, and its key-value pairs."""
    if metadata is None:
        return set(), []
    names = set(metadata.tables) | {Path(p).name for p in metadata.attachments}
    return names, [tuple(p) for p in metadata.kvps]


def _ours(ann: queries.AnnotationInfo, file_names: set[str],
          kvps: list[tuple[str, ...]]) -> bool:
    """An annotation this upload writes on a dataset (never a user's own)."""
    if ann.kind == "MapAnnotation":
        return ann.ns == PROVENANCE_NS or (
            ann.ns == CLIENT_MAP_NS and [tuple(p) for p in ann.pairs] == kvps)
    return (ann.kind == "FileAnnotation" and ann.ns in (ATTACHMENT_NS, BULK_ANNOTATIONS_NS)
            and ann.text in file_names)


def _write_dataset_annotations(conn: Connection, dataset_id: int, exp: Experiment,
                               metadata: ExperimentMetadata | None, provenance: bool,
                               present: list[queries.AnnotationInfo], names: set[str],
                               kvps: list[tuple[str, ...]]) -> list[int]:
    """Write what is not in ``present``; return the ids of ours now on the dataset
    (tags excluded: they are shared).  ``names`` and ``kvps``: :func:`_what_we_write`."""
    kept = [a.id for a in present if _ours(a, names, kvps)]
    namespaces = {a.ns for a in present if a.kind == "MapAnnotation"}
    files = {a.text for a in present if a.kind == "FileAnnotation"}
    groups = []
    if metadata and metadata.kvps:
        groups.append((metadata.kvps, CLIENT_MAP_NS))
    if provenance:
        groups.append((provenance_pairs(exp, action="Upload"), PROVENANCE_NS))
    refs = anns.new_maps(conn, [(pairs, ns) for pairs, ns in groups if ns not in namespaces])
    written = [r.id for r in refs]
    if metadata and metadata.tags:
        refs += anns.ensure_tags(conn, metadata.tags)
    anns.link_annotations(conn, "Dataset", dataset_id, refs)
    if metadata:
        with tempfile.TemporaryDirectory() as tmp:
            for name, df in metadata.tables.items():
                if name not in files:
                    written.append(anns.attach_table(conn, "Dataset", dataset_id, name, df,
                                                     Path(tmp)).id)
        for path in metadata.attachments:
            if Path(path).name not in files:
                written.append(anns.attach_file(conn, "Dataset", dataset_id, Path(path),
                                                description=Path(path).name).id)
    return kept + written


def _save_marker(conn: Connection, dataset_id: int, digest: str, ids: list[int]) -> None:
    marker = anns.new_maps(conn, [(
        [("Dataset annotations", "complete"),
         ("Time", datetime.now(timezone.utc).isoformat(timespec="seconds")),
         ("Content", digest), ("Annotations", ",".join(map(str, sorted(ids))))],
        SOURCE_NS)])
    anns.link_annotations(conn, "Dataset", dataset_id, marker, new_target=True)


def duplicate_annotations(present: list[queries.AnnotationInfo], file_names: set[str]
                          ) -> list[queries.AnnotationInfo]:
    """Our dataset annotations that repeat an older one (races of earlier versions):
    our own namespaces' maps (one each per dataset), key-value maps of identical
    content, and files or tables of a name this upload writes.  A user's own
    annotations, even in the same namespaces, are never matched."""
    seen: set[tuple] = set()
    doomed = []
    for ann in sorted(present, key=lambda a: a.id):
        if ann.kind == "MapAnnotation" and ann.ns in (SOURCE_NS, PROVENANCE_NS):
            key: tuple | None = (ann.kind, ann.ns)
        elif ann.kind == "MapAnnotation" and ann.ns == CLIENT_MAP_NS:
            key = (ann.kind, ann.ns, tuple(ann.pairs))
        elif (ann.kind == "FileAnnotation" and ann.ns in (ATTACHMENT_NS, BULK_ANNOTATIONS_NS)
              and ann.text in file_names):
            key = (ann.kind, ann.ns, ann.text)
        else:
            key = None
        if key is None:
            continue
        if key in seen:
            doomed.append(ann)
        seen.add(key)
    return doomed


def upload_experiment(
    conn: Connection,
    exp: Experiment,
    metadata: ExperimentMetadata | None,
    options: UploadOptions,
    processor: ImageProcessor | None = None,
    on_plane: Callable[[int], None] | None = None,
) -> UploadResult:
    """Find or create the project and dataset, annotate them, upload the images.

    Args:
        conn: An open connection (:func:`pyomero_upload.connect`); left open.
        exp: The experiment, discovered (and probed).
        metadata: Its metadata (None: images without annotations).
        options: The dataset, project and how to upload.
        processor: The image processor (default :class:`DefaultImageProcessor`).
        on_plane: Called with the byte count of each plane sent.

    Returns:
        What was created, replaced and skipped, with the ids (``to_dict()``
        is the ``--json`` report).

    Raises:
        OmeroError: The server or the connection failed (any omero-py/Ice error).
        PluginError: A custom image processor failed with anything else.
    """
    start = time.perf_counter()
    project_name = options.project or (metadata.project if metadata else None)
    result = UploadResult(dry_run=options.dry_run, dataset_name=options.dataset,
                          project_name=project_name, web_url=options.web_url)
    project_id = None
    try:
        if options.dataset_id is not None:
            name = queries.dataset_name(conn, options.dataset_id)
            if name is None:
                raise UsageError(f"--dataset-id {options.dataset_id}: no such dataset that "
                                 "this user can read")
            dataset_id: int | None = options.dataset_id
            result.dataset_name = name
        else:
            if project_name:
                project_id, created = containers.ensure_project(conn, project_name,
                                                                options.dry_run)
                result.project_id = project_id
                if created:
                    log.info("project %s: %s", project_name,
                             "would be created" if options.dry_run else "created")
            description = metadata.description if metadata else ""
            dataset_id, created = containers.ensure_dataset(conn, options.dataset, project_id,
                                                            description, options.dry_run)
        if dataset_id is None:  # dry run, dataset absent: everything would be created
            units = ([(p.name, p.name) for p in exp.positions] if options.hypercube
                     else [(unit_identity(exp, p, f), p.name) for p in exp.positions
                           for f in exp.plane_paths(p) if f])
            result.created = [name for name, _ in units]
            for name, pos_name in units:
                result.positions.setdefault(name, pos_name)
            result.seconds = time.perf_counter() - start
            return result
        result.dataset_id = dataset_id
    except Exception as exc:
        raise (conn.translate(exc) or exc) from None
    if options.dry_run:
        try:
            remove_orphan_images(conn, dataset_id, dry_run=True)
        except Exception as exc:
            raise (conn.translate(exc) or exc) from None
        _process(conn, exp, metadata, dataset_id, options, result, processor, on_plane)
    else:
        # One writer per dataset, across machines: the claim is OMERO's own state.
        try:
            claim = DatasetClaim(conn, dataset_id, wait_s=options.wait_s)
            claim.__enter__()
        except Exception as exc:
            raise (conn.translate(exc) or exc) from None
        try:
            try:
                annotate_dataset(conn, dataset_id, exp, metadata, options.provenance)
                remove_orphan_images(conn, dataset_id)
            except Exception as exc:
                raise (conn.translate(exc) or exc) from None
            _process(conn, exp, metadata, dataset_id, options, result, processor, on_plane)
        finally:
            claim.__exit__(None, None, None)
    result.seconds = time.perf_counter() - start
    return result


def remove_orphan_images(conn: Connection, dataset_id: int, dry_run: bool = False) -> list[int]:
    """Remove the images an interrupted run began for the dataset but never linked
    to it (:func:`queries.orphan_images`); under the dataset's claim, no other run
    can be making one.  Return their ids."""
    orphans = queries.orphan_images(conn, dataset_id)
    if orphans:
        log.info("%s %d image(s) an interrupted run left outside dataset %d: %s",
                 "would remove" if dry_run else "removing", len(orphans), dataset_id,
                 ", ".join(map(str, orphans)))
        if not dry_run:
            containers.delete_images(conn, orphans)
    return orphans


def _process(conn: Connection, exp: Experiment, metadata: ExperimentMetadata | None,
             dataset_id: int, options: UploadOptions, result: UploadResult,
             processor: ImageProcessor | None,
             on_plane: Callable[[int], None] | None) -> None:
    """Run the image processor; its failures as OMERO errors or as the plug-in's."""
    processor = processor or DefaultImageProcessor()
    try:
        processor.process(conn, exp, metadata,
                          DatasetRef(dataset_id, result.dataset_name or options.dataset),
                          options, result, on_plane)
    except (OmeroError, PluginError):
        raise
    except Exception as exc:
        server = conn.translate(exc)
        if server is not None:
            raise server from None
        if type(processor) is DefaultImageProcessor:
            raise  # our own bug: keep the traceback
        name = type(processor).__name__
        log.debug("image processor %s failed", name, exc_info=True)
        raise PluginError(f"image processor {name}",
                          f"failed: {type(exc).__name__}: {exc} (-v shows the traceback)"
                          ) from exc


__all__ = ["DatasetRef", "DefaultImageProcessor", "ImageProcessor", "UploadOptions",
           "UploadResult", "upload_experiment"]
