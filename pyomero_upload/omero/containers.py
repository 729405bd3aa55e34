"""Projects and datasets: find or create (by the user's own names), and
deleting images.  Ids in, ids out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import UsageError
from . import _ice
from ._ice import rstring
from .queries import AnnotationInfo, find_datasets, find_project, find_projects

if TYPE_CHECKING:
    from .connection import Connection


def ensure_project(conn: Connection, name: str, dry_run: bool = False) -> tuple[int | None, bool]:
    """The user's project of this name, created if absent.

    Returns:
        (project id, created).  In a dry run an absent project is (None, True).
    """
    project_id = find_project(conn, name)
    if project_id is not None or dry_run:
        return project_id, project_id is None
    p = _ice.omero.model.ProjectI()
    p.setName(rstring(name))
    project_id = conn.update.saveAndReturnObject(p).id.val
    # Two runs that found none both made one: the oldest is kept by both, and this
    # run's own (still empty: nothing is put in it before this check) removed.
    found = find_projects(conn, name)
    if found and found[0] != project_id:
        _delete(conn, "Project", project_id)
        return found[0], False
    return project_id, True


def ensure_dataset(conn: Connection, name: str, project_id: int | None = None,
                   description: str = "", dry_run: bool = False) -> tuple[int | None, bool]:
    """The user's dataset of this name (in the project), created if absent.

    A new dataset in a project is saved together with its link (one save of the
    link with a new child), so a kill never leaves it outside the project.  Where
    two runs created it at once, the oldest is kept and this run's own, still
    empty, removed.

    Returns:
        (dataset id, created).  In a dry run an absent dataset is (None, True).

    Raises:
        UsageError: Several datasets of this name exist (their ids are listed;
            choose one with ``--dataset-id``).
    """
    found = find_datasets(conn, name, project_id)
    if len(found) > 1:
        raise _ambiguous(name, found)
    if found or dry_run:
        return (found[0] if found else None), not found
    model = _ice.omero.model
    d = model.DatasetI()
    d.setName(rstring(name))
    if description:
        d.setDescription(rstring(description))
    if project_id is not None:
        link = model.ProjectDatasetLinkI()
        link.setParent(model.ProjectI(project_id, False))
        link.setChild(d)
        dataset_id = conn.update.saveAndReturnObject(link).child.id.val
    else:
        dataset_id = conn.update.saveAndReturnObject(d).id.val
    found = find_datasets(conn, name, project_id)
    if found and found[0] != dataset_id:  # another run made one first: use it
        _delete(conn, "Dataset", dataset_id)
        return found[0], False
    return dataset_id, True


def _delete(conn: Connection, kind: str, object_id: int) -> None:
    conn.client.submit(_ice.omero.cmd.Delete2(targetObjects={kind: [object_id]}),
                       loops=120, ms=500)


def _ambiguous(name: str, ids: Sequence[int]) -> UsageError:
    return UsageError(
        f"there are {len(ids)} datasets named {name!r} (ids {', '.join(map(str, ids))}); "
        "choose one with --dataset-id ID")


def delete_images(conn: Connection, ids: Sequence[int]) -> None:
    """Delete images with their pixels, links and own annotations (Delete2 graph)."""
    if not ids:
        return
    cmd = _ice.omero.cmd.Delete2(targetObjects={"Image": list(ids)})
    conn.client.submit(cmd, loops=120, ms=500)


def delete_annotations(conn: Connection, annotations: Sequence[AnnotationInfo]) -> None:
    """Delete annotations with their links (a FileAnnotation's file goes with it, as
    in OMERO's delete rules)."""
    targets: dict[str, list[int]] = {}
    for ann in annotations:
        targets.setdefault(ann.kind, []).append(ann.id)
    if targets:
        conn.client.submit(_ice.omero.cmd.Delete2(targetObjects=targets), loops=120, ms=500)


def delete_files(conn: Connection, ids: Sequence[int]) -> None:
    """Delete OriginalFiles (what no annotation holds any more)."""
    if ids:
        conn.client.submit(_ice.omero.cmd.Delete2(targetObjects={"OriginalFile": list(ids)}),
                           loops=120, ms=500)


__all__ = ["delete_annotations", "delete_files", "delete_images", "ensure_dataset",
           "ensure_project"]
