"""The double's IUpdate and :func:`save_graph`, the save every service uses, with
OMERO's checks: permissions, optimistic locking, not-null columns and unique links."""

from __future__ import annotations

import copy
from typing import Any

import omero
import omero.api
import omero.model as M
from omero.rtypes import rint, rlong, unwrap

from ._base import Servant, implements
from .model import (
    ENUMS,
    LINK_REQUIRED,
    REQUIRED,
    Database,
    fields,
    kind_of,
    plain,
    proxy,
    shallow,
)


@implements(omero.api.IUpdate)
class UpdateService(Servant):
    def saveObject(self, obj, current):
        self.save([obj])

    def saveAndReturnObject(self, obj, current):
        return self.save([obj])[0]

    def saveArray(self, graph, current):
        self.save(graph)

    def saveCollection(self, graph, current):
        self.save(graph)

    def saveAndReturnArray(self, graph, current):
        return self.save(graph)

    def saveAndReturnIds(self, graph, current):
        return [unwrap(o.id) for o in self.save(graph)]

    def deleteObject(self, row, current):
        raise omero.ApiUsageException(message="IUpdate.deleteObject: use Delete2")

    def save(self, roots: list[Any]) -> list[Any]:
        return save_graph(self, roots)


def _walk(roots: list[Any]) -> list[Any]:
    """Every loaded model object reachable from ``roots`` (references and loaded
    collections), parents before children where the graph says so."""
    seen: dict[int, Any] = {}
    stack = list(reversed(roots))
    while stack:
        obj = stack.pop()
        if obj is None or id(obj) in seen or not obj.isLoaded():
            continue
        seen[id(obj)] = obj
        for key, value in vars(obj).items():
            if key == "_details":
                continue
            if key.endswith("Seq") and getattr(obj, key[:-3] + "Loaded", False):
                stack += [v for v in value if isinstance(v, M.IObject)]
            elif isinstance(value, M.IObject):
                stack.append(value)
    return list(seen.values())


