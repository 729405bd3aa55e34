"""The OMERO double's server: the Ice communicator, adapter and login of one running double.

The servants are in their own modules, one per service, on omero-py's generated
servant classes: :mod:`._base` (what they share), :mod:`.router` (Glacier2),
:mod:`.factory` (ServiceFactory), :mod:`.admin`, :mod:`.query`, :mod:`.update`,
:mod:`.pixels`, :mod:`.files`, :mod:`.tables` and :mod:`.delete`.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

import Glacier2
import Ice
import omero
from omero.rtypes import unwrap

from ._base import SessionState, _NoSession
from .factory import ServiceFactory
from .model import Database
from .router import Router

# The server's Ice.MessageSizeMax in KB: 64 MB (ome/openmicroscopy etc/templates/grid/
# templates.xml, the "Basics" properties of the Glacier2 router and Blitz; omero-py's client
# allows 250 MB, omero_Constants_ice.py MESSAGESIZEMAX). Ice itself refuses bigger requests.
SERVER_MESSAGE_SIZE_MAX_KB = 65536


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
        #: Glacier2 holds a session for this connection (createSession until
        #: destroySession or the connection's end).
        self.routed = False

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
                 password: str, workdir: Path, store: Path | None = None) -> None:
        self.lock = threading.RLock()
        #: Where the database is kept between runs (None: in memory only).
        self.store = store
        self.sessions: dict[str, SessionState] = {}
        self.by_client: dict[str, ServiceFactory] = {}
        self.watches: dict[str, ConnectionWatch] = {}
        self.host, self.port, self.insecure_port = host, port, insecure_port
        if store is not None and store.exists():
            # A restart: the same database (and so the same omero.db.uuid); sessions
            # are not kept, so clients log in again.
            with open(store, "rb") as f:
                self.db, self.db_uuid = pickle.load(f)  # noqa: S301 (our own file)
        else:
            self._init_db(workdir, user, password)
        self.config: dict[str, str] = {"omero.db.uuid": self.db_uuid}
        self._start_ice(workdir, host, port, insecure_port)

    def _init_db(self, workdir: Path, user: str, password: str) -> None:
        self.db = Database(workdir)
        self.db_uuid = str(uuid.uuid4())
        # The groups and root user every OMERO has (ids as in the Roles).
        self.db.add_group("system", "rwr---", oid=0)
        self.db.add_group("user", "rwr---", oid=1)
        self.db.add_group("guest", "rw----", oid=2)
        self.db.add_user(user, password, [0, 1], oid=0)
        # The guest user (omero-common ome/system/Roles.java: guestId 1, in the "guest"
        # group only). Its stored password is empty, and PasswordUtil.isPasswordRequired
        # is false for the guest id, so ConfigurablePasswordProvider.comparePasswords
        # accepts any password (omero-server src/main/java/ome/security/auth/): OMERO.web's
        # connector logs in as guest/guest (omero-web omeroweb/connector.py
        # create_guest_connection).
        self.db.add_user("guest", "", [2], oid=1)
        self.db.users_without_password.add(1)
        self.persist()

    def _start_ice(self, workdir: Path, host: str, port: int, insecure_port: int | None
                   ) -> None:
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
            if e is None or not self.db.password_ok(e, password):
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
            watch.routed = True
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

    def persist(self) -> None:
        """Write the database to the store (where there is one), atomically: a kill at
        any moment leaves the last complete write.  Called after every call that may
        have changed it (the pixel files in the work folder are written in place)."""
        if self.store is None:
            return
        with self.lock:
            tmp = self.store.with_name(self.store.name + ".tmp")
            with open(tmp, "wb") as f:
                pickle.dump((self.db, self.db_uuid), f, protocol=pickle.HIGHEST_PROTOCOL)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.store)

    def shutdown(self) -> None:
        """Stop serving and delete the pixel files (the state file keeps their SHA-1s),
        unless a store keeps the database for the next start."""
        self.ic.destroy()
        if self.store is None:
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
