"""A small HQL interpreter for the query shapes this project, its notebooks and the
clients it is judged by (OMERO.web, BlitzGateway, ezomero) send.

Hibernate's grammar, as far as they use it (omero-server runs every string query
through Hibernate's HQL: omero-server ``ome/services/query/StringQuery.java``):

* ``[select [distinct] ITEM [as NAME], ...] from Kind [as] a [, Kind b]
  [[left [outer] | inner] join [fetch] a.path [as] b]... [where COND]
  [group by EXPR, ...] [having COND] [order by EXPR [asc|desc], ...]``; ITEM is an
  expression or ``new map(EXPR as name, ...)``;
* expressions: paths (``a.details.owner.id``, unqualified properties of the first
  alias, unit fields whole or ``.value`` / ``.unit``, ``a.class``), ``:param``,
  literals, ``= != <> < > <= >=``, ``and or not``, ``[not] in (list | :p |
  subquery)``, ``[not] like``, ``is [not] null``, ``between``, ``[not] exists
  (subquery)``, scalar subqueries, ``case when ... then ... else ... end``, ``||``,
  ``+ - * /``, ``lower upper coalesce concat index type length``, and the aggregates
  ``count(*) count([distinct] x) sum min max avg``.

SQL's three-valued logic holds (a comparison with null is unknown, and ``where`` keeps
only true rows).  Anything else is an ``omero.QueryException`` naming the query:
never a silent empty answer.  The grammar (tokens, syntax tree, parser) is
:mod:`.hql_grammar`; this module runs what it parses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import omero
import omero.model as M
from omero.rtypes import unwrap

from .hql_grammar import (
    Agg,
    Bin,
    Case,
    Exists,
    Func,
    In,
    IsNull,
    Join,
    KindName,
    Lit,
    NewMap,
    Not,
    Param,
    Path,
    Query,
    Sub,
    _known_property,
    _unsupported,
    parse,
)
from .model import Database, collection_of, kind_of, shallow

__all__ = ["Runner", "parse"]


# --- values -----------------------------------------------------------------------------


def _py(value: Any) -> Any:
    """A plain Python value for comparing and computing: rtypes unwrapped, objects by id,
    units by their value."""
    if isinstance(value, omero.RType):
        value = unwrap(value)
    if isinstance(value, M.IObject):
        return unwrap(value.id)
    if _is_unit(value):
        return value.getValue()
    if isinstance(value, KindName):
        return value.kind
    return value


def _is_agg(node: Any) -> bool:
    """Does this expression hold an aggregate (outside subqueries)?"""
    if isinstance(node, Agg):
        return True
    if isinstance(node, list | tuple):
        return any(_is_agg(x) for x in node)
    if isinstance(node, (Sub, Exists, Path, Lit, Param, KindName)) or node is None:
        return False
    if isinstance(node, NewMap):
        return any(_is_agg(e) for e, _ in node.items)
    if isinstance(node, Case):
        return any(_is_agg(a) or _is_agg(b) for a, b in node.whens) or _is_agg(node.default)
    if isinstance(node, In):
        return _is_agg(node.expr)
    return any(_is_agg(v) for v in vars(node).values() if not isinstance(v, (str, bool)))


def _and(a: Any, b: Any) -> Any:
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def _or(a: Any, b: Any) -> Any:
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


def _truth(value: Any) -> Any:
    value = _py(value)
    return None if value is None else bool(value)


def permissions_map(obj: Any, user_id: int, admin: bool) -> Any:
    """What the server answers for ``obj as x_details_permissions`` in a ``new map``
    (omero-server src/main/java/ome/logic/QueryImpl.java projection wraps it in
    PermDetails; omero-blitz src/main/java/omero/util/IceMapper.java toRType maps that to
    the Permissions' map: perm and the can* flags the ACL voter set for this user,
    omero-server ome/security/basic/BasicACLVoter.java: the owner and admins may edit,
    delete and move an object, only admins give it away; group members annotate in a
    read-annotate group and link in a read-write one)."""
    perms = obj.details.permissions
    text = str(perms) if perms is not None else "rw----"
    mine = admin or unwrap(obj.details.owner.id) == user_id
    group = text[2:4]
    rb = omero.rtypes.rbool
    return omero.rtypes.rmap({
        "perm": omero.rtypes.rstring(text),
        "canAnnotate": rb(mine or group in ("ra", "rw")), "canDelete": rb(mine),
        "canEdit": rb(mine), "canLink": rb(mine or group == "rw"), "canChgrp": rb(mine),
        "canChown": rb(admin)})


class Runner:
    """Runs parsed queries over a :class:`Database` for one session's view of it."""

    def __init__(self, db: Database, visible, user_id: int = -1, admin: bool = False) -> None:
        self.db = db
        self.visible = visible  # callable(obj) -> bool: the session's read permission
        self.user_id = user_id
        self.admin = admin

    def resolve(self, obj: Any) -> Any:
        """The stored row behind an unloaded proxy (None if gone or invisible)."""
        if obj is None:
            return None
        row = self.db.get(kind_of(obj), unwrap(obj.id))
        return row if row is not None and self.visible(row) else None

    # --- paths ------------------------------------------------------------------------
    def path(self, text: str, row: dict[str, Any], q: Query | None, query: str) -> Any:
        """The value at a path: an rtype, a (stored) object, a unit, a NamedValue or None."""
        alias, *parts = text.split(".")
        if alias not in row:
            root = q.alias if q is not None else None
            if root in row and (alias in ("id", "details", "class") or _known_property(alias)):
                alias, parts = root, [alias, *parts]
            elif not parts and hasattr(M, alias + "I"):
                return KindName(alias)
            else:
                raise _unsupported(query, f"unknown alias {alias!r}")
        value = row[alias]
        for i, part in enumerate(parts):
            if value is None:
                return None
            if part == "id" and isinstance(value, M.IObject):
                value = value.id  # a foreign key: no need to load the row
                continue
            if isinstance(value, M.IObject) and not value.isLoaded():
                value = self.resolve(value)
                if value is None:
                    return None
            if part == "class":
                value = KindName(kind_of(value))
            elif part == "details" and isinstance(value, M.IObject):
                value = value.details
            elif isinstance(value, M.Details):
                value = getattr(value, "_" + part, None)
            elif isinstance(value, M.NamedValue):  # an element of a joined mapValue
                if part not in ("name", "value"):
                    raise omero.QueryException(message=f"could not resolve property: "
                                               f"{'.'.join(parts[i:])} of: NamedValue")
                value = omero.rtypes.rstring(getattr(value, part))
            elif _is_unit(value):
                # The components of a unit column (omero-model ome/model/units/Length.java
                # getValue, getUnit; the unit enum's toString is its name, MICROMETER).
                # Java double -> rdouble, enum -> rstring (IceMapper.toRType).
                if part == "value":
                    value = omero.rtypes.rdouble(value.getValue())
                elif part == "unit":
                    value = omero.rtypes.rstring(str(value.getUnit()))
                else:
                    raise omero.QueryException(message=f"could not resolve property: "
                                               f"{'.'.join(parts[i:])} of: "
                                               f"{type(value).__name__[:-1]}")
            elif isinstance(value, M.IObject):
                if collection_of(kind_of(value), part) is not None:
                    raise _unsupported(query, f"the collection {part!r} in a path "
                                              "(join it)")
                if not hasattr(value, "_" + part):
                    if _known_property(part):
                        return None
                    raise omero.QueryException(message=f"could not resolve property: "
                                               f"{'.'.join(parts[i:])} of: {kind_of(value)}")
                value = getattr(value, "_" + part)
                if isinstance(value, omero.RObject):
                    value = value.val
            else:
                raise omero.QueryException(message=f"could not resolve property: "
                                           f"{'.'.join(parts[i:])} of: {type(value).__name__}")
        if isinstance(value, M.IObject) and not value.isLoaded():
            value = self.resolve(value)
        return value

    # --- expressions ------------------------------------------------------------------
    def ev(self, node: Any, row: dict[str, Any], ctx: _Ctx, q: Query | None,
           group: list[dict[str, Any]] | None = None) -> Any:
        if isinstance(node, Path):
            return self.path(node.text, row, q, ctx.text)
        if isinstance(node, Lit):
            return node.value
        if isinstance(node, Param):
            if node.name not in ctx.params:
                raise omero.ApiUsageException(
                    message=f"query parameter :{node.name} has no value: {ctx.text}")
            value = unwrap(ctx.params[node.name])
            return unwrap(value.id) if isinstance(value, M.IObject) else value
        if isinstance(node, Agg):
            if group is None:
                raise _unsupported(ctx.text, f"the aggregate {node.name}() here")
            if node.arg is None:
                return len(group)
            values = [self.ev(node.arg, r, ctx, q) for r in group]
            values = [v for v in values if _py(v) is not None]
            if node.distinct:
                seen, unique = set(), []
                for v in values:
                    if _py(v) not in seen:
                        seen.add(_py(v))
                        unique.append(v)
                values = unique
            if node.name == "count":
                return len(values)
            if not values:
                return None
            if node.name == "sum":
                return sum(_py(v) for v in values)
            if node.name == "avg":
                return sum(_py(v) for v in values) / len(values)
            pick = min if node.name == "min" else max
            return pick(values, key=_py)
        if isinstance(node, Bin):
            if node.op == "and":
                return _and(_truth(self.ev(node.left, row, ctx, q, group)),
                            _truth(self.ev(node.right, row, ctx, q, group)))
            if node.op == "or":
                return _or(_truth(self.ev(node.left, row, ctx, q, group)),
                           _truth(self.ev(node.right, row, ctx, q, group)))
            left = self.ev(node.left, row, ctx, q, group)
            right = self.ev(node.right, row, ctx, q, group)
            return self.compare(node.op, left, right, ctx)
        if isinstance(node, Not):
            value = _truth(self.ev(node.expr, row, ctx, q, group))
            return None if value is None else not value
        if isinstance(node, IsNull):
            value = _py(self.ev(node.expr, row, ctx, q, group))
            return (value is not None) if node.negate else (value is None)
        if isinstance(node, In):
            left = self.ev(node.expr, row, ctx, q, group)
            if isinstance(node.items, Sub):
                items = [cells[0] for cells in self.select(node.items.query, ctx, row)]
            elif isinstance(node.items, Param):
                value = self.ev(node.items, row, ctx, q, group)
                items = value if isinstance(value, list) else [value]
            else:
                items = []
                for item in node.items:
                    value = self.ev(item, row, ctx, q, group)
                    items += value if isinstance(value, list) else [value]
            if _py(left) is None:
                return None
            found = any(self.compare("=", left, i, ctx) for i in items)
            return not found if node.negate else found
        if isinstance(node, Exists):
            return bool(self.rows(node.query, ctx, row))
        if isinstance(node, Sub):
            cells = self.select(node.query, ctx, row)
            if len(cells) > 1:
                raise omero.QueryException(
                    message=f"more than one row returned by a subquery used as an "
                            f"expression: {ctx.text}")
            return cells[0][0] if cells else None
        if isinstance(node, Case):
            for cond, value in node.whens:
                if _truth(self.ev(cond, row, ctx, q, group)):
                    return self.ev(value, row, ctx, q, group)
            return self.ev(node.default, row, ctx, q, group)
        if isinstance(node, Func):
            return self.func(node, row, ctx, q, group)
        if isinstance(node, NewMap):
            return {name: self.ev(e, row, ctx, q, group) for e, name in node.items}
        raise _unsupported(ctx.text, f"expression {node!r}")

    def compare(self, op: str, left: Any, right: Any, ctx: _Ctx) -> Any:
        if isinstance(left, KindName) or isinstance(right, KindName):
            # ".class = Kind": the row's class is the named one (or a subclass of it)
            if not (isinstance(left, KindName) and isinstance(right, KindName)):
                return False
            a, b = getattr(M, left.kind, None), getattr(M, right.kind, None)
            same = a is not None and b is not None and (issubclass(a, b) or issubclass(b, a))
            return same if op == "=" else not same if op == "!=" else None
        a, b = _py(left), _py(right)
        if op in ("+", "-", "*", "/"):
            if a is None or b is None:
                return None
            if op == "/":
                return a / b
            return a + b if op == "+" else a - b if op == "-" else a * b
        if a is None or b is None:
            return None
        if op == "like":
            pattern = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch)
                              for ch in str(b))
            return re.fullmatch(pattern, str(a), re.S) is not None
        try:
            return {"=": a == b, "!=": a != b, "<": a < b, ">": a > b, "<=": a <= b,
                    ">=": a >= b}[op]
        except TypeError:
            raise _unsupported(ctx.text, f"comparing {a!r} {op} {b!r}") from None

    def func(self, node: Func, row, ctx: _Ctx, q, group) -> Any:
        name = node.name.lower()
        if name == "index":  # the position of a joined collection element
            if len(node.args) != 1 or not isinstance(node.args[0], Path):
                raise _unsupported(ctx.text, "index() of anything but a joined alias")
            key = f"{node.args[0].text}#index"
            if key not in row:
                raise _unsupported(ctx.text, f"index() of {node.args[0].text!r}, not a "
                                             "joined collection element")
            return row[key]
        args = [self.ev(a, row, ctx, q, group) for a in node.args]
        if name == "type" and len(args) == 1:
            return None if args[0] is None else KindName(kind_of(args[0]))
        if name == "coalesce":
            return next((a for a in args if _py(a) is not None), None)
        values = [_py(a) for a in args]
        if name in ("lower", "upper", "length", "str", "trim") and len(values) == 1:
            if values[0] is None:
                return None
            text = str(values[0])
            return {"lower": text.lower(), "upper": text.upper(), "length": len(text),
                    "str": text, "trim": text.strip()}[name]
        if name == "concat":
            return None if None in values else "".join(str(v) for v in values)
        raise _unsupported(ctx.text, f"the function {node.name}()")

    # --- rows -------------------------------------------------------------------------
    def rows(self, q: Query, ctx: _Ctx, outer: dict[str, Any] | None = None,
             root_filter: bool = False) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = [dict(outer or {})]
        for kind, alias in q.sources:
            found = sorted((o for o in self.db.of_kind(kind) if self.visible(o)),
                           key=lambda o: unwrap(o.id))
            rows = [{**r, alias: o} for r in rows for o in found]
        for j in q.joins:
            out = []
            for row in rows:
                src = row.get(j.source, _MISSING)
                if src is _MISSING:
                    raise _unsupported(ctx.text, f"unknown alias {j.source!r}")
                targets = self.join_targets(src, j, ctx.text)
                for i, target in enumerate(targets):
                    out.append({**row, j.alias: target, f"{j.alias}#index": i})
                if not targets and j.outer:
                    out.append({**row, j.alias: None})
            rows = out
        if q.where is not None:
            rows = [r for r in rows if _truth(self.ev(q.where, r, ctx, q)) is True]
        if root_filter and ctx.filter is not None:
            # Filter.ownerId / groupId restrict the selected objects (ParametersI.exp/grp)
            for attr, key in (("ownerId", "owner"), ("groupId", "group")):
                wanted = unwrap(getattr(ctx.filter, attr, None))
                if wanted is not None and wanted >= 0:
                    rows = [r for r in rows if r.get(q.alias) is not None and unwrap(
                        getattr(r[q.alias].details, key).id) == wanted]
        return rows

    def join_targets(self, src: Any, j: Join, query: str) -> list[Any]:
        """What one join reaches from ``src``; a path of several steps
        (``dilink.parent.projectLinks``) walks to its last step first."""
        parts = j.path.split(".")
        last = 2 if len(parts) >= 2 and parts[-2] == "details" else 1
        if len(parts) > last:
            src = self.path("_src." + ".".join(parts[:-last]), {"_src": src}, None, query)
            if not isinstance(src, M.IObject):
                return []
        return self._step(src, ".".join(parts[-last:]), j.fetch, query)

    def _step(self, src: Any, path: str, fetch: bool, query: str) -> list[Any]:
        if src is None:
            return []
        if isinstance(src, M.IObject) and not src.isLoaded():
            src = self.resolve(src)
            if src is None:
                return []
        if path.startswith("details."):  # owner, group, events of the row
            one = self.resolve(getattr(src.details, "_" + path[8:], None))
            return [one] if one is not None else []
        if collection_of(kind_of(src), path) is not None:
            return [c for c in self.db.children(src, path) if self.visible(c)]
        if isinstance(getattr(src, "_" + path, None), list):
            # A collection of components (MapAnnotation.mapValue, NamedValue rows of
            # annotation_mapvalue): the join gives one row per element.
            if fetch:
                raise _unsupported(query, f"join fetch of the component list {path}")
            return list(getattr(src, "_" + path))
        if hasattr(src, "_" + path):
            one = self.resolve(getattr(src, "_" + path))
            return [one] if one is not None else []
        if _known_property(path):
            return []
        raise omero.QueryException(
            message=f"could not resolve property: {path} of: {kind_of(src)}")

    def select(self, q: Query, ctx: _Ctx, outer: dict[str, Any] | None = None,
               root_filter: bool = False) -> list[list[Any]]:
        """Rows of raw values (one per select item) in order, paged if asked."""
        rows = self.rows(q, ctx, outer, root_filter)
        items = [e for e, _ in q.select]
        grouped = bool(q.group) or any(_is_agg(e) for e in items) or _is_agg(q.having)
        if grouped:
            groups: dict[tuple, list[dict[str, Any]]] = {}
            for r in rows:
                key = tuple(repr(_py(self.ev(g, r, ctx, q))) for g in q.group)
                groups.setdefault(key, []).append(r)
            if not q.group and not groups:
                groups[()] = []
            units: list[tuple[dict[str, Any], list[dict[str, Any]] | None]] = [
                (g[0] if g else dict(outer or {}), g) for g in groups.values()]
            if q.having is not None:
                units = [(r, g) for r, g in units
                         if _truth(self.ev(q.having, r, ctx, q, g)) is True]
        else:
            units = [(r, None) for r in rows]
        for expr, desc in reversed(q.order):
            def sort_key(unit, e=expr):
                value = _py(self.ev(e, unit[0], ctx, q, unit[1]))
                return value is None, value  # nulls last, as PostgreSQL sorts them

            units.sort(key=sort_key, reverse=desc)
        out = [([self.ev(e, r, ctx, q, g) for e in items], r) for r, g in units]
        if q.distinct:
            seen: set[str] = set()
            unique = []
            for cells, r in out:
                sig = repr([_py(c) if not isinstance(c, dict) else
                            sorted((k, _py(v)) for k, v in c.items()) for c in cells])
                if sig not in seen:
                    seen.add(sig)
                    unique.append((cells, r))
            out = unique
        if root_filter and ctx.filter is not None:
            start = unwrap(ctx.filter.offset) or 0
            limit = unwrap(ctx.filter.limit)
            out = out[start:start + limit if limit is not None else None]
        ctx.last_rows = [r for _, r in out]
        return [cells for cells, _ in out]

    # --- answers ----------------------------------------------------------------------
    def run(self, text: str, params: Any, projection: bool = False) -> list[Any]:
        """Objects (or rows of rtypes for a projection) the query selects."""
        q = parse(text)
        values = dict(params.map) if params is not None and params.map else {}
        ctx = _Ctx(text, values, params.theFilter if params is not None else None)
        if not projection:
            return self.objects(q, ctx)
        cells = self.select(q, ctx, root_filter=True)
        return [[self.rtype(c, e, name, q, ctx) for c, (e, name) in zip(row, q.select,
                                                                      strict=True)]
                for row in cells]

    def objects(self, q: Query, ctx: _Ctx) -> list[Any]:
        if len(q.select) != 1 or not isinstance(q.select[0][0], Path) \
                or "." in q.select[0][0].text:
            raise _unsupported(ctx.text, "a non-projection query must select one alias")
        alias = q.select[0][0].text
        if q.group or _is_agg(q.select[0][0]):
            raise _unsupported(ctx.text, "grouping in a non-projection query")
        rows = self.rows(q, ctx, root_filter=True)
        for expr, desc in reversed(q.order):
            def sort_key(r, e=expr):
                value = _py(self.ev(e, r, ctx, q))
                return value is None, value

            rows.sort(key=sort_key, reverse=desc)
        by_object: dict[Any, list[dict[str, Any]]] = {}
        for r in rows:  # one instance per object, as Hibernate returns fetched entities
            obj = r.get(alias, _MISSING)
            if obj is _MISSING:
                raise _unsupported(ctx.text, f"unknown alias {alias!r}")
            if isinstance(obj, M.NamedValue):
                raise _unsupported(ctx.text, "selecting a mapValue element as an object")
            ident = (kind_of(obj), unwrap(obj.id)) if obj is not None else None
            by_object.setdefault(ident, []).append(r)
        out = [None if ident is None else self.materialize(rs[0][alias], alias, q, rs)
               for ident, rs in by_object.items()]
        _share_loaded(out)
        f = ctx.filter
        if f is not None:
            start = unwrap(f.offset) or 0
            limit = unwrap(f.limit)
            out = out[start:start + limit if limit is not None else None]
        return out

    def materialize(self, obj: Any, alias: str, q: Query, rows: list[dict[str, Any]]) -> Any:
        """A copy of ``obj`` with the fetch joins below ``alias`` loaded, with what those
        joins matched in ``rows`` (a fetched collection holds the rows the query kept)."""
        out = shallow(obj)
        for j in q.joins:
            if j.source != alias or not j.fetch:
                continue
            found: dict[int, tuple[Any, list[dict[str, Any]]]] = {}
            for r in rows:
                t = r.get(j.alias)
                if t is not None:
                    found.setdefault(unwrap(t.id), (t, []))[1].append(r)
            kids = [self.materialize(t, j.alias, q, rs) for t, rs in found.values()]
            if j.path.startswith("details."):
                setattr(out._details, "_" + j.path[8:], kids[0] if kids else None)
            elif collection_of(kind_of(obj), j.path) is not None:
                setattr(out, f"_{j.path}Seq", kids)
                setattr(out, f"_{j.path}Loaded", True)
            elif hasattr(obj, "_" + j.path):
                setattr(out, "_" + j.path, kids[0] if kids else None)
        return out

    def rtype(self, value: Any, expr: Any, name: str | None, q: Query, ctx: _Ctx) -> Any:
        """A projection cell as the server sends it (omero-blitz
        src/main/java/omero/util/IceMapper.java toRType)."""
        if isinstance(value, dict):  # new map(...)
            out = {}
            for key, v in value.items():
                if key.endswith("_details_permissions") and isinstance(v, M.IObject):
                    # ome/logic/QueryImpl.java projection: PermDetails
                    out[key] = permissions_map(v, self.user_id, self.admin)
                else:
                    out[key] = self.rtype(v, None, None, q, ctx)
            return omero.rtypes.rmap(out)
        if value is None or isinstance(value, omero.RType):
            return value
        if isinstance(value, M.IObject):
            rows = [r for r in ctx.last_rows if isinstance(expr, Path)
                    and r.get(expr.text) is not None
                    and unwrap(r[expr.text].id) == unwrap(value.id)]
            if isinstance(expr, Path) and "." not in expr.text:
                return omero.rtypes.robject(self.materialize(value, expr.text, q, rows))
            return omero.rtypes.robject(shallow(value))
        what = repr(expr.text) if isinstance(expr, Path) else "here"
        if isinstance(value, M.NamedValue):
            raise _unsupported(ctx.text, f"selecting the mapValue element {what} whole "
                                         "(select its .name and .value)")
        if isinstance(value, list):
            raise _unsupported(ctx.text, f"selecting the collection-valued property {what} "
                                         "(join it and select the elements' fields)")
        if isinstance(value, KindName):
            return omero.rtypes.rstring(value.kind)
        if _is_unit(value):
            # IceMapper.toRType: a unit is an rmap of value (rdouble), unit (the enum's
            # name, rstring) and symbol (rstring).
            return omero.rtypes.rmap({"value": omero.rtypes.rdouble(value.getValue()),
                                      "unit": omero.rtypes.rstring(str(value.getUnit())),
                                      "symbol": omero.rtypes.rstring(value.getSymbol())})
        if isinstance(value, bool):
            return omero.rtypes.rbool(value)
        if isinstance(value, int):  # count() and sum() of integers are Long in HQL
            return omero.rtypes.rlong(value)
        if isinstance(value, float):
            return omero.rtypes.rdouble(value)
        if isinstance(value, str):
            return omero.rtypes.rstring(value)
        if isinstance(value, M.Permissions):
            return permissions_map(_Holder(value), self.user_id, self.admin)
        raise _unsupported(ctx.text, f"a value of type {type(value).__name__}")


