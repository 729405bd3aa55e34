"""Read-only questions to OMERO (HQL through IQuery).  Answers are ids and
small dataclasses, never omero objects.

Every query the package sends is a constant here, so a test double can check
that it knows each one.  Owner filters use the logged-in user's id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..model import SOURCE_NS
from ._ice import params, unwrap

if TYPE_CHECKING:
    from .connection import Connection

Q_PROJECT = (
    "select p from Project p where p.name = :name and p.details.owner.id = :uid order by p.id"
)
Q_DATASET_IN_PROJECT = (
    "select d from Dataset d join d.projectLinks l where d.name = :name "
    "and l.parent.id = :pid and d.details.owner.id = :uid order by d.id"
)
Q_DATASET = (
    "select d from Dataset d where d.name = :name and d.details.owner.id = :uid order by d.id"
)
Q_DATASET_BY_ID = "select d from Dataset d where d.id = :did"
Q_TAG = (
    "select t from TagAnnotation t where t.textValue = :text and t.details.owner.id = :uid "
    "order by t.id"
)
Q_IMAGE = "select i from Image i where i.id = :iid"
Q_IMAGES_OF_DATASET = (
    "select i from Image i join i.datasetLinks l where l.parent.id = :did order by i.id"
)
Q_SOURCE_ANNOTATIONS = (
    "select l from ImageAnnotationLink l join fetch l.child a where l.parent.id in (:ids) "
    "and a.ns = :ns"
)
Q_PIXELS_TYPE = "select t from PixelsType t where t.value = :value"
Q_PIXELS = (
    "select p from Pixels p join fetch p.pixelsType join fetch p.channels c "
    "join fetch c.logicalChannel where p.image.id = :iid"
)
Q_ANNOTATION_LINKS = {
    kind: f"select l from {kind}AnnotationLink l join fetch l.child a where l.parent.id = :pid"
    for kind in ("Dataset", "Image")
}
Q_MAP_ANNOTATION = "select a from MapAnnotation a where a.id = :id"
#: What an image's description is from ``IPixels.createImage`` until its pixels are
#: in (then it gets the spec's own): the dataset it is being made for, so that an
#: image a kill left before its link is found by the next run of that dataset.
PENDING_IMAGE = "pyomero-upload: being created for dataset {dataset_id}"
Q_PENDING_IMAGES = (
    "select i from Image i where i.description = :tok and i.details.owner.id = :uid "
    "order by i.id"
)
Q_DATASET_LINKS_OF_IMAGES = "select l from DatasetImageLink l where l.child.id in (:ids)"
#: Where this project's OMERO.tables files live (OriginalFile.path), per dataset: a
#: table a kill left before its annotation is found by the next run of that dataset.
TABLE_PATH = "pyomero-upload/dataset-{dataset_id}"
Q_FILES_AT_PATH = (
    "select f from OriginalFile f where f.path = :path and f.details.owner.id = :uid "
    "order by f.id"
)
Q_FILES_BY_CONTENT = (
    "select f from OriginalFile f where f.name = :name and f.hash = :hash "
    "and f.details.owner.id = :uid order by f.id"
)
Q_FILE_ANNOTATIONS_OF_FILES = "select a from FileAnnotation a where a.file.id in (:ids)"


@dataclass
class ExistingImage:
    """An image already in the dataset, with the state we recorded on it."""

    id: int
    name: str
    fingerprint: str | None
    complete: bool
    #: What the image is the upload of (a position, or a plane file's path in the
    #: experiment); None for images uploaded before identities were recorded.
    source: str | None = None
    #: When it was marked complete (ISO 8601, UTC); None before this was recorded.
    completed: str | None = None


@dataclass
class AnnotationInfo:
    """One annotation linked to an object."""

    id: int
    kind: str  # "TagAnnotation", "MapAnnotation", "FileAnnotation", ...
    ns: str | None
    text: str | None = None  # a tag's text, a file annotation's description
    pairs: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class PixelsInfo:
    """An image's pixels: sizes (X, Y, Z, C, T), type and channel names."""

    id: int
    image_id: int
    size: tuple[int, int, int, int, int]
    pixel_type: str
    channels: list[str | None]


def find_projects(conn: Connection, name: str) -> list[int]:
    """Ids of the user's projects of this name, oldest first."""
    found = conn.query.findAllByQuery(Q_PROJECT, params(name=name, uid=conn.user_id))
    return sorted(p.id.val for p in found)


def find_project(conn: Connection, name: str) -> int | None:
    """The id of the user's oldest project of this name, or None."""
    found = find_projects(conn, name)
    return found[0] if found else None


def find_datasets(conn: Connection, name: str, project_id: int | None = None) -> list[int]:
    """Ids of the user's datasets of this name (in the project), oldest first."""
    if project_id is not None:
        found = conn.query.findAllByQuery(
            Q_DATASET_IN_PROJECT, params(name=name, pid=project_id, uid=conn.user_id))
    else:
        found = conn.query.findAllByQuery(Q_DATASET, params(name=name, uid=conn.user_id))
    return sorted(d.id.val for d in found)


def find_dataset(conn: Connection, name: str, project_id: int | None = None) -> int | None:
    """The id of the user's oldest dataset of this name (in the project), or None."""
    found = find_datasets(conn, name, project_id)
    return found[0] if found else None


def dataset_name(conn: Connection, dataset_id: int) -> str | None:
    """The name of a dataset the user can read, or None where there is none."""
    found = conn.query.findAllByQuery(Q_DATASET_BY_ID, params(did=dataset_id))
    return unwrap(found[0].name) if found else None


