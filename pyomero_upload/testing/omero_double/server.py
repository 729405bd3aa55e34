"""The Ice servants of the OMERO double, subclassing omero-py's generated servant classes."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import re
import shutil
import subprocess
import sys
import threading
import traceback
import uuid
from pathlib import Path
from typing import Any

import Glacier2
import Ice
import omero
import omero.api
import omero.cmd
import omero.grid
import omero.model as M
import omero_API_ice  # noqa: F401  (ServiceFactory servant base)
import omero_SharedResources_ice  # noqa: F401
import omero_Tables_ice  # noqa: F401
from omero.rtypes import rint, rlong, rstring, unwrap

from .hql import Runner
from .model import (
    ENUMS,
    LINK_REQUIRED,
    PRIVATE,
    REQUIRED,
    Database,
    PixelData,
    TableData,
    fields,
    kind_of,
    now,
    plain,
    proxy,
    shallow,
)

# Above this many pixels per plane the server writes a pyramid (omero-romio
# src/main/java/ome/io/nio/PixelsService.java requiresPixelsPyramid, with the
# omero.pixeldata.max_plane_width/height defaults 3192).
MAX_PLANE = 3192 * 3192
PYRAMID_TILE = 256  # omero.pixeldata.tile_width/height defaults
# The server's Ice.MessageSizeMax in KB: 64 MB (OMERO.server etc/templates/grid/
# templates.xml, as recorded in docs/OMERO_RULES.md; omero-py's client allows 250 MB,
# omero_Constants_ice.py MESSAGESIZEMAX). Ice itself refuses bigger requests.
SERVER_MESSAGE_SIZE_MAX_KB = 65536
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


def _amd(impl, void: bool):
    def method(self, cb, *args):
        try:
            with self.server.lock:
                self.check(args[-1])
                result = impl(self, *args)
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
    def method(self, *args):
        try:
            with self.server.lock:
                self.check(args[-1])
                return impl(self, *args)
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
        if kind in ENUMS or kind in ("Experimenter", "ExperimenterGroup", "Event"):
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
        return Runner(self.db, lambda o: self.visible(o, g))

    def load(self, kind: str, oid: int) -> Any:
        obj = self.db.get(kind, oid)
        if obj is None or not self.visible(obj):
            # omero-server src/main/java/ome/logic/QueryImpl.java get
            raise omero.ApiUsageException(message=(
                f"The requested object (ome.model.{kind},{oid}) is not available.\n"
                "Please use IQuery.find to determine existence.\n"))
        return obj


# --- Glacier2 router --------------------------------------------------------------------


@implements(Glacier2.Router)
class Router:
    """What ``omero.client`` needs of Glacier2: a null client proxy (so requests go
    straight to this adapter), the server proxy, and sessions."""

    def __init__(self, server: DoubleServer) -> None:
        self.server = server

    def check(self, current: Any) -> None:
        pass  # the router answers every connection: that is how sessions start

    def getClientProxy(self, current):
        return None

    def getServerProxy(self, current):
        return current.adapter.createProxy(Ice.stringToIdentity("double/callbacks"))

    def addProxies(self, proxies, current):
        return []

    def getCategoryForClient(self, current):
        return current.ctx.get("omero.client.uuid", "double")

    def createSession(self, user, password, current):
        return self.server.login(user, password, current)

    def createSessionFromSecureConnection(self, current):
        raise Glacier2.PermissionDeniedException("certificate logins are not supported")

    def refreshSession(self, current):
        return None

    def destroySession(self, current):
        sf = self.server.by_client.pop(current.ctx.get("omero.client.uuid", ""), None)
        if sf is None:
            raise Glacier2.SessionNotExistException()
        sf.destroy_factory()

    def getSessionTimeout(self, current):
        return SESSION_TIMEOUT_MS // 1000

    def getACMTimeout(self, current):
        return 0


# --- ServiceFactory ---------------------------------------------------------------------


@implements(omero.api.ServiceFactory)
class ServiceFactory:
    """One client's view of a session (omero-blitz ome/services/blitz/impl/ServiceFactoryI.java)."""

    def __init__(self, server: DoubleServer, session: SessionState, client_id: str,
                 adapter: Any) -> None:
        self.server = server
        self.session = session
        self.client_id = client_id
        self.adapter = adapter
        self.sf = self
        self.do_close = True  # closeOnDestroy is the default
        self.services: dict[str, Any] = {}
        self.owned: list[Ice.Identity] = []  # every servant of this client, for cleanup
        self.stateful: list[Ice.Identity] = []  # stateful services still open
        self.identity = Ice.Identity(session.uuid, client_id)

    def check(self, current: Any) -> None:
        self.server.check_connection(current)
        if not self.session.alive:
            raise Ice.ObjectNotExistException()

    def _service(self, name: str, cls: type, prx: Any, stateful: bool = False):
        if not stateful and name in self.services:
            return self.services[name]
        ident = Ice.Identity(f"{name}-{uuid.uuid4()}", self.session.uuid)
        self.adapter.add(cls(self), ident)
        p = prx.uncheckedCast(self.adapter.createProxy(ident))
        self.owned.append(ident)
        if stateful:
            self.stateful.append(ident)
        else:
            self.services[name] = p
        return p

    def getAdminService(self, current=None):
        return self._service("IAdmin", AdminService, omero.api.IAdminPrx)

    def getQueryService(self, current=None):
        return self._service("IQuery", QueryService, omero.api.IQueryPrx)

    def getUpdateService(self, current=None):
        return self._service("IUpdate", UpdateService, omero.api.IUpdatePrx)

    def getPixelsService(self, current=None):
        return self._service("IPixels", PixelsService, omero.api.IPixelsPrx)

    def getConfigService(self, current=None):
        return self._service("IConfig", ConfigService, omero.api.IConfigPrx)

    def getSessionService(self, current=None):
        return self._service("ISession", SessionService, omero.api.ISessionPrx)

    def getRenderingSettingsService(self, current=None):
        return self._service("IRenderingSettings", RenderingSettings,
                             omero.api.IRenderingSettingsPrx)

    def createRawPixelsStore(self, current=None):
        return self._service("RawPixelsStore", RawPixelsStore, omero.api.RawPixelsStorePrx,
                             stateful=True)

    def createRawFileStore(self, current=None):
        return self._service("RawFileStore", RawFileStore, omero.api.RawFileStorePrx, True)

    def createThumbnailStore(self, current=None):
        return self._service("ThumbnailStore", ThumbnailStore, omero.api.ThumbnailStorePrx,
                             True)

    def sharedResources(self, current=None):
        return self._service("SharedResources", SharedResources, omero.grid.SharedResourcesPrx)

    def keepAlive(self, prx, current=None):
        return True

    def keepAllAlive(self, proxies, current=None):
        return 0  # bit set of proxies that are gone: none

    def setCallback(self, callback, current=None):
        self.callback = callback

    def activeServices(self, current=None):
        return [Ice.identityToString(i) for i in self.stateful]

    def getSecurityContexts(self, current=None):
        return [proxy(self.server.db.get("ExperimenterGroup", g))
                for g in self.session.user._member_of]

    def setSecurityContext(self, obj, current=None):
        # omero-blitz ome/services/blitz/impl/ServiceFactoryI.java setSecurityContext:
        # only groups the user belongs to.
        if not isinstance(obj, M.ExperimenterGroup):
            raise omero.ApiUsageException(message="the double supports group contexts only")
        gid = unwrap(obj.id)
        if gid not in self.session.user._member_of:
            raise omero.SecurityViolation(message=f"not a member of group {gid}")
        # omero-blitz ome/services/blitz/fire/SessionManagerI.java checkStatefulServices
        # (ChangeSecurityContextEvent.java): no switch while stateful services are open.
        open_ = [Ice.identityToString(i) for f in self.session.factories for i in f.stateful]
        if open_:
            raise omero.SecurityViolation(message=(
                f"SecurityContext change cancelled:\n{self.session.uuid} has active "
                f"stateful services:\n" + "\n".join(open_)))
        previous = proxy(self.server.db.get("ExperimenterGroup", self.session.group_id))
        self.session.group_id = gid
        return previous

    def detachOnDestroy(self, current=None):
        self.do_close = False

    def closeOnDestroy(self, current=None):
        self.do_close = True

    def submit(self, req, current=None):
        handle = Handle(self, req)
        ident = Ice.Identity(f"Handle-{uuid.uuid4()}", self.session.uuid)
        self.adapter.add(handle, ident)
        self.owned.append(ident)
        return omero.cmd.HandlePrx.uncheckedCast(self.adapter.createProxy(ident))

    def destroy(self, current=None):
        self.destroy_factory()

    def destroy_factory(self) -> None:
        """Detach this client; close the session at zero references unless detached
        (omero-blitz src/main/java/omero/cmd/SessionI.java close/destroy)."""
        self.server.drop_factory(self)
        s = self.session
        s.refs = max(0, s.refs - 1)
        if self.do_close and s.refs < 1:
            self.server.end_session(s)