_MISSING = object()


def _share_loaded(results: list[Any]) -> None:
    """One instance per row in a Hibernate session: an owner, group or event in an
    object's details that the same query loaded (fetched) elsewhere comes back loaded
    too (the first-level cache hands out the initialized entity), e.g. an annotation's
    owner when the links' owners were fetched (omeroweb webgateway/views.py
    _bulk_file_annotations reads ``annotation.details.owner.firstName`` on that).
    Each is a copy of its own columns, so the answer stays a tree; references outside
    the details are left as they are (a client saves them back)."""
    loaded: dict[tuple[str, int], Any] = {}
    seen: set[int] = set()

    def children(obj: Any, details: bool):
        for key, value in vars(obj).items():
            if isinstance(value, M.IObject):
                yield value
            elif isinstance(value, list) and key.endswith("Seq"):
                yield from (v for v in value if isinstance(v, M.IObject))
        if details and getattr(obj, "_details", None) is not None:
            yield from (v for v in vars(obj._details).values() if isinstance(v, M.IObject))

    def walk(obj: Any, visit, details: bool) -> None:
        if obj is None or id(obj) in seen or not obj.isLoaded():
            return
        seen.add(id(obj))
        for child in list(children(obj, details)):
            walk(child, visit, details)
        visit(obj)  # after its children: what fill puts in is never walked

    def collect(obj: Any) -> None:
        loaded.setdefault((kind_of(obj), unwrap(obj.id)), obj)

    def fill(obj: Any) -> None:
        details = getattr(obj, "_details", None)
        if details is None:
            return
        for key, value in list(vars(details).items()):
            if isinstance(value, M.IObject) and not value.isLoaded():
                full = loaded.get((kind_of(value), unwrap(value.id)))
                if full is not None:
                    setattr(details, key, shallow(full))

    for obj in results:
        walk(obj, collect, True)
    seen.clear()
    for obj in results:
        walk(obj, fill, False)


@dataclass
class _Ctx:
    text: str
    params: dict[str, Any]
    filter: Any
    last_rows: list[dict[str, Any]] = field(default_factory=list)


class _Holder:
    """Permissions without their object (``select x.details.permissions``): nobody's."""

    def __init__(self, perms: Any) -> None:
        self.details = M.DetailsI()
        self.details._permissions = perms
        self.details._owner = M.ExperimenterI(-1, False)


_UNIT_BASES = tuple(getattr(M, n) for n in ("Length", "Time", "Pressure", "Temperature",
                                            "ElectricPotential", "Frequency", "Power"))


def _is_unit(value: Any) -> bool:
    """A value of a unit column (omero.model LengthI, TimeI, ...)."""
    return isinstance(value, _UNIT_BASES)