def save_graph(svc: Servant, roots: list[Any]) -> list[Any]:
    """IUpdate's save: the checks OMERO makes, then new rows or updated rows."""
    if any(r is None for r in roots):
        raise omero.ApiUsageException(message="null object in graph")
    db, s = svc.db, svc.session
    event = db.new_event()
    objs = _walk(roots)
    ids: dict[int, tuple[str, int]] = {}
    resolved_enums: dict[int, Any] = {}
    for obj in objs:
        kind = kind_of(obj)
        if kind in ENUMS and obj.id is None:
            value = unwrap(obj.value)
            match = next((o for o in db.of_kind(kind) if unwrap(o.value) == value), None)
            if match is None:
                raise omero.ValidationException(message=f"no {kind} with value {value!r}")
            resolved_enums[id(obj)] = match
            continue
        if kind in ENUMS:
            # A loaded enum in the graph (a Pixels fetched with its pixelsType) is a
            # reference to a global row; changing it needs admin rights (BasicACLVoter
            # allowUpdate on IGlobal), leaving it unchanged is no update at all.
            match = db.get(kind, unwrap(obj.id))
            if match is None:
                raise omero.ValidationException(
                    message=f"No row with the given identifier exists: [{kind}#{unwrap(obj.id)}]")
            if unwrap(obj.value) not in (None, unwrap(match.value)) and not s.is_admin():
                raise omero.SecurityViolation(message=f"Cannot update {kind}:{unwrap(obj.id)}")
            resolved_enums[id(obj)] = match
            continue
        if obj.id is None:
            ids[id(obj)] = (kind, next(db.ids))
            continue
        stored = db.get(kind, unwrap(obj.id))
        if stored is None or not svc.visible(stored):
            raise omero.ValidationException(
                message=f"No row with the given identifier exists: [{kind}#{unwrap(obj.id)}]")
        # Only the owner (or an admin) may change a row (omero-server
        # ome/security/basic/BasicACLVoter.java allowUpdate).  The check runs in
        # ACLEventListener.onPreUpdate, a Hibernate pre-update event, and Hibernate
        # updates only dirty rows: an unchanged object in the graph (an enum or another
        # user's row loaded with join fetch) is no update and passes.
        dirty = {k: plain(v) for k, v in fields(obj).items()} != {
            k: plain(v) for k, v in fields(stored).items()}
        if dirty and unwrap(stored.details.owner.id) != s.user_id and not s.is_admin():
            raise omero.SecurityViolation(message=f"Cannot update {kind}:{unwrap(obj.id)}")
        # Optimistic lock: a client's update event must be the row's (omero-server
        # src/main/java/ome/security/basic/OmeroInterceptor.java, "update event").
        incoming = obj.details.updateEvent if obj.details is not None else None
        if incoming is not None and unwrap(incoming.id) != unwrap(stored.details.updateEvent.id):
            raise omero.OptimisticLockException(message=(
                f"You are not authorized to change the update event for {kind}:"
                f"{unwrap(obj.id)} from {unwrap(stored.details.updateEvent.id)} to "
                f"{unwrap(incoming.id)}\nYou may need to reload the object before continuing."))
        ids[id(obj)] = (kind, unwrap(obj.id))

    def ref(value: Any) -> Any:
        if id(value) in resolved_enums:
            return proxy(resolved_enums[id(value)])
        if id(value) in ids:
            kind, oid = ids[id(value)]
            return type(value)(oid, False)
        target = db.get(kind_of(value), unwrap(value.id)) if value.id is not None else None
        if target is None or not svc.visible(target):
            raise omero.ValidationException(
                message=f"object references an unsaved or unreadable {kind_of(value)}")
        return proxy(target)

    rows = []
    for obj in objs:
        if id(obj) in resolved_enums:
            continue
        kind, oid = ids[id(obj)]
        row = copy.copy(obj)
        for key, value in list(vars(row).items()):
            if key.endswith("Seq"):
                setattr(row, key, [])
                setattr(row, key[:-3] + "Loaded", False)
            elif key != "_details" and isinstance(value, M.IObject):
                setattr(row, key, ref(value))
        row.setId(rlong(oid))
        row._loaded = True
        stored = db.objects.get((kind, oid))
        if stored is None:
            details = M.DetailsI()
            details.setOwner(M.ExperimenterI(s.user_id, False))
            details.setGroup(M.ExperimenterGroupI(s.group_id, False))
            details.setPermissions(copy.copy(db.get("ExperimenterGroup", s.group_id)
                                             .details.permissions))
            details.setCreationEvent(M.EventI(event, False))
            details.setUpdateEvent(M.EventI(event, False))
        else:
            details = copy.copy(stored.details)
            changed = {k: plain(v) for k, v in fields(row).items()} != {
                k: plain(v) for k, v in fields(stored).items()}
            if changed:  # UpdateEventListener.java: only dirty rows get a new event
                details.setUpdateEvent(M.EventI(event, False))
        row._details = details
        row._version = rint(0) if stored is None else stored._version
        _not_null(kind, row)
        rows.append(((kind, oid), row))
    _unique_links(db, rows)
    for key, row in rows:
        db.objects[key] = row
    saved = {id(o): r for o, (_, r) in zip([o for o in objs if id(o) not in resolved_enums],
                                           rows, strict=True)}
    return [shallow(saved[id(r)]) if id(r) in saved else shallow(resolved_enums[id(r)])
            for r in roots]


def _not_null(kind: str, row: Any) -> None:
    required = LINK_REQUIRED if kind.endswith("Link") else REQUIRED.get(kind, ())
    for name in required:
        if getattr(row, "_" + name, None) is None:
            # A NOT NULL column left empty: the database refuses the insert.
            raise omero.ValidationException(message=(
                f"not-null property references a null or transient value: "
                f"ome.model.{kind}.{name}"))


def _unique_links(db: Database, rows: list[tuple[tuple[str, int], Any]]) -> None:
    """Every link table has ``<table>_parent_key UNIQUE (parent, child, owner_id)``
    (OMERO's schema DDL, sql/psql/OMERO*/psql-footer.sql, generated from omero-model)."""
    batch = [(k, r) for k, r in rows if k[0].endswith("Link")]
    for (kind, oid), row in batch:
        key = (unwrap(row.parent.id), unwrap(row.child.id), unwrap(row.details.owner.id))
        others = [o for (k, i), o in db.objects.items() if k == kind and i != oid]
        others += [r for (k, i), r in batch if k == kind and i != oid]
        for other in others:
            if (unwrap(other.parent.id), unwrap(other.child.id),
                    unwrap(other.details.owner.id)) == key:
                raise omero.ValidationException(message=(
                    f"duplicate key value violates unique constraint "
                    f"\"{kind.lower()}_parent_key\": parent={key[0]} child={key[1]} "
                    f"owner={key[2]}"))
