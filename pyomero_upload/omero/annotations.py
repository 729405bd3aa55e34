"""Annotations: tags, key-value maps, files and tables, and linking them.

Links are ``UNIQUE (parent, child, owner_id)`` in OMERO's schema (ome/openmicroscopy
sql/psql/*/schema.sql, generated from the model), so an annotation is never
linked twice to the same object: repeated tags are dropped and links that
already exist (a re-run after a partial upload) are skipped.
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import OmeroError
from ..model import ATTACHMENT_NS, BULK_ANNOTATIONS_NS
from . import _ice
from ._ice import params, rstring
from .queries import (
    Q_ANNOTATION_LINKS,
    Q_MAP_ANNOTATION,
    TABLE_PATH,
    find_tag,
    unreferenced_upload,
)

if TYPE_CHECKING:
    from .connection import Connection

log = logging.getLogger(__name__)

#: Bytes per RawFileStore.write in client.upload: omero-py's default is 1 KiB
#: (one remote call per KiB, omero/clients.py upload); 1 MiB is omero-py's own
#: write_stream/download default and far below the server's 64 MiB
#: Ice.MessageSizeMax.
UPLOAD_BLOCK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class AnnotationRef:
    """A saved annotation: its id and class ("TagAnnotation", "MapAnnotation", ...)."""

    id: int
    kind: str


def _ref(ann: Any) -> AnnotationRef:
    return AnnotationRef(ann.id.val, type(ann).__name__.removesuffix("I"))


def ensure_tags(conn: Connection, texts: Iterable[str]) -> list[AnnotationRef]:
    """One tag per distinct text: the user's existing tag reused, else created."""
    tags = []
    for text in dict.fromkeys(texts):  # a repeated name would be a second, duplicate link
        tag_id = find_tag(conn, text)
        if tag_id is None:
            tag = _ice.omero.model.TagAnnotationI()
            tag.setTextValue(rstring(text))
            tag_id = conn.update.saveAndReturnObject(tag).id.val
        tags.append(AnnotationRef(tag_id, "TagAnnotation"))
    return tags


def _map(pairs: Iterable[tuple[str, str]], ns: str) -> Any:
    ann = _ice.omero.model.MapAnnotationI()
    ann.setNs(rstring(ns))
    ann.setMapValue([_ice.omero.model.NamedValue(str(k), str(v)) for k, v in pairs])
    return ann


def new_maps(conn: Connection, groups: Sequence[tuple[Sequence[tuple[str, str]], str]]
             ) -> list[AnnotationRef]:
    """Save map annotations, one per (pairs, namespace) group, in one call."""
    anns = [_map(pairs, ns) for pairs, ns in groups if pairs]
    return [_ref(a) for a in conn.update.saveAndReturnArray(anns)] if anns else []


def set_map(conn: Connection, annotation_id: int, pairs: Sequence[tuple[str, str]]) -> None:
    """Replace a map annotation's pairs (reloaded first, so its version is current)."""
    ann = conn.query.findByQuery(Q_MAP_ANNOTATION, params(id=annotation_id))
    if ann is None:
        raise OmeroError(f"map annotation {annotation_id} has gone from the server")
    ann.setMapValue([_ice.omero.model.NamedValue(str(k), str(v)) for k, v in pairs])
    conn.update.saveAndReturnObject(ann)


def linked_ids(conn: Connection, kind: str, target_id: int) -> set[int]:
    """Ids of the annotations linked to a Dataset or Image."""
    links = conn.query.findAllByQuery(Q_ANNOTATION_LINKS[kind], params(pid=target_id))
    return {link.child.id.val for link in links}


def link_annotations(conn: Connection, kind: str, target_id: int,
                     annotations: Iterable[AnnotationRef], new_target: bool = False) -> int:
    """Link annotations to a Dataset or Image in one call; return how many were linked.

    Each annotation is linked once; ones already linked are skipped (unless
    ``new_target`` says the object was just created, when nothing can be).
    """
    model = _ice.omero.model
    wanted = list(dict.fromkeys(annotations))
    if wanted and not new_target:
        present = linked_ids(conn, kind, target_id)
        wanted = [a for a in wanted if a.id not in present]
    links = []
    for ann in wanted:
        link = getattr(model, f"{kind}AnnotationLinkI")()
        link.setParent(getattr(model, f"{kind}I")(target_id, False))
        link.setChild(getattr(model, f"{ann.kind}I")(ann.id, False))
        links.append(link)
    if links:
        conn.update.saveArray(links)
    return len(links)