# --- services ---------------------------------------------------------------------------


@implements(omero.api.IAdmin)
class AdminService(Servant):
    def getEventContext(self, current):
        s = self.session
        g = self.db.get("ExperimenterGroup", s.group_id)
        ec = omero.sys.EventContext()
        ec.shareId = -1
        ec.sessionId = unwrap(s.model.id)
        ec.sessionUuid = s.uuid
        ec.userId = s.user_id
        ec.userName = unwrap(s.user.omeName)
        ec.sudoerId = None
        ec.sudoerName = None
        ec.groupId = s.group_id
        ec.groupName = unwrap(g.name)
        ec.isAdmin = s.is_admin()
        ec.adminPrivileges = []
        ec.eventId = -1
        ec.eventType = "User"
        ec.memberOfGroups = list(s.user._member_of)
        ec.leaderOfGroups = []
        ec.groupPermissions = g.details.permissions
        return ec

    def lookupGroup(self, name, current):
        g = self.db.group_by_name(name)
        if g is None:  # omero-server ome/logic/AdminImpl.java lookupGroup
            raise omero.ApiUsageException(message=f"No such group: {name}")
        return shallow(g)

    def lookupExperimenter(self, name, current):
        e = self.db.user_by_name(name)
        if e is None:
            raise omero.ApiUsageException(message=f"No such experimenter: {name}")
        return shallow(e)

    def getGroup(self, gid, current):
        return shallow(self.load("ExperimenterGroup", gid))

    def getExperimenter(self, eid, current):
        return shallow(self.load("Experimenter", eid))

    def getMemberOfGroupIds(self, exp, current):
        return list(self.load("Experimenter", unwrap(exp.id))._member_of)

    def getSecurityRoles(self, current):
        return omero.sys.Roles(0, "root", 0, "system", 1, "user", 2, "guest", 1, "guest")

    def _admin(self) -> None:
        if not self.session.is_admin():
            raise omero.SecurityViolation(message="Admin privileges required")

    def createGroup(self, group, current):
        self._admin()
        perms = str(group.details.permissions) if group.details.permissions else PRIVATE
        return unwrap(self.db.add_group(unwrap(group.name), perms).id)

    def createExperimenterWithPassword(self, user, password, default, groups, current):
        self._admin()
        ids = [unwrap(default.id)] + [unwrap(g.id) for g in groups if unwrap(g.id) !=
                                      unwrap(default.id)] + [1]
        return unwrap(self.db.add_user(unwrap(user.omeName), unwrap(password), ids).id)

    def addGroups(self, user, groups, current):
        self._admin()
        member = self.load("Experimenter", unwrap(user.id))._member_of
        member += [unwrap(g.id) for g in groups if unwrap(g.id) not in member]


@implements(omero.api.IConfig)
class ConfigService(Servant):
    def getConfigValue(self, key, current):
        if key == "omero.router.insecure" and self.server.insecure_port:
            return (f"OMERO.Glacier2/router:tcp -p {self.server.insecure_port} "
                    "-h @omero.host@")
        return self.server.config.get(key, "")

    def getVersion(self, current):
        return "5.6.0-double"

    def getClientConfigValues(self, current):
        return {}

    def getClientConfigDefaults(self, current):
        return {}

    def getDatabaseUuid(self, current):
        return self.server.db_uuid

    def getServerTime(self, current):
        return now()


