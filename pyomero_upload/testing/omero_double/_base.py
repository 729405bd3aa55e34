"""What every servant of the OMERO double shares.

:func:`implements` makes a class the servant of one of omero-py's generated Slice
interfaces (AMD operations through their callback, missing ones raising
``omero.ApiUsageException``); :class:`SessionState` is one OMERO session,
:class:`Servant` the base of every service (the caller's session, visibility,
loading), :class:`Stateful` the base of the stateful ones.
"""

from __future__ import annotations

import inspect
import re
import sys
import traceback
import uuid
from typing import TYPE_CHECKING, Any

# Every Slice stub a servant implements is imported here, before VOID reads them.
import Glacier2  # noqa: F401
import Ice
import omero
import omero.api
import omero.cmd
import omero.grid
import omero.model as M
import omero_API_ice  # noqa: F401  (ServiceFactory servant base)
import omero_SharedResources_ice  # noqa: F401
import omero_Tables_ice  # noqa: F401
from omero.rtypes import rlong, rstring, unwrap

from .hql import Runner
from .model import ENUMS, Database, kind_of, now

if TYPE_CHECKING:
    from .server import DoubleServer

SESSION_TIMEOUT_MS = 600000

_ICE_NAMES = set(dir(Ice.Object))


def _void_ops() -> set[str]:
    """``Interface.op`` names of void operations, read from the generated stubs."""
    out = set()
    pattern = re.compile(r"^\s+(\w+)\._op_(\w+) = IcePy\.Operation\(.*, None, "
                         r"\([^()]*\)\)$", re.M)
    for name, mod in list(sys.modules.items()):
        if name.endswith("_ice") and mod is not None:
            try:
                out |= {f"{i}.{o}" for i, o in pattern.findall(inspect.getsource(mod))}
            except (OSError, TypeError):
                continue
    return out


VOID: set[str] = _void_ops()  # the stubs are imported above


def _error(exc: BaseException) -> Ice.UserException:
    if isinstance(exc, Ice.UserException):
        return exc
    return omero.InternalException(message=f"{type(exc).__name__}: {exc}",
                                   serverStackTrace=traceback.format_exc())


def implements(base: type):
    """Make ``cls`` a servant of ``base``: every operation of the slice interface
    answers, AMD ones through their callback; ones the double lacks raise
    ``omero.ApiUsageException`` saying so, never a silent None."""

    def deco(cls: type) -> type:
        attrs: dict[str, Any] = {}
        ifaces = [k.__name__ for k in base.__mro__]
        for name in dir(base):
            if name.startswith("_") or name in _ICE_NAMES or not callable(getattr(base, name)):
                continue
            op = name[:-6] if name.endswith("_async") else name
            if name == op and hasattr(base, op + "_async"):
                continue
            impl = getattr(cls, op, None)
            if impl is None:
                impl = _missing(cls.__name__, op)
            void = any(f"{i}.{op}" in VOID for i in ifaces)
            attrs[name] = _amd(impl, void) if name.endswith("_async") else _sync(impl)
        return type(cls.__name__, (cls, base), attrs)

    return deco


def _missing(cls: str, op: str):
    def method(self, *args):
        raise omero.ApiUsageException(message=f"{cls}.{op} is not implemented by the OMERO "
                                      "double (a test double for a subset of OMERO)")
    return method


class _NoSession(Exception):
    """The request came over a connection without a Glacier2 session."""


#: Operations that only read (by their names' start): no store write after them.
READ_PREFIXES = ("get", "find", "read", "projection", "list", "lookup", "is", "has", "can",
                 "count", "exists", "ice_", "keepAlive", "slice")


def _changes(impl) -> bool:
    return not getattr(impl, "__name__", "").startswith(READ_PREFIXES)


