"""The double's Glacier2 router: what ``omero.client`` needs of it to log in."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import Glacier2
import Ice

from ._base import SESSION_TIMEOUT_MS, implements

if TYPE_CHECKING:
    from .server import DoubleServer


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