def find_tag(conn: Connection, text: str) -> int | None:
    """The id of the user's oldest tag with this text, or None."""
    found = conn.query.findAllByQuery(Q_TAG, params(text=text, uid=conn.user_id))
    return found[0].id.val if found else None


def existing_images(conn: Connection, dataset_id: int) -> list[ExistingImage]:
    """Images in the dataset with the fingerprint and state we recorded on them."""
    images = conn.query.findAllByQuery(Q_IMAGES_OF_DATASET, params(did=dataset_id))
    if not images:
        return []
    links = conn.query.findAllByQuery(
        Q_SOURCE_ANNOTATIONS, params(ids=[i.id.val for i in images], ns=SOURCE_NS))
    facts = {link.parent.id.val: {nv.name: nv.value for nv in link.child.getMapValue()}
             for link in links}
    out = []
    for image in images:
        pairs = facts.get(image.id.val, {})
        out.append(ExistingImage(image.id.val, unwrap(image.name),
                                 pairs.get("Source fingerprint"),
                                 pairs.get("Status") == "complete", pairs.get("Source"),
                                 pairs.get("Completed")))
    return out


def orphan_images(conn: Connection, dataset_id: int) -> list[int]:
    """Images this user began for the dataset that never got into it (a kill between
    ``createImage`` and the link): they carry :data:`PENDING_IMAGE` and no link."""
    found = conn.query.findAllByQuery(
        Q_PENDING_IMAGES, params(tok=PENDING_IMAGE.format(dataset_id=dataset_id),
                                 uid=conn.user_id))
    ids = [i.id.val for i in found]
    if not ids:
        return []
    linked = {lk.child.id.val for lk in
              conn.query.findAllByQuery(Q_DATASET_LINKS_OF_IMAGES, params(ids=ids))}
    return [i for i in ids if i not in linked]


def unreferenced_files(conn: Connection, found: Any) -> list[Any]:
    """Of these OriginalFiles, those no FileAnnotation points at."""
    files = list(found)
    if not files:
        return []
    used = {a.file.id.val for a in conn.query.findAllByQuery(
        Q_FILE_ANNOTATIONS_OF_FILES, params(ids=[f.id.val for f in files]))}
    return [f for f in files if f.id.val not in used]


def orphan_tables(conn: Connection, dataset_id: int) -> list[int]:
    """Ids of OMERO.tables files made for the dataset that no annotation holds (a kill
    between the table's close and its annotation)."""
    found = conn.query.findAllByQuery(
        Q_FILES_AT_PATH, params(path=TABLE_PATH.format(dataset_id=dataset_id),
                                uid=conn.user_id))
    return [f.id.val for f in unreferenced_files(conn, found)]


def unreferenced_upload(conn: Connection, name: str, sha1: str) -> int | None:
    """An OriginalFile of this user with this name and content that no annotation
    holds (a kill between its upload and its annotation): reused, not uploaded again."""
    found = conn.query.findAllByQuery(Q_FILES_BY_CONTENT,
                                      params(name=name, hash=sha1, uid=conn.user_id))
    free = unreferenced_files(conn, found)
    return free[0].id.val if free else None


def _annotation_info(ann: Any) -> AnnotationInfo:
    kind = type(ann).__name__.removesuffix("I")
    text = unwrap(ann.getTextValue()) if kind == "TagAnnotation" else None
    if kind == "FileAnnotation":
        text = unwrap(ann.getDescription())
    pairs = ([(nv.name, nv.value) for nv in ann.getMapValue()] if kind == "MapAnnotation"
             else [])
    return AnnotationInfo(ann.id.val, kind, unwrap(ann.getNs()), text, pairs)


def annotations_of(conn: Connection, kind: str, object_id: int) -> list[AnnotationInfo]:
    """The annotations linked to a Dataset or Image, oldest link first."""
    links = conn.query.findAllByQuery(Q_ANNOTATION_LINKS[kind], params(pid=object_id))
    return [_annotation_info(link.child) for link in sorted(links, key=lambda lk: lk.id.val)]


def pixels_of(conn: Connection, image_id: int) -> PixelsInfo | None:
    """The image's pixels, freshly loaded (never reuse one from before a pixel save)."""
    px = conn.query.findByQuery(Q_PIXELS, params(iid=image_id))
    if px is None:
        return None
    size = tuple(unwrap(getattr(px, f"size{d}")) for d in "XYZCT")
    names = [unwrap(ch.getLogicalChannel().name) for ch in px.copyChannels()]
    return PixelsInfo(px.id.val, image_id, size, unwrap(px.pixelsType.value), names)


def dataset_summary(conn: Connection, dataset_id: int) -> dict[str, Any]:
    """What a dataset holds now: images with sizes and channels, annotation counts."""
    images = conn.query.findAllByQuery(Q_IMAGES_OF_DATASET, params(did=dataset_id))
    out = []
    for image in images:
        px = pixels_of(conn, image.id.val)
        out.append({"id": image.id.val, "name": unwrap(image.name),
                    "size": list(px.size) if px else None,
                    "channels": px.channels if px else []})
    kinds: dict[str, int] = {}
    for ann in annotations_of(conn, "Dataset", dataset_id):
        kinds[ann.kind] = kinds.get(ann.kind, 0) + 1
    return {"dataset_id": dataset_id, "images": out, "annotations": kinds}


__all__ = ["AnnotationInfo", "ExistingImage", "PixelsInfo", "annotations_of", "dataset_summary",
           "dataset_name", "existing_images", "find_dataset", "find_datasets", "find_project",
           "find_projects", "find_tag", "orphan_images", "orphan_tables", "pixels_of",
           "unreferenced_upload"]
