"""The double's ServiceFactory: one client's view of a session, handing out the services."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import Ice
import omero
import omero.api
import omero.cmd
import omero.grid
import omero.model as M
from omero.rtypes import unwrap

from ._base import SessionState, implements
from .admin import AdminService, ConfigService, SessionService
from .container import ContainerService
from .delete import Handle
from .files import RawFileStore
from .metadata import MetadataService
from .model import proxy
from .pixels import PixelsService, RawPixelsStore, RenderingSettings, ThumbnailStore
from .query import QueryService
from .rendering import RenderingEngine
from .scripts import ScriptService
from .tables import SharedResources
from .types import TypesService
from .update import UpdateService

if TYPE_CHECKING:
    from .server import DoubleServer


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

    def getContainerService(self, current=None):
        return self._service("IContainer", ContainerService, omero.api.IContainerPrx)

    def getMetadataService(self, current=None):
        return self._service("IMetadata", MetadataService, omero.api.IMetadataPrx)

    def getScriptService(self, current=None):
        return self._service("IScript", ScriptService, omero.api.IScriptPrx)

    def getTypesService(self, current=None):
        return self._service("ITypes", TypesService, omero.api.ITypesPrx)

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

    def createRenderingEngine(self, current=None):
        return self._service("RenderingEngine", RenderingEngine, omero.api.RenderingEnginePrx,
                             True)

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