def _amd(impl, void: bool):
    writes = _changes(impl)

    def method(self, cb, *args):
        try:
            with self.server.lock:
                self.check(args[-1])
                result = impl(self, *args)
                if writes:
                    self.server.persist()
        except _NoSession:
            return  # the connection is closed: no answer, as from Glacier2
        except Exception as exc:  # every failure goes back to the caller
            cb.ice_exception(_error(exc))
            return
        if void:
            cb.ice_response()
        else:
            cb.ice_response(result)
    return method


def _sync(impl):
    writes = _changes(impl)

    def method(self, *args):
        try:
            with self.server.lock:
                self.check(args[-1])
                result = impl(self, *args)
                if writes:
                    self.server.persist()
                return result
        except _NoSession:
            raise Ice.ObjectNotExistException() from None  # never reaches the client
        except Ice.Exception:
            raise
        except Exception as exc:
            raise _error(exc) from None
    return method


# --- sessions ---------------------------------------------------------------------------


class SessionState:
    """One OMERO session (one uuid), shared by every client that joined it."""

    def __init__(self, server: DoubleServer, user: Any) -> None:
        self.server = server
        self.uuid = str(uuid.uuid4())
        self.user = user
        self.group_id = user._member_of[0]
        self.refs = 1
        self.factories: list[Any] = []
        self.alive = True
        self.model = M.SessionI()
        self.model.setUuid(rstring(self.uuid))
        self.model.setTimeToIdle(rlong(SESSION_TIMEOUT_MS))
        self.model.setTimeToLive(rlong(0))
        self.model.setStarted(now())
        self.model.setId(rlong(server.db.new_event()))

    @property
    def user_id(self) -> int:
        return unwrap(self.user.id)

    def is_admin(self) -> bool:
        return 0 in self.user._member_of


class Servant:
    """Common part: the server, the session and the security context of the caller."""

    def __init__(self, sf: Any) -> None:
        self.sf = sf
        self.server: DoubleServer = sf.server
        self.db: Database = sf.server.db

    @property
    def session(self) -> SessionState:
        return self.sf.session

    def check(self, current: Any) -> None:
        self.server.check_connection(current)
        if not self.session.alive:
            raise Ice.ObjectNotExistException()

    # visibility: owner and group (omero-server src/main/java/ome/security/basic/
    # BasicACLVoter.java allowLoad: a private group's objects only for their owner,
    # admins and group leaders; other groups' objects not at all in this context).
    def visible(self, obj: Any, group: int | None = None) -> bool:
        kind = kind_of(obj)
        if kind in ENUMS or kind in ("Experimenter", "ExperimenterGroup", "Event",
                                     "GroupExperimenterMap"):
            return True
        g = unwrap(obj.details.group.id)
        s = self.session
        groups = s.user._member_of if group == -1 else [s.group_id if group is None else group]
        if g not in groups:
            return False
        perms = str(self.db.get("ExperimenterGroup", g).details.permissions)
        return (perms[2:4] != "--" or unwrap(obj.details.owner.id) == s.user_id
                or s.is_admin())

    def runner(self, current: Any) -> Runner:
        group = current.ctx.get("omero.group") if current is not None else None
        g = int(group) if group not in (None, "") else None
        return Runner(self.db, lambda o: self.visible(o, g), self.session.user_id,
                      self.session.is_admin())

    def load(self, kind: str, oid: int) -> Any:
        obj = self.db.get(kind, oid)
        if obj is None or not self.visible(obj):
            # omero-server src/main/java/ome/logic/QueryImpl.java get
            raise omero.ApiUsageException(message=(
                f"The requested object (ome.model.{kind},{oid}) is not available.\n"
                "Please use IQuery.find to determine existence.\n"))
        return obj


class Stateful(Servant):
    """A stateful service (one per create* call): closing it removes the servant."""

    def close(self, current):
        self.sf.adapter.remove(current.id)
        if current.id in self.sf.stateful:
            self.sf.stateful.remove(current.id)

    def activate(self, current):
        pass

    def passivate(self, current):
        pass
