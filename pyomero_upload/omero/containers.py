"""Projects and datasets: find or create (by the user's own names), and
deleting images.  Ids in, ids out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import _ice
from ._ice import rstring
from .queries import find_dataset, find_project

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
    return conn.update.saveAndReturnObject(p).id.val, True


def ensure_dataset(conn: Connection, name: str, project_id: int | None = None,
                   description: str = "", dry_run: bool = False) -> tuple[int | None, bool]:
    """The user's dataset of this name (in the project), created and linked if absent.

    Returns:
        (dataset id, created).  In a dry run an absent dataset is (None, True).
    """
    dataset_id = find_dataset(conn, name, project_id)
    if dataset_id is not None or dry_run:
        return dataset_id, dataset_id is None
    model = _ice.omero.model
    d = model.DatasetI()
    d.setName(rstring(name))
    if description:
        d.setDescription(rstring(description))
    dataset_id = conn.update.saveAndReturnObject(d).id.val
    if project_id is not None:
        link = model.ProjectDatasetLinkI()
        link.setParent(model.ProjectI(project_id, False))
        link.setChild(model.DatasetI(dataset_id, False))
        conn.update.saveAndReturnObject(link)
    return dataset_id, True


def delete_images(conn: Connection, ids: Sequence[int]) -> None:
    """Delete images with their pixels, links and own annotations (Delete2 graph)."""
    if not ids:
        return
    cmd = _ice.omero.cmd.Delete2(targetObjects={"Image": list(ids)})
    conn.client.submit(cmd, loops=120, ms=500)


__all__ = ["delete_images", "ensure_dataset", "ensure_project"]