@implements(omero.api.ISession)
class SessionService(Servant):
    def getSession(self, uuid_, current):
        s = self.server.sessions.get(uuid_)
        if s is None or not s.alive:
            raise omero.RemovedSessionException(message=f"No session with uuid: {uuid_}")
        return copy.copy(s.model)

    def getReferenceCount(self, uuid_, current):
        s = self.server.sessions.get(uuid_)
        return 0 if s is None or not s.alive else s.refs

    def closeSession(self, sess, current):
        s = self.server.sessions.get(unwrap(sess.uuid))
        if s is None or not s.alive:
            return -2
        s.refs = max(0, s.refs - 1)
        if s.refs < 1:
            self.server.end_session(s)
        return s.refs


@implements(omero.api.IQuery)
class QueryService(Servant):
    def findAllByQuery(self, query, params, current):
        return self.runner(current).run(query, params)

    def findByQuery(self, query, params, current):
        found = self.runner(current).run(query, params)
        if len(found) > 1:  # omero-server src/main/java/ome/logic/QueryImpl.java throwNonUnique
            raise omero.ApiUsageException(message=(
                f"Query named:\n\n\t{query}\n\nhas returned more than one Object\n"
                "findBy methods must return a single value.\n"
                "Please try findAllBy methods for queries which return Lists."))
        return found[0] if found else None

    def projection(self, query, params, current):
        return self.runner(current).run(query, params, projection=True)

    def get(self, klass, oid, current):
        return shallow(self.load(kind_of(klass), oid))

    def find(self, klass, oid, current):
        obj = self.db.get(kind_of(klass), oid)
        return shallow(obj) if obj is not None and self.visible(obj) else None

    def findAll(self, klass, flt, current):
        return [shallow(o) for o in self.db.of_kind(kind_of(klass)) if self.visible(o)]


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


@implements(omero.api.IPixels)
class PixelsService(Servant):
    def createImage(self, sx, sy, sz, st, channels, ptype, name, description, current):
        # omero-server src/main/java/ome/logic/PixelsImpl.java createImage
        if not channels:
            raise omero.ValidationException(message="Channel list must be filled.")
        if min(sx, sy, sz, st) < 1:  # the pixels table's CHECK (size* > 0) constraints
            raise omero.ValidationException(message="Pixels sizes must be positive")
        ptype = self.load("PixelsType", unwrap(ptype.id))
        image = M.ImageI()
        image.setName(rstring(name))
        if description:
            image.setDescription(rstring(description))
        image.setAcquisitionDate(now())
        pixels = M.PixelsI()
        pixels.setImage(image)
        pixels.setPixelsType(M.PixelsTypeI(unwrap(ptype.id), False))
        order = next(o for o in self.db.of_kind("DimensionOrder") if unwrap(o.value) == "XYZCT")
        pixels.setDimensionOrder(M.DimensionOrderI(unwrap(order.id), False))
        for k, v in zip("XYZCT", (sx, sy, sz, len(channels), st), strict=True):
            getattr(pixels, f"setSize{k}")(rint(v))
        pixels.setSha1(rstring("Pending..."))
        objs = [image, pixels]
        for _ in channels:
            ch = M.ChannelI()
            ch.setPixels(pixels)
            ch.setLogicalChannel(M.LogicalChannelI())
            objs += [ch]
        saved = save_graph(self, [image, pixels] + objs[2:])
        pid = unwrap(saved[1].id)
        width = int(unwrap(ptype.bitSize)) // 8 or 1
        self.db.pixel_data[pid] = PixelData(
            self.db.workdir / "pixels" / str(pid), (sx, sy, sz, len(channels), st), width,
            unwrap(ptype.value), sx * sy > MAX_PLANE)
        return rlong(unwrap(saved[0].id))

    def setChannelGlobalMinMax(self, pid, c, lo, hi, current):
        self.load("Pixels", pid)

    def retrievePixDescription(self, pid, current):
        q = ("select p from Pixels p join fetch p.pixelsType join fetch p.channels c "
             "join fetch c.logicalChannel where p.id = :id")
        return Runner(self.db, self.visible).run(q, omero.sys.ParametersI().addId(pid))[0]


@implements(omero.api.IRenderingSettings)
class RenderingSettings(Servant):
    """Rendering settings exist per (pixels, user) once reset; they need the pixels on disk
    (omero-server ome/logic/RenderingSettingsImpl.java reads them through
    PixelsService.getPixelBuffer(pixels, false), which refuses missing pixels)."""

    def _pixels_of(self, kind: str, oid: int) -> list[int]:
        kind = kind_of(kind)
        obj = self.load(kind, oid)
        if kind == "Pixels":
            return [oid]
        if kind == "Image":
            return [unwrap(p.id) for p in self.db.children(obj, "pixels")]
        if kind == "Dataset":
            return [pid for li in self.db.children(obj, "imageLinks")
                    for pid in self._pixels_of("Image", unwrap(li.child.id))]
        raise omero.ApiUsageException(message=f"resetDefaults on {kind} is not supported")

    def _reset(self, pid: int) -> None:
        d = self.db.pixel_data.get(pid)
        if d is None or not d.exists:  # PixelsService._getPixelBuffer, read mode
            raise omero.LockTimeout(
                message="Pixels pyramid missing, being created or import in progress."
                if d is not None and d.pyramid else "Import in progress.",
                backOff=15000, seconds=0)
        self.db.rendering.add((pid, self.session.user_id))

    def resetDefaultsInSet(self, kind, ids, current):
        done = []
        for oid in ids:
            for pid in self._pixels_of(kind, oid):
                self._reset(pid)
            done.append(oid)
        return done

    def resetDefaultsInImage(self, iid, current):
        for pid in self._pixels_of("Image", iid):
            self._reset(pid)

    def resetDefaultsForPixels(self, pid, current):
        self._pixels_of("Pixels", pid)
        self._reset(pid)


class Stateful(Servant):
    def close(self, current):
        self.sf.adapter.remove(current.id)
        if current.id in self.sf.stateful:
            self.sf.stateful.remove(current.id)

    def activate(self, current):
        pass

    def passivate(self, current):
        pass