def attach_file(conn: Connection, kind: str, target_id: int, path: Path, ns: str = ATTACHMENT_NS,
                description: str | None = None) -> AnnotationRef:
    """Upload a file as it is and attach it to a Dataset or Image.

    The annotation is saved with its link in one call, so no annotation is ever
    left unlinked.  A file of the same name and content (SHA-1, as
    ``client.upload`` records it) that an interrupted run uploaded but never
    annotated is reused rather than sent again.
    """
    mime = mimetypes.guess_type(path.name)[0] or "text/plain"
    file_id = unreferenced_upload(conn, path.name, conn.client.sha1(str(path)))
    if file_id is None:
        file_id = conn.retry(lambda: conn.client.upload(
            str(path), name=path.name, type=mime, block_size=UPLOAD_BLOCK_BYTES),
            f"uploading {path.name}", idempotent=False).id.val
    return _save_file_annotation(conn, kind, target_id, file_id, ns, description)


def _save_file_annotation(conn: Connection, kind: str, target_id: int, file_id: int, ns: str,
                          description: str | None) -> AnnotationRef:
    """A new FileAnnotation of the file, saved together with its link to the object."""
    model = _ice.omero.model
    ann = model.FileAnnotationI()
    ann.setFile(model.OriginalFileI(file_id, False))
    ann.setNs(rstring(ns))
    if description:
        ann.setDescription(rstring(description))
    link = getattr(model, f"{kind}AnnotationLinkI")()
    link.setParent(getattr(model, f"{kind}I")(target_id, False))
    link.setChild(ann)
    return _ref(conn.update.saveAndReturnObject(link).child)


def attach_table(conn: Connection, kind: str, target_id: int, name: str, df: Any,
                 fallback_dir: Path | None = None) -> AnnotationRef:
    """A DataFrame as an OMERO.table (typed columns) in the bulk-annotation namespace.

    Falls back to an attached HDF5 file where the server has no tables service.
    """
    grid = _ice.omero.grid
    resources = conn.sf.sharedResources()
    # The table's file sits under the dataset's own path, so that one a kill left
    # before its annotation is found, and removed, by the next run (orphan_tables).
    where = TABLE_PATH.format(dataset_id=target_id) if kind == "Dataset" else "pyomero-upload"
    table = (resources.newTable(1, f"{where}/{name}.h5") if resources.areTablesEnabled()
             else None)
    if table is None:
        if fallback_dir is None:
            raise OmeroError("the server has no OMERO.tables service")
        h5 = fallback_dir / f"{name}.h5"
        df.to_hdf(h5, key="table", format="table", mode="w", index=False)
        log.warning("no OMERO.tables service: table %s attached as an HDF5 file", name)
        return attach_file(conn, kind, target_id, h5, BULK_ANNOTATIONS_NS, description=name)
    try:
        columns = []
        for col in df.columns:
            values = df[col]
            title = str(col)
            if values.dtype.kind in "iu":
                columns.append(grid.LongColumn(title, "", [int(v) for v in values]))
            elif values.dtype.kind == "f":
                columns.append(grid.DoubleColumn(title, "", [float(v) for v in values]))
            elif values.dtype.kind == "b":
                columns.append(grid.BoolColumn(title, "", [bool(v) for v in values]))
            else:
                text = [str(v) for v in values]
                width = max([len(t.encode()) for t in text] + [1])
                columns.append(grid.StringColumn(title, "", width, text))
        table.initialize([_empty_like(c) for c in columns])
        table.addData(columns)
        original = table.getOriginalFile()
    finally:
        table.close()
    return _save_file_annotation(conn, kind, target_id, original.id.val, BULK_ANNOTATIONS_NS,
                                 name)


def _empty_like(column: Any) -> Any:
    grid = _ice.omero.grid
    if isinstance(column, grid.StringColumn):
        return grid.StringColumn(column.name, column.description, column.size, [])
    return type(column)(column.name, column.description, [])


__all__ = ["ATTACHMENT_NS", "BULK_ANNOTATIONS_NS", "AnnotationRef", "attach_file", "attach_table",
           "ensure_tags", "link_annotations", "linked_ids", "new_maps", "set_map"]
