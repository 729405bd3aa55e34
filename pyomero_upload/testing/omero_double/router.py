"""The double's Glacier2 router: what ``omero.client`` needs of it to log in."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import Glacier2
import Glacier2_Router_ice  # noqa: F401  (defines the Slice SessionNotExistException)
import Ice

from ._base import SESSION_TIMEOUT_MS, implements

if TYPE_CHECKING:
    from .server import DoubleServer


def _slice_exception(type_id: str) -> type:
    """The Slice class of a Glacier2 user exception.

    Ice 3.6's ``Glacier2.py`` defines plain Python classes ``SessionNotExistException``
    and ``RestartSessionException`` (for its ``Glacier2.Application``) after importing
    the generated ``Glacier2_Router_ice``, so ``Glacier2.SessionNotExistException`` is
    not the user exception: raised by a servant it reaches the client as an Ice
    "unknown" exception, not one it can catch.  This is the generated class, found by
    its Slice name."""
    found = [k for k in _subclasses(Ice.UserException) if getattr(k, "_ice_name", "") == type_id]
    if not found:
        raise RuntimeError(f"no Slice class for {type_id}")
    return found[0]


def _subclasses(cls: type) -> list[type]:
    out: list[type] = []
    subs: list[type] = cls.__subclasses__()
    for sub in subs:
        out += [sub, *_subclasses(sub)]
    return out


SessionNotExistException = _slice_exception("Glacier2::SessionNotExistException")


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
        # Glacier2 keeps its session per client connection until the client destroys it
        # or the connection closes (zeroc-ice cpp/src/Glacier2/SessionRouterI.cpp
        # destroySession: SessionNotExistException only for a connection without one).
        # Blitz ending the OMERO session (ISession.closeSession, as BlitzGateway.close's
        # killSession does) removes its ServiceFactory but does not tell Glacier2
        # (omero-blitz ome/services/blitz/fire/SessionManagerI.java reapSession), so the
        # client's destroySession that follows still succeeds, quietly.
        watch = self.server.watches.get(current.con.toString()) if current.con else None
        client = current.ctx.get("omero.client.uuid", "")
        if watch is not None:
            if not watch.routed:
                raise SessionNotExistException()
            watch.routed = False
        elif client not in self.server.by_client:
            raise SessionNotExistException()
        sf = self.server.by_client.pop(client, None)
        if sf is not None:
            sf.destroy_factory()

    def getSessionTimeout(self, current):
        return SESSION_TIMEOUT_MS // 1000

    def getACMTimeout(self, current):
        return 0