@implements(omero.api.RawPixelsStore)
class RawPixelsStore(Stateful):
    """Pixel rules from omero-romio: RomioPixelBuffer (no pyramid) and
    BfPyramidPixelBuffer (pyramid), chosen by PixelsService.requiresPixelsPyramid."""

    pid: int | None = None
    modified = wrote = False
    writable = False

    def _data(self) -> PixelData:
        if self.pid is None:
            raise omero.ApiUsageException(message="setPixelsId has not been called")
        return self.db.pixel_data[self.pid]

    def _bytes(self) -> PixelData:
        """The buffer, for an operation that reads or writes pixel bytes."""
        d = self._data()
        if not d.pyramid and self.writable:
            d.exists = True  # RomioPixelBuffer opens (creates) its file on first access
        return d

    def setPixelsId(self, pid, bypass, current):
        obj = self.db.get("Pixels", pid)
        if obj is None or not self.visible(obj) or pid not in self.db.pixel_data:
            raise omero.ValidationException(message=f"Cannot read pixels id={pid}")
        # PixelsService.java _getPixelBuffer: pixels already on disk (ROMIO file or
        # pyramid) come back read-only; only a new pixels set is written.
        self.writable = not self.db.pixel_data[pid].exists
        self.pid = pid
        self.modified = False

    def _writable(self, d: PixelData) -> None:
        if not self.writable:
            raise omero.ApiUsageException(message=(
                "In read-only mode!" if d.pyramid  # BfPyramidPixelBuffer.setTile
                else "Write-method not permitted."))  # RomioPixelBuffer.throwIfReadOnly

    def getPixelsId(self, current):
        return self._data() and self.pid

    def requiresPixelsPyramid(self, current):
        return self._data().pyramid

    def getTileSize(self, current):
        d = self._data()
        if d.pyramid:
            return [PYRAMID_TILE, PYRAMID_TILE]
        # RomioPixelBuffer.getTileSize: full rows, as many as fit 1 MiB (at least one)
        rows = max(1, min(d.size_y, (1024 * 1024) // (d.size_x * d.byte_width)))
        return [d.size_x, rows]

    def getResolutionLevels(self, current):
        return 1

    def getByteWidth(self, current):
        return self._data().byte_width

    def getPlaneSize(self, current):
        return self._data().plane_size

    def getStackSize(self, current):
        return self._data().plane_size * self._data().size_z

    def getTimepointSize(self, current):
        d = self._data()
        return d.plane_size * d.size_z * d.size_c

    def getTotalSize(self, current):
        d = self._data()
        return d.plane_size * d.size_z * d.size_c * d.size_t

    def isSigned(self, current):
        return self._data().pixels_type.startswith("int") or self._data().pixels_type in (
            "float", "double")

    def isFloat(self, current):
        return self._data().pixels_type in ("float", "double")

    def _no_pyramid(self) -> PixelData:
        d = self._bytes()
        self._writable(d)
        if d.pyramid:  # BfPyramidPixelBuffer.setPlane/setStack/setTimepoint
            raise omero.InternalException(message=(
                "java.lang.UnsupportedOperationException: Non-tile based writing unsupported."))
        return d

    def _write(self, d: PixelData, buf: bytes, planes: list[tuple[int, int, int]]) -> None:
        if len(buf) != d.plane_size * len(planes):
            # RomioPixelBuffer.setPlane/setStack/setTimepoint: buffer length checked
            raise omero.InternalException(message=(
                f"java.nio.BufferOverflowException: buffer of {len(buf)} bytes for "
                f"{len(planes)} plane(s) of {d.plane_size} bytes"))
        # the planes of one call are contiguous in XYZCT order
        d.write(d.offset(*planes[0]), buf)
        self.modified = self.wrote = True

    def setPlane(self, buf, z, c, t, current):
        d = self._no_pyramid()
        self._write(d, buf, [(z, c, t)])

    def setStack(self, buf, z, c, t, current):
        d = self._no_pyramid()
        self._write(d, buf, [(zz, c, t) for zz in range(d.size_z)])

    def setTimepoint(self, buf, t, current):
        d = self._no_pyramid()
        self._write(d, buf, [(z, c, t) for c in range(d.size_c) for z in range(d.size_z)])

    def setTile(self, buf, z, c, t, x, y, w, h, current):
        d = self._bytes()
        self._writable(d)
        if not d.pyramid and x != 0:  # RomioPixelBuffer.setTile
            raise omero.InternalException(message=(
                "java.lang.UnsupportedOperationException: ROMIO pixel buffer only supports "
                "0 offseted tile writes."))
        if not d.pyramid and w != d.size_x:
            raise omero.InternalException(message=(
                "java.lang.UnsupportedOperationException: ROMIO pixel buffer only supports "
                "full row writes."))
        if x < 0 or y < 0 or w < 1 or h < 1 or x + w > d.size_x or y + h > d.size_y:
            raise omero.ApiUsageException(message=f"tile {x},{y} {w}x{h} outside the plane")
        bw = d.byte_width
        if len(buf) != w * h * bw:
            raise omero.InternalException(message="java.nio.BufferOverflowException")
        base, row = d.offset(z, c, t), d.size_x * bw
        if w == d.size_x:  # full rows: one contiguous write
            d.write(base + y * row, buf)
        else:
            for r in range(h):
                d.write(base + (y + r) * row + x * bw, buf[r * w * bw:(r + 1) * w * bw])
        self.modified = self.wrote = True

    def getPlane(self, z, c, t, current):
        return self._bytes().plane(z, c, t)

    def getStack(self, c, t, current):
        d = self._bytes()
        return d.read(d.offset(0, c, t), d.plane_size * d.size_z)

    def getTimepoint(self, t, current):
        d = self._bytes()
        return d.read(d.offset(0, 0, t), d.plane_size * d.size_z * d.size_c)

    def getTile(self, z, c, t, x, y, w, h, current):
        d = self._bytes()
        if x < 0 or y < 0 or x + w > d.size_x or y + h > d.size_y:
            raise omero.ApiUsageException(message=f"tile {x},{y} {w}x{h} outside the plane")
        base, bw, row = d.offset(z, c, t), d.byte_width, d.size_x * d.byte_width
        if w == d.size_x:
            return d.read(base + y * row, h * row)
        return b"".join(d.read(base + (y + r) * row + x * bw, w * bw) for r in range(h))

    def calculateMessageDigest(self, current):
        return bytes.fromhex(self._bytes().sha1())

    def save(self, current):
        # RawPixelsBean.save: sha1 of the buffer, and the Pixels row's update event
        # moves on (UpdateEventListener.java), so earlier-loaded copies are stale.
        if not self.modified or self.pid is None:
            return None
        d = self._data()
        stored = self.db.get("Pixels", self.pid)
        row = copy.copy(stored)
        row.setSha1(rstring(d.sha1()))
        row._details = copy.copy(stored.details)
        row._details.setUpdateEvent(M.EventI(self.db.new_event(), False))
        self.db.objects[("Pixels", self.pid)] = row
        self.modified = False
        return shallow(row)

    def close(self, current):
        self.save(current)  # RawPixelsBean.close calls save()
        if self.pid is not None and self.writable and self.db.pixel_data[self.pid].pyramid \
                and self.wrote:
            # BfPyramidPixelBuffer writes a temporary file, renamed to the pyramid on close
            self.db.pixel_data[self.pid].exists = True
        Stateful.close(self, current)


@implements(omero.api.RawFileStore)
class RawFileStore(Stateful):
    """omero-server src/main/java/ome/services/RawFileBean.java: save sets size and
    hash and moves the row's update event; close saves a modified file."""

    fid: int | None = None
    modified = False

    def setFileId(self, fid, current):
        self.load("OriginalFile", fid)
        self.fid = fid
        self.db.files.setdefault(fid, bytearray())

    def _buf(self) -> bytearray:
        if self.fid is None:
            raise omero.ApiUsageException(message="setFileId has not been called")
        return self.db.files[self.fid]

    def getFileId(self, current):
        return self.fid

    def write(self, buf, position, length, current):
        data = self._buf()
        if len(data) < position:
            data.extend(bytes(position - len(data)))
        data[position:position + length] = buf[:length]
        self.modified = True

    def read(self, position, length, current):
        return bytes(self._buf()[position:position + length])

    def size(self, current):
        return len(self._buf())

    def exists(self, current):
        return self.fid is not None

    def truncate(self, length, current):
        data = self._buf()
        if length >= len(data):
            return False
        del data[length:]
        self.modified = True
        return True

    def save(self, current):
        if self.fid is None or not self.modified:
            return None
        self.modified = False
        data = self._buf()
        stored = self.db.get("OriginalFile", self.fid)
        row = copy.copy(stored)
        row.setSize(rlong(len(data)))
        row.setHash(rstring(hashlib.sha1(data).hexdigest()))
        row._details = copy.copy(stored.details)
        row._details.setUpdateEvent(M.EventI(self.db.new_event(), False))
        self.db.objects[("OriginalFile", self.fid)] = row
        return shallow(row)

    def close(self, current):
        self.save(current)
        Stateful.close(self, current)


@implements(omero.api.ThumbnailStore)
class ThumbnailStore(Stateful):
    """omero-server src/main/java/ome/services/ThumbnailBean.java: setPixelsId says
    whether rendering settings exist (the user's or the owner's); thumbnails need them."""

    pid: int | None = None

    def setPixelsId(self, pid, current):
        px = self.load("Pixels", pid)
        self.pid = pid
        owner = unwrap(px.details.owner.id)
        return bool({(pid, self.session.user_id), (pid, owner)} & self.db.rendering)

    def _thumb(self, size: int) -> bytes:
        """A JPEG of the middle plane, channel 0 (what OMERO renders by default, roughly)."""
        import io

        import numpy as np
        from PIL import Image

        if self.pid is None:
            raise omero.ApiUsageException(message="Thumbnail service not ready: Pixels not set.")
        if not self.setPixelsId(self.pid, None):  # ThumbnailBean.errorIfNullRenderingDef
            raise omero.InternalException(message=(
                "Fatal error retrieving rendering settings or settings not loaded for Pixels "
                f"set id:{self.pid}"))
        d = self.db.pixel_data[self.pid]
        dtype = {"float": ">f4", "double": ">f8"}.get(
            d.pixels_type, f">{'u' if d.pixels_type.startswith('u') else 'i'}{d.byte_width}")
        plane = np.frombuffer(d.plane(d.size_z // 2, 0, 0), dtype).reshape(
            d.size_y, d.size_x).astype(float)
        lo, hi = float(plane.min()), float(plane.max())
        img = Image.fromarray(((plane - lo) / ((hi - lo) or 1) * 255).astype("uint8"))
        img.thumbnail((size, size))
        out = io.BytesIO()
        img.save(out, "JPEG")
        return out.getvalue()

    def getThumbnailByLongestSide(self, size, current):
        return self._thumb(unwrap(size) or 96)

    def getThumbnail(self, sx, sy, current):
        return self._thumb(max(unwrap(sx) or 96, unwrap(sy) or 96))

    def getThumbnailByLongestSideSet(self, size, ids, current):
        out = {}
        for pid in ids:
            self.setPixelsId(pid, current)
            out[pid] = self._thumb(unwrap(size) or 96)
        return out

    def thumbnailExists(self, sx, sy, current):
        return self.pid is not None

    def resetDefaults(self, current):
        pass

    def createThumbnails(self, current):
        pass

    def isInProgress(self, current):
        return False


# --- tables -----------------------------------------------------------------------------


@implements(omero.grid.SharedResources)
class SharedResources(Servant):
    def areTablesEnabled(self, current):
        return True

    def repositories(self, current):
        return omero.grid.RepositoryMap([], [])

    def newTable(self, repo, path, current):
        f = M.OriginalFileI()
        f.setName(rstring(path.rsplit("/", 1)[-1]))
        f.setPath(rstring(path.rsplit("/", 1)[0] if "/" in path else ""))
        f.setMimetype(rstring("OMERO.tables"))
        saved = save_graph(self, [f])[0]
        fid = unwrap(saved.id)
        self.db.tables[fid] = TableData(fid)
        return self._open(fid)

    def openTable(self, file, current):
        fid = unwrap(file.id)
        self.load("OriginalFile", fid)
        if fid not in self.db.tables:
            raise omero.ApiUsageException(message=f"OriginalFile:{fid} is not a table")
        return self._open(fid)

    def _open(self, fid: int):
        ident = Ice.Identity(f"Table-{uuid.uuid4()}", self.session.uuid)
        self.sf.adapter.add(Table(self.sf, fid), ident)
        self.sf.owned.append(ident)
        return omero.grid.TablePrx.uncheckedCast(self.sf.adapter.createProxy(ident))


COLUMN_KINDS = ("LongColumn", "DoubleColumn", "BoolColumn", "StringColumn", "FileColumn",
                "ImageColumn", "DatasetColumn", "RoiColumn", "WellColumn", "PlateColumn",
                "MaskColumn", "LongArrayColumn", "DoubleArrayColumn", "FloatArrayColumn")


@implements(omero.grid.Table)
class Table(Servant):
    """Column rules from omero-py src/omero/hdfstorageV2.py, columns.py and tables.py."""

    def __init__(self, sf: Any, fid: int) -> None:
        super().__init__(sf)
        self.fid = fid

    @property
    def data(self) -> TableData:
        return self.db.tables[self.fid]

    def getOriginalFile(self, current):
        return shallow(self.load("OriginalFile", self.fid))

    def initialize(self, cols, current):
        t = self.data
        if t.columns is not None:  # hdfstorageV2.py HdfStorage.initialize
            raise omero.ValidationException(message="Already initialized.")
        if not cols:
            raise omero.ApiUsageException(message="No columns provided")
        for c in cols:
            if not c.name:
                raise omero.ApiUsageException(message=f"Column unnamed: {c}")
            if c.name.startswith("__"):
                raise omero.ApiUsageException(message=f"Reserved column name: {c.name}")
            if type(c).__name__ not in COLUMN_KINDS:
                raise omero.ApiUsageException(message=f"unsupported column {type(c)}")
        names = [c.name for c in cols]
        for i, n in enumerate(names):
            if n in names[:i]:  # columns.py columns2definition
                raise omero.ApiUsageException(message=f"Duplicate column name: {n}")
        t.columns = [_empty(c) for c in cols]

    def _check_columns(self, cols):
        t = self.data
        if t.columns is None:
            raise omero.ApiUsageException(message="Not yet initialized")
        lengths = {len(c.values) for c in cols}
        if len(lengths) > 1:  # hdfstorageV2.py HdfStorage.append
            raise omero.ValidationException(message="Columns are of differing length")
        for c in cols:
            if isinstance(c, omero.grid.StringColumn) and any(
                    len(v.encode()) > c.size for v in c.values):  # columns.py arrays()
                raise omero.ValidationException(message=(
                        f"Maximum string (byte) length in column {c.name} is {c.size}"))
        if [(type(c).__name__, c.name) for c in cols] != [
                (type(c).__name__, c.name) for c in t.columns] or any(
                isinstance(c, omero.grid.StringColumn) and c.size > mine.size
                for c, mine in zip(cols, t.columns, strict=True)):
            # PyTables refuses rows that do not fit the table; tables.py's @remoted
            # turns that into an InternalException.
            raise omero.InternalException(message=(
                "ValueError: rows parameter cannot be converted into a recarray object "
                "compliant with table: columns "
                f"{[(type(c).__name__, c.name) for c in cols]} do not match the table"))
        return lengths.pop() if lengths else 0

    def addData(self, cols, current):
        n = self._check_columns(cols)
        for mine, c in zip(self.data.columns, cols, strict=True):
            mine.values = list(mine.values) + list(c.values)
        self.data.rows += n

    def getHeaders(self, current):
        if self.data.columns is None:
            raise omero.ApiUsageException(message="Not yet initialized")
        return [_empty(c) for c in self.data.columns]

    def getNumberOfRows(self, current):
        return self.data.rows

    def _data(self, cols: list[int], rows: list[int]):
        t = self.data
        if t.columns is None:
            raise omero.ApiUsageException(message="Not yet initialized")
        if any(r < 0 or r >= t.rows for r in rows):
            raise omero.ApiUsageException(message=f"row numbers out of range 0..{t.rows - 1}")
        out = []
        for i in cols:
            if not 0 <= i < len(t.columns):
                raise omero.ApiUsageException(message=f"no column {i}")
            c = _empty(t.columns[i])
            c.values = [t.columns[i].values[r] for r in rows]
            out.append(c)
        return omero.grid.Data(columns=out, rowNumbers=list(rows), lastModification=0)

    def read(self, cols, start, stop, current):
        return self._data(list(cols), list(range(start, min(stop, self.data.rows))))

    def readCoordinates(self, rows, current):
        return self._data(list(range(len(self.data.columns or []))), list(rows))

    def slice(self, cols, rows, current):
        return self._data(list(cols), list(rows) or list(range(self.data.rows)))

    def getAllMetadata(self, current):
        return {}

    def close(self, current):
        self.sf.adapter.remove(current.id)

    def delete(self, current):
        self.db.tables.pop(self.fid, None)


def _empty(c: Any) -> Any:
    if isinstance(c, omero.grid.StringColumn):
        return omero.grid.StringColumn(c.name, c.description, c.size, [])
    return type(c)(c.name, c.description, [])


# --- Delete2 ----------------------------------------------------------------------------

# What a delete takes with it (omero-blitz src/main/resources/ome/services/graph-rules/
# blitz-delete-rules.xml): containers their orphaned contents, images their pixels,
# channels and plane infos, every object its links; annotations left unlinked, but file
# and tag annotations only when the annotated object's owner owns them too.
#: What a delete of each kind takes with it: (collection, the end to follow or None).
CONTENTS: dict[str, list[tuple[str, str | None]]] = {
            "Project": [("datasetLinks", "child")], "Dataset": [("imageLinks", "child")],
            "Image": [("pixels", None)], "Pixels": [("channels", None), ("planeInfo", None)]}


@implements(omero.cmd.Handle)
class Handle(Servant):
    """A finished command: Delete2 runs at submit (omero-blitz omero/cmd/graphs/Delete2I.java)."""

    def __init__(self, sf: Any, req: Any) -> None:
        super().__init__(sf)
        self.req = req
        self.status = omero.cmd.Status()
        self.status.flags = []
        self.status.steps = 1
        self.status.currentStep = 1
        try:
            self.response = self._run(req)
        except omero.ServerError as exc:
            self.response = omero.cmd.ERR(category="::omero::cmd::Delete2", name="graph-fail",
                                          parameters={"message": exc.message})
        if isinstance(self.response, omero.cmd.ERR):
            self.status.flags = [omero.cmd.State.FAILURE]

    def _run(self, req: Any) -> Any:
        if not isinstance(req, omero.cmd.Delete2):
            return omero.cmd.ERR(category=type(req).__name__, name="unsupported-request",
                                 parameters={"message": "the double runs Delete2 only"})
        targets: list[Any] = []
        for klass, ids in (req.targetObjects or {}).items():
            kind = kind_of(klass)
            if getattr(M, kind + "I", None) is None:
                return omero.cmd.GraphException(
                    category="::omero::cmd::Delete2", name="bad-class",
                    parameters={}, message=f"unknown class {klass}")
            for oid in ids:
                obj = self.db.get(kind, oid)
                if obj is None or not self.visible(obj):
                    return omero.cmd.GraphException(
                        category="::omero::cmd::Delete2", name="graph-fail", parameters={},
                        message=f"cannot read {kind}[{oid}]")
                if (unwrap(obj.details.owner.id) != self.session.user_id
                        and not self.session.is_admin()):
                    return omero.cmd.GraphException(
                        category="::omero::cmd::Delete2", name="graph-fail", parameters={},
                        message=f"not permitted to delete {kind}[{oid}]")
                targets.append(obj)
        doomed: dict[tuple[str, int], Any] = {}
        for obj in targets:
            self._collect(obj, doomed)
        # annotations left without any link
        for key, obj in list(doomed.items()):
            if key[0].endswith("AnnotationLink"):
                ann = self.db.get("Annotation", unwrap(obj.child.id))
                if ann is None:
                    continue
                if isinstance(ann, M.TagAnnotation | M.FileAnnotation) and unwrap(
                        ann.details.owner.id) != unwrap(obj.details.owner.id):
                    continue
                links = [o for (k, _), o in self.db.objects.items() if k.endswith(
                    "AnnotationLink") and unwrap(o.child.id) == unwrap(ann.id)]
                if all((kind_of(li), unwrap(li.id)) in doomed for li in links):
                    doomed[(kind_of(ann), unwrap(ann.id))] = ann
        out: dict[str, list[int]] = {}
        for kind, oid in doomed:
            out.setdefault(f"ome.model.{kind}", []).append(oid)
        if not req.dryRun:
            for key in doomed:
                self.db.objects.pop(key, None)
                if key[0] == "Pixels":
                    gone = self.db.pixel_data.pop(key[1], None)
                    if gone is not None:
                        gone.remove()
                if key[0] == "OriginalFile":
                    self.db.files.pop(key[1], None)
                    self.db.tables.pop(key[1], None)
        return omero.cmd.Delete2Response(deletedObjects=out)

    def _collect(self, obj: Any, doomed: dict) -> None:
        key = (kind_of(obj), unwrap(obj.id))
        if key in doomed:
            return
        doomed[key] = obj
        # every link pointing at it (link ends are stored as proxies of the concrete class)
        for (k, _), o in list(self.db.objects.items()):
            if k.endswith("Link") and key in ((kind_of(o.parent), unwrap(o.parent.id)),
                                              (kind_of(o.child), unwrap(o.child.id))):
                doomed[(k, unwrap(o.id))] = o
        for name, via in CONTENTS.get(key[0], []):
            for child in self.db.children(obj, name):
                target = self.db.get(kind_of(getattr(child, "_" + via)),
                                     unwrap(getattr(child, "_" + via).id)) if via else child
                if target is None:
                    continue
                if via:  # a contained object goes only when no other container holds it
                    others = [o for (k, _), o in self.db.objects.items() if k == kind_of(child)
                              and unwrap(o.child.id) == unwrap(target.id)
                              and (k, unwrap(o.id)) not in doomed and o is not child]
                    if others:
                        continue
                self._collect(target, doomed)
        if key[0] == "FileAnnotation" and obj.file is not None:
            f = self.db.get("OriginalFile", unwrap(obj.file.id))
            if f is not None:
                doomed[("OriginalFile", unwrap(f.id))] = f

    def getRequest(self, current):
        return self.req

    def getResponse(self, current):
        return self.response

    def getStatus(self, current):
        return self.status

    def addCallback(self, cb, current):
        pass

    def removeCallback(self, cb, current):
        pass

    def cancel(self, current):
        return False

    def close(self, current):
        self.sf.adapter.remove(current.id)


# --- the server -------------------------------------------------------------------------


def make_certificate(directory: Path) -> Path:
    """A self-signed certificate and key, as omero-certificates sets up for a server."""
    if shutil.which("openssl") is None:
        raise RuntimeError("the OMERO double needs the openssl command for its certificate")
    cert, key = directory / "server.pem", directory / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    # IceSSL 3.6 wants key and certificate in one PKCS#12 file (KeyFile is deprecated).
    p12 = directory / "server.p12"
    subprocess.run(["openssl", "pkcs12", "-export", "-in", str(cert), "-inkey", str(key),
                    "-out", str(p12), "-passout", "pass:"], check=True, capture_output=True)
    return p12


class ConnectionWatch(Ice.ConnectionCallback):
    """Glacier2 destroys a client's session when its connection closes (as on a
    lost network): the factories logged in over that connection are destroyed."""

    def __init__(self, server: DoubleServer, key: str) -> None:
        self.server = server
        self.key = key
        self.factories: list[ServiceFactory] = []

    def heartbeat(self, con):
        pass

    def closed(self, con):
        with self.server.lock:
            self.server.watches.pop(self.key, None)
            for sf in self.factories:
                if sf in sf.session.factories:  # not yet destroyed by destroySession
                    sf.destroy_factory()


class GoneLocator(Ice.ServantLocator):
    """Requests for identities no longer served (a destroyed session's services): from
    a connection without a session Glacier2 closes the connection; otherwise
    ObjectNotExistException, as blitz answers for a removed servant."""

    def __init__(self, server: DoubleServer) -> None:
        self.server = server

    def locate(self, current):
        with self.server.lock, contextlib.suppress(_NoSession):
            self.server.check_connection(current)
        return None

    def finished(self, current, servant, cookie):
        pass

    def deactivate(self, category):
        pass


class DoubleServer:
    """The Ice communicator, adapter, router and database of one running double."""

    def __init__(self, host: str, port: int, insecure_port: int | None, user: str,
                 password: str, workdir: Path) -> None:
        self.lock = threading.RLock()
        self.db = Database(workdir)
        self.db_uuid = str(uuid.uuid4())
        self.config: dict[str, str] = {"omero.db.uuid": self.db_uuid}
        self.sessions: dict[str, SessionState] = {}
        self.by_client: dict[str, ServiceFactory] = {}
        self.watches: dict[str, ConnectionWatch] = {}
        self.host, self.port, self.insecure_port = host, port, insecure_port
        # The groups and root user every OMERO has (ids as in the Roles).
        self.db.add_group("system", "rwr---", oid=0)
        self.db.add_group("user", "rwr---", oid=1)
        self.db.add_group("guest", "rw----", oid=2)
        self.db.add_user(user, password, [0, 1], oid=0)
        cert = make_certificate(workdir)
        init = Ice.InitializationData()
        init.properties = Ice.createProperties()
        props = {
            "Ice.Plugin.IceSSL": "IceSSL:createIceSSL",
            "IceSSL.CertFile": str(cert), "IceSSL.Password": "",
            "IceSSL.VerifyPeer": "0", "IceSSL.Ciphers": "ADH:HIGH",
            "Ice.MessageSizeMax": str(SERVER_MESSAGE_SIZE_MAX_KB),
            "Ice.ThreadPool.Server.SizeMax": "8", "Ice.ACM.Server.Timeout": "0",
            "Ice.ImplicitContext": "Shared",
        }
        endpoints = f"ssl -h {host} -p {port}"
        if insecure_port:
            endpoints += f":tcp -h {host} -p {insecure_port}"
        props["OMERO.Glacier2.Endpoints"] = endpoints
        for k, v in props.items():
            init.properties.setProperty(k, v)
        self.ic = Ice.initialize(init)
        # The model and rtype factories omero.client registers too (omero/clients.py).
        from omero import ObjectFactoryRegistrar

        ObjectFactoryRegistrar.registerObjectFactory(self.ic, None)
        for factory in omero.rtypes.ObjectFactories.values():
            factory.register(self.ic)
        self.adapter = self.ic.createObjectAdapter("OMERO.Glacier2")
        self.adapter.add(Router(self), Ice.stringToIdentity("OMERO.Glacier2/router"))
        self.adapter.addServantLocator(GoneLocator(self), "")
        self.adapter.activate()

    def login(self, user: str, password: str, current: Any):
        """Glacier2 createSession: a password login, or joining by session uuid
        (omero-blitz ome/services/blitz/fire/SessionManagerI.java create)."""
        client_id = current.ctx.get("omero.client.uuid") or str(uuid.uuid4())
        joined = self.sessions.get(user)
        if joined is not None and joined.alive and user == password:
            session = joined
            session.refs += 1  # SessionManagerImpl: each join is one more reference
        else:
            e = self.db.user_by_name(user)
            if e is None or self.db.passwords.get(user) != password:
                raise Glacier2.PermissionDeniedException("Password check failed")
            session = SessionState(self, e)
            self.sessions[session.uuid] = session
            group = current.ctx.get("omero.group")
            if group:
                g = self.db.group_by_name(group) or (self.db.get("ExperimenterGroup", int(
                    group)) if group.isdigit() else None)
                if g is None or unwrap(g.id) not in e._member_of:
                    raise Glacier2.CannotCreateSessionException(f"no group {group}")
                session.group_id = unwrap(g.id)
        sf = ServiceFactory(self, session, client_id, current.adapter)
        session.factories.append(sf)
        old = self.by_client.pop(client_id, None)
        if old is not None:
            old.destroy_factory()
        self.by_client[client_id] = sf
        current.adapter.add(sf, sf.identity)
        if current.con is not None:
            key = current.con.toString()
            watch = self.watches.get(key)
            if watch is None:
                watch = self.watches[key] = ConnectionWatch(self, key)
                current.con.setCallback(watch)
            watch.factories.append(sf)
        return Glacier2.SessionPrx.uncheckedCast(current.adapter.createProxy(sf.identity))

    def check_connection(self, current: Any) -> None:
        """Glacier2 forwards requests only for connections with a live session; on any
        other it closes the connection forcefully (the client sees ConnectionLost)."""
        if current is None or current.con is None:
            return
        watch = self.watches.get(current.con.toString())
        if watch is None or not any(sf in self.by_client.values() for sf in watch.factories):
            current.con.close(True)
            raise _NoSession()

    def drop_factory(self, sf: ServiceFactory) -> None:
        for ident in [sf.identity] + sf.owned:
            with contextlib.suppress(Ice.NotRegisteredException):
                sf.adapter.remove(ident)
        sf.stateful.clear()
        sf.owned.clear()
        sf.services.clear()
        if sf in sf.session.factories:
            sf.session.factories.remove(sf)
        for key, value in list(self.by_client.items()):
            if value is sf:
                del self.by_client[key]

    def end_session(self, session: SessionState) -> None:
        session.alive = False
        for sf in list(session.factories):
            self.drop_factory(sf)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            state = self.db.snapshot()
            state["sessions"] = [{"uuid": s.uuid, "user": unwrap(s.user.omeName), "refs": s.refs,
                                  "alive": s.alive, "group": s.group_id}
                                 for s in self.sessions.values()]
            return state

    def shutdown(self) -> None:
        """Stop serving and delete the pixel files (the state file keeps their SHA-1s)."""
        self.ic.destroy()
        shutil.rmtree(self.db.workdir / "pixels", ignore_errors=True)


def check_login(host: str, port: int, user: str, password: str) -> None:
    """Log in once with the real omero.client (the ready check)."""
    c = omero.client(host, port)
    try:
        c.createSession(user, password)
        c.getSession().getAdminService().getEventContext()
    finally:
        c.__del__()


__all__ = ["DoubleServer", "check_login"]
