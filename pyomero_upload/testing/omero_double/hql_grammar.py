"""The HQL grammar of the OMERO double: tokens, syntax tree and parser (the
interpreter that runs a parsed query is :mod:`.hql`).

Hibernate's grammar, as far as the clients the double serves use it (omero-server runs
every string query through Hibernate's HQL: ``ome/services/query/StringQuery.java``);
see :mod:`.hql` for the shapes.  A query outside it is an ``omero.QueryException``
naming the query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import omero
import omero.model as M

TOKEN = re.compile(r"\s*(:\w+|'(?:[^']|'')*'|\d+\.\d+|\d+|[A-Za-z_][\w.]*|<>|!=|<=|>=|\|\||\S)")
AGGREGATES = ("count", "sum", "min", "max", "avg")
#: Words that end a FROM item or a join (so they are never taken for an alias).
_CLAUSE_WORDS = {"join", "left", "inner", "right", "outer", "where", "order", "group", "having",
                 "fetch", ",", ")", "", "with"}


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


# --- the syntax tree --------------------------------------------------------------------


@dataclass
class Path:
    text: str


@dataclass
class Lit:
    value: Any


@dataclass
class Param:
    name: str


@dataclass
class Func:
    name: str
    args: list[Any]


@dataclass
class Agg:
    name: str
    arg: Any  # None for count(*)
    distinct: bool = False


@dataclass
class Bin:
    op: str
    left: Any
    right: Any


@dataclass
class Not:
    expr: Any


@dataclass
class In:
    expr: Any
    items: Any  # list of nodes, a Param or a Sub
    negate: bool


@dataclass
class IsNull:
    expr: Any
    negate: bool


@dataclass
class Exists:
    query: Query


@dataclass
class Sub:
    query: Query


@dataclass
class Case:
    whens: list[tuple[Any, Any]]
    default: Any


@dataclass
class NewMap:
    items: list[tuple[Any, str]]


@dataclass
class KindName:
    """A mapped class named in a query (``a.class = TagAnnotation``, ``type(a)``)."""

    kind: str


@dataclass
class Join:
    source: str  # alias
    path: str  # field of the source
    alias: str
    outer: bool
    fetch: bool


@dataclass
class Query:
    select: list[tuple[Any, str | None]]
    sources: list[tuple[str, str]]  # (kind, alias)
    joins: list[Join] = field(default_factory=list)
    where: Any = None
    group: list[Any] = field(default_factory=list)
    having: Any = None
    order: list[tuple[Any, bool]] = field(default_factory=list)
    distinct: bool = False

    @property
    def kind(self) -> str:
        return self.sources[0][0]

    @property
    def alias(self) -> str:
        return self.sources[0][1]


# --- the parser -------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = TOKEN.findall(text.strip())
        self.pos = 0
        self.anon = 0

    def peek(self, offset: int = 0) -> str:
        i = self.pos + offset
        return self.toks[i].lower() if i < len(self.toks) else ""

    def take(self, expected: str | None = None) -> str:
        if self.pos >= len(self.toks):
            raise _unsupported(self.text, "unexpected end")
        tok = self.toks[self.pos]
        if expected is not None and tok.lower() != expected:
            raise _unsupported(self.text, f"expected {expected!r} at {tok!r}")
        self.pos += 1
        return tok

    def accept(self, *words: str) -> bool:
        if self.peek() in words:
            self.pos += 1
            return True
        return False

    def alias(self) -> str:
        self.accept("as")
        if self.peek() in _CLAUSE_WORDS:
            self.anon += 1
            return f"_alias{self.anon}"
        return self.take()

    # query := [select ...] from ... ----------------------------------------------------
    def query(self) -> Query:
        select: list[tuple[Any, str | None]] = []
        distinct = False
        if self.accept("select"):
            distinct = self.accept("distinct")
            while True:
                if self.peek() == "new":
                    select.append((self.new_map(), None))
                else:
                    item = self.expr()
                    name = self.take() if self.accept("as") else None
                    select.append((item, name))
                if not self.accept(","):
                    break
        self.take("from")
        sources = []
        while True:
            kind = self.take()
            sources.append((kind, self.alias()))
            if not self.accept(","):
                break
        q = Query(select, sources, distinct=distinct)
        if not select:  # "from Kind a": the first alias
            q.select = [(Path(q.alias), None)]
        while self.peek() in ("join", "left", "inner"):
            outer = self.peek() == "left"
            if self.accept("left", "inner"):
                self.accept("outer")
            self.take("join")
            fetch = self.accept("fetch")
            src = self.take()
            if "." not in src:
                raise _unsupported(self.text, f"join on {src!r}")
            source, path = src.split(".", 1)
            q.joins.append(Join(source, path, self.alias(), outer, fetch))
        if self.accept("where"):
            q.where = self.expr()
        if self.accept("group"):
            self.take("by")
            q.group.append(self.expr())
            while self.accept(","):
                q.group.append(self.expr())
        if self.accept("having"):
            q.having = self.expr()
        if self.accept("order"):
            self.take("by")
            while True:
                e = self.expr()
                desc = False
                if self.peek() in ("asc", "desc"):
                    desc = self.take().lower() == "desc"
                q.order.append((e, desc))
                if not self.accept(","):
                    break
        return q

    def new_map(self) -> NewMap:
        self.take("new")
        self.take("map")
        self.take("(")
        items: list[tuple[Any, str]] = []
        while True:
            e = self.expr()
            if self.accept("as"):
                name = self.take()
            elif isinstance(e, Path):  # Hibernate names an unaliased entry by its position
                name = str(len(items))
            else:
                name = str(len(items))
            items.append((e, name))
            if not self.accept(","):
                break
        self.take(")")
        return NewMap(items)

    # expressions, loosest first ---------------------------------------------------------
    def expr(self) -> Any:
        left = self.conj()
        while self.accept("or"):
            left = Bin("or", left, self.conj())
        return left

    def conj(self) -> Any:
        left = self.neg()
        while self.accept("and"):
            left = Bin("and", left, self.neg())
        return left

    def neg(self) -> Any:
        if self.accept("not"):
            return Not(self.neg())
        return self.comparison()

    def comparison(self) -> Any:
        left = self.concat()
        negate = False
        if self.peek() == "not" and self.peek(1) in ("in", "like", "between"):
            self.take()
            negate = True
        op = self.peek()
        if op == "is":
            self.take()
            negate = self.accept("not")
            self.take("null")
            return IsNull(left, negate)
        if op == "in":
            self.take()
            if self.peek().startswith(":"):
                return In(left, Param(self.take()[1:]), negate)
            self.take("(")
            if self.peek() in ("select", "from"):
                items: Any = Sub(self.query())
            else:
                items = [self.concat()]
                while self.accept(","):
                    items.append(self.concat())
            self.take(")")
            return In(left, items, negate)
        if op == "like":
            self.take()
            node: Any = Bin("like", left, self.concat())
            return Not(node) if negate else node
        if op == "between":
            self.take()
            lo = self.concat()
            self.take("and")
            node = Bin("and", Bin(">=", left, lo), Bin("<=", left, self.concat()))
            return Not(node) if negate else node
        if op in ("=", "!=", "<>", "<", ">", "<=", ">="):
            self.take()
            return Bin("!=" if op == "<>" else op, left, self.concat())
        return left

    def concat(self) -> Any:
        left = self.additive()
        while self.accept("||"):
            left = Func("concat", [left, self.additive()])
        return left

    def additive(self) -> Any:
        left = self.term()
        while self.peek() in ("+", "-"):
            left = Bin(self.take(), left, self.term())
        return left

    def term(self) -> Any:
        left = self.primary()
        while self.peek() in ("*", "/") and self.peek(1) != ")":
            left = Bin(self.take(), left, self.primary())
        return left

    def primary(self) -> Any:
        tok = self.peek()
        if tok == "":
            raise _unsupported(self.text, "unexpected end")
        if tok == "(":
            self.take()
            if self.peek() in ("select", "from"):
                node: Any = Sub(self.query())
            else:
                node = self.expr()
            self.take(")")
            return node
        if tok == "-":
            self.take()
            return Bin("-", Lit(0), self.primary())
        raw = self.take()
        if raw.startswith(":"):
            return Param(raw[1:])
        if raw.startswith("'"):
            return Lit(raw[1:-1].replace("''", "'"))
        if raw[0].isdigit():
            return Lit(float(raw) if "." in raw else int(raw))
        if tok == "null":
            return Lit(None)
        if tok in ("true", "false"):
            return Lit(tok == "true")
        if tok == "case":
            whens = []
            while self.accept("when"):
                cond = self.expr()
                self.take("then")
                whens.append((cond, self.expr()))
            default = self.expr() if self.accept("else") else Lit(None)
            self.take("end")
            return Case(whens, default)
        if tok == "exists":
            self.take("(")
            q = self.query()
            self.take(")")
            return Exists(q)
        if not re.match(r"[A-Za-z_]", raw):
            raise _unsupported(self.text, f"unexpected {raw!r}")
        if self.peek() == "(":
            self.take()
            if tok in AGGREGATES:
                distinct = self.accept("distinct")
                arg = None if self.accept("*") else self.expr()
                self.take(")")
                return Agg(tok, arg, distinct)
            args = []
            if self.peek() != ")":
                args.append(self.expr())
                while self.accept(","):
                    args.append(self.expr())
            self.take(")")
            return Func(tok, args)
        return Path(raw)


def parse(text: str) -> Query:
    """Parse one query of the supported shape, or raise QueryException."""
    p = _Parser(text)
    q = p.query()
    if p.pos != len(p.toks):
        raise _unsupported(text, f"unexpected {p.toks[p.pos]!r}")
    return q
