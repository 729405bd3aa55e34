"""A small HQL interpreter for the query shapes this project and its notebooks send.

Supported: ``select [distinct] a[, a.x.y ...] from Kind a [[left outer] join [fetch] a.path b]...
[where COND [and COND]...] [order by a.path [asc|desc], ...]`` where COND is
``path = :p``, ``path = 'text'``, ``path = 12``, ``path in (:p)``,
``path like :p`` or ``a.class = Kind``; joins on a MapAnnotation's ``mapValue`` (its
elements' ``name`` and ``value``) and unit fields (whole, ``.value``, ``.unit``) in a
projection.  Anything else is an
``omero.QueryException`` naming the query: never a silent empty answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import omero
import omero.model as M
from omero.rtypes import unwrap, wrap

from .model import Database, collection_of, kind_of, shallow

TOKEN = re.compile(r"\s*(:\w+|'[^']*'|\d+|[A-Za-z_][\w.]*|[(),=<>!]+|\S)")


def _known_property(name: str) -> bool:
    """True if some mapped class has this property (HQL lets a query name a subclass's
    property on a superclass alias; rows of other subclasses simply have none)."""
    if not _PROPERTIES:
        for attr in dir(M):
            cls = getattr(M, attr)
            if attr.endswith("I") and isinstance(cls, type) and issubclass(cls, M.IObject):
                try:
                    _PROPERTIES.update(k[1:] for k in vars(cls()))
                except Exception:  # noqa: S112 (abstract or odd classes have none to offer)
                    continue
        _PROPERTIES.update(n for _, n in _collections())
    return name in _PROPERTIES


def _collections():
    from .model import COLLECTIONS

    return list(COLLECTIONS) + [("", "annotationLinks")]


_PROPERTIES: set[str] = set()


def _unsupported(query: str, why: str) -> omero.QueryException:
    return omero.QueryException(
        message=f"the OMERO double cannot run this query ({why}): {query}")


@dataclass
class Join:
    source: str  # alias
    path: str  # field of the source
    alias: str
    outer: bool
    fetch: bool


@dataclass
class Query:
    select: list[str]
    kind: str
    alias: str
    joins: list[Join] = field(default_factory=list)
    where: list[tuple[str, str, Any]] = field(default_factory=list)
    order: list[tuple[str, bool]] = field(default_factory=list)
    distinct: bool = False


def parse(text: str) -> Query:
    """Parse one query of the supported shape, or raise QueryException."""
    toks = TOKEN.findall(text.strip())
    pos = 0

    def peek(offset: int = 0) -> str:
        return toks[pos + offset].lower() if pos + offset < len(toks) else ""

    def take(expected: str | None = None) -> str:
        nonlocal pos
        if pos >= len(toks):
            raise _unsupported(text, "unexpected end")
        tok = toks[pos]
        if expected is not None and tok.lower() != expected:
            raise _unsupported(text, f"expected {expected!r} at {tok!r}")
        pos += 1
        return tok

    take("select")
    distinct = peek() == "distinct"
    if distinct:
        take()
    select = [take()]
    while peek() == ",":
        take()
        select.append(take())
    take("from")
    q = Query(select, take(), take(), distinct=distinct)
    while peek() in ("join", "left", "inner"):
        outer = peek() == "left"
        if peek() in ("left", "inner"):
            take()
            if peek() == "outer":
                take()
        take("join")
        fetch = peek() == "fetch"
        if fetch:
            take()
        src = take()
        if "." not in src:
            raise _unsupported(text, f"join on {src!r}")
        source, path = src.split(".", 1)
        if peek() == "as":
            take()
        alias = take() if peek() not in ("", "join", "left", "inner", "where", "order") else ""
        q.joins.append(Join(source, path, alias, outer, fetch))
    if peek() == "where":
        take()
        while True:
            left = take()
            op = take().lower()
            if op == "in":
                take("(")
                right = take()
                take(")")
            elif op in ("=", "like"):
                right = take()
                if right == "(":  # "x = (:p)"
                    right = take()
                    take(")")
            else:
                raise _unsupported(text, f"operator {op!r}")
            q.where.append((left, op, right))
            if peek() != "and":
                break
            take()
    if peek() == "order":
        take()
        take("by")
        while True:
            path = take()
            desc = False
            if peek() in ("asc", "desc"):
                desc = take().lower() == "desc"
            q.order.append((path, desc))
            if peek() != ",":
                break
            take()
    if pos != len(toks):
        raise _unsupported(text, f"unexpected {toks[pos]!r}")
    return q


class Runner:
    """Runs parsed queries over a :class:`Database` for one session's view of it."""

    def __init__(self, db: Database, visible) -> None:
        self.db = db
        self.visible = visible  # callable(obj) -> bool: the session's read permission

    def resolve(self, obj: Any) -> Any:
        """The stored row behind an unloaded proxy (None if gone or invisible)."""
        if obj is None:
            return None
        row = self.db.get(kind_of(obj), unwrap(obj.id))
        return row if row is not None and self.visible(row) else None

    def value(self, row: dict[str, Any], path: str, text: str, typed: bool = False) -> Any:
        """The value at ``path`` (plain Python); with ``typed``, a unit component as the
        rtype the server answers (rdouble value, rstring unit)."""
        alias, *parts = path.split(".")
        if alias not in row:
            raise _unsupported(text, f"unknown alias {alias!r}")
        value = row[alias]
        for i, part in enumerate(parts):
            if value is None:
                return None
            if part == "id":
                value = unwrap(value.id)
            elif part == "class":
                value = kind_of(value)
            elif part == "details":
                value = value.details
            elif isinstance(value, M.Details):
                value = getattr(value, "_" + part)
            elif isinstance(value, M.NamedValue):  # an element of a joined mapValue
                if part not in ("name", "value"):
                    raise omero.QueryException(message=f"could not resolve property: "
                                               f"{'.'.join(parts[i:])} of: NamedValue")
                value = getattr(value, part)
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
                if typed and i == len(parts) - 1:
                    return value
            else:
                if isinstance(value, M.IObject) and not value.isLoaded():
                    value = self.resolve(value)
                if value is None:
                    return None
                if not hasattr(value, "_" + part):
                    if _known_property(part):
                        return None
                    raise omero.QueryException(message=f"could not resolve property: "
                                               f"{'.'.join(parts[i:])} of: {kind_of(value)}")
                value = getattr(value, "_" + part)
                if isinstance(value, M.IObject) and i + 1 < len(parts) and parts[i + 1] != "id":
                    value = self.resolve(value)
        return unwrap(value) if isinstance(value, omero.RType) else value

    def rows(self, q: Query, text: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        rows = [{q.alias: o} for o in sorted(self.db.of_kind(q.kind), key=lambda o: unwrap(o.id))
                if self.visible(o)]
        for j in q.joins:
            out = []
            for row in rows:
                src = row.get(j.source)
                if src is None:
                    targets = []
                elif j.path.startswith("details."):  # owner, group, events of the row
                    one = self.resolve(getattr(src.details, "_" + j.path[8:], None))
                    targets = [one] if one is not None else []
                elif collection_of(kind_of(src), j.path) is not None:
                    targets = [c for c in self.db.children(src, j.path) if self.visible(c)]
                elif isinstance(getattr(src, "_" + j.path, None), list):
                    # A collection of components (MapAnnotation.mapValue, NamedValue
                    # rows of annotation_mapvalue): the join gives one row per element.
                    if j.fetch:
                        raise _unsupported(text, f"join fetch of the component list {j.path}")
                    targets = list(getattr(src, "_" + j.path))
                elif hasattr(src, "_" + j.path):
                    one = self.resolve(getattr(src, "_" + j.path))
                    targets = [one] if one is not None else []
                elif _known_property(j.path):
                    targets = []
                else:
                    raise omero.QueryException(
                        message=f"could not resolve property: {j.path} of: {kind_of(src)}")
                if not targets and j.outer:
                    targets = [None]
                out += [{**row, j.alias: t} for t in targets]
            rows = out
        for left, op, right in q.where:
            rows = [r for r in rows if self.test(r, left, op, right, text, params)]
        for path, desc in reversed(q.order):
            def sort_key(r: dict, p: str = path) -> tuple[bool, Any]:
                value = self.value(r, p, text)
                return value is None, value

            rows.sort(key=sort_key, reverse=desc)
        return rows

    def test(self, row, left, op, right, text, params) -> bool:
        if left.endswith(".class"):
            return isinstance(row.get(left[:-6]), getattr(M, right, ()))
        lhs = self.value(row, left, text)
        if right.startswith(":"):
            name = right[1:]
            if name not in params:
                raise omero.ApiUsageException(
                    message=f"query parameter :{name} has no value: {text}")
            rhs = unwrap(params[name])
        elif right.startswith("'"):
            rhs = right[1:-1]
        elif right.isdigit():
            rhs = int(right)
        else:
            raise _unsupported(text, f"right-hand side {right!r}")
        if op == "in":
            return lhs in (rhs if isinstance(rhs, list) else [rhs])
        if op == "like":
            pattern = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch)
                              for ch in str(rhs))
            return lhs is not None and re.fullmatch(pattern, str(lhs), re.S) is not None
        return lhs == rhs

    def materialize(self, obj: Any, alias: str, q: Query) -> Any:
        """A copy of ``obj`` with the fetch joins below ``alias`` loaded."""
        out = shallow(obj)
        for j in q.joins:
            if j.source != alias or not j.fetch:
                continue
            if j.path.startswith("details."):
                target = self.resolve(getattr(obj.details, "_" + j.path[8:], None))
                setattr(out._details, "_" + j.path[8:],
                        None if target is None else self.materialize(target, j.alias, q))
            elif collection_of(kind_of(obj), j.path) is not None:
                kids = [self.materialize(c, j.alias, q) for c in self.db.children(obj, j.path)
                        if self.visible(c)]
                setattr(out, f"_{j.path}Seq", kids)
                setattr(out, f"_{j.path}Loaded", True)
            elif hasattr(obj, "_" + j.path):
                target = self.resolve(getattr(obj, "_" + j.path))
                setattr(out, "_" + j.path,
                        None if target is None else self.materialize(target, j.alias, q))
        return out

    def run(self, text: str, params: Any, projection: bool = False) -> list[Any]:
        """Objects (or rows of rtypes for a projection) the query selects."""
        q = parse(text)
        values = dict(params.map) if params is not None and params.map else {}
        rows = self.rows(q, text, values)
        f = params.theFilter if params is not None else None
        if f is not None:
            # Filter.ownerId / groupId restrict the selected objects (ParametersI.exp/grp)
            root = q.select[0].split(".")[0]
            for attr, key in (("ownerId", "owner"), ("groupId", "group")):
                wanted = unwrap(getattr(f, attr, None))
                if wanted is not None and wanted >= 0:
                    rows = [r for r in rows if r.get(root) is not None and unwrap(
                        getattr(r[root].details, key).id) == wanted]
            start = unwrap(f.offset) or 0
            stop = start + unwrap(f.limit) if unwrap(f.limit) is not None else None
            rows = rows[start:stop]
        if projection:
            cells = [[self.cell(r, s, q, text) for s in q.select] for r in rows]
            if q.distinct:
                seen_rows: set[str] = set()
                unique = []
                for row_cells in cells:
                    key = repr([unwrap(c) for c in row_cells])
                    if key not in seen_rows:
                        seen_rows.add(key)
                        unique.append(row_cells)
                cells = unique
            return cells
        if len(q.select) != 1 or "." in q.select[0]:
            raise _unsupported(text, "a non-projection query must select one alias")
        out, seen = [], set()
        for r in rows:
            obj = r[q.select[0]]
            if isinstance(obj, M.NamedValue):
                raise _unsupported(text, "selecting a mapValue element as an object")
            ident = (kind_of(obj), unwrap(obj.id)) if obj is not None else None
            if ident in seen:  # one instance per row, as Hibernate returns them
                continue
            seen.add(ident)
            out.append(None if obj is None else self.materialize(obj, q.select[0], q))
        return out

    def cell(self, row, path, q, text) -> Any:
        if "." not in path:  # a whole object: loaded, as Hibernate returns it
            obj = row.get(path)
            if isinstance(obj, M.NamedValue):
                raise _unsupported(text, f"selecting the mapValue element {path!r} whole "
                                         "(select its .name and .value)")
            return None if obj is None else omero.rtypes.robject(self.materialize(obj, path, q))
        value = self.value(row, path, text, typed=True)
        if isinstance(value, omero.RType):
            return value
        if isinstance(value, list):
            raise _unsupported(text, f"selecting the collection-valued property {path!r} "
                                     "(join it and select the elements' fields)")
        if _is_unit(value):
            # omero-blitz src/main/java/omero/util/IceMapper.java toRType: a unit in a
            # projection is an rmap of value (rdouble), unit (the enum's name, rstring)
            # and symbol (rstring).
            return omero.rtypes.rmap({"value": omero.rtypes.rdouble(value.getValue()),
                                      "unit": omero.rtypes.rstring(str(value.getUnit())),
                                      "symbol": omero.rtypes.rstring(value.getSymbol())})
        return None if value is None else wrap(value)


_UNIT_BASES = tuple(getattr(M, n) for n in ("Length", "Time", "Pressure", "Temperature",
                                            "ElectricPotential", "Frequency", "Power"))


def _is_unit(value: Any) -> bool:
    """A value of a unit column (omero.model LengthI, TimeI, ...)."""
    return isinstance(value, _UNIT_BASES)
