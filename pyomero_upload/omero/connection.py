"""Connecting to OMERO: settings, login or join, group, retries, reconnection.

:func:`connect` takes each setting from the first source that has it:
arguments, ``OMERO_*`` environment variables, a config file, the session that
``omero login`` stored, a prompt (:func:`pyomero_upload.credentials.resolve`).
:class:`Connection` is one logged-in session; it is closed on every exit path
and a session it only joined is left alive.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..credentials import StoredSession, resolve
from ..errors import (
    ConnectionLostError,
    ConnectionRefusedError_,
    LoginRefusedError,
    OmeroError,
    OmeroTimeoutError,
    UnknownHostError,
)
from . import _ice
from ._ice import require_omero

log = logging.getLogger(__name__)

#: Attempts and first back-off delay for a call that fails on the network.
RETRY_ATTEMPTS = 4
RETRY_DELAY_S = 1.0
#: omero-py's createSession raises this ClientError when the router never
#: answered (three Ice.ConnectTimeoutException in a row, omero/clients.py
#: createSession).  5.23.0 spells it "prox", so match the prefix.
NULL_PROXY = "Obtained null object prox"


@dataclass
class ConnectionSettings:
    """Where and as whom to connect; never persisted with the password."""

    host: str
    port: int = 4064
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    group: str | None = None
    secure: bool = True
    session_key: str | None = field(default=None, repr=False)
    timeout_s: float = 20.0


def sessions_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """The folder ``omero login`` stores sessions in, as omero-py's CLI finds it.

    ``OMERO_SESSIONDIR``, else the deprecated ``OMERO_SESSION_DIR``/omero/sessions,
    else omero-py's default (``$OMERO_USERDIR/sessions``, normally ~/omero/sessions):
    omero/plugins/sessions.py ``SessionsControl.store``.
    """
    env = os.environ if environ is None else environ
    if env.get("OMERO_SESSIONDIR"):
        return Path(env["OMERO_SESSIONDIR"])
    if env.get("OMERO_SESSION_DIR"):
        return Path(env["OMERO_SESSION_DIR"]) / "omero" / "sessions"
    if _ice.omero is None:
        return None
    from omero.util import get_omero_userdir

    return Path(str(get_omero_userdir())) / "sessions"


def stored_session(environ: Mapping[str, str] | None = None) -> StoredSession | None:
    """The session ``omero login`` left current (host, port, user, key), if any.

    Read with omero-py's own ``SessionsStore`` from the folder its CLI uses.  The
    port is the one stored with that session (its properties file), else the
    store's last port.  Nothing is created where no store exists.
    """
    folder = sessions_dir(environ)
    if folder is None or not folder.is_dir() or _ice.omero is None:
        return None
    try:
        from omero.util.sessions import SessionsStore

        store = SessionsStore(str(folder))
        host, user, key, last_port = store.get_current()
        if not (host and user and key):
            return None
        props = store.get(host, user, key) if store.exists(host, user, key) else {}
        port = int(props.get("omero.port") or last_port or 4064)
    except Exception as exc:  # an unreadable store is no reason to fail: prompt instead
        log.debug("cannot read the omero login session store %s: %s", folder, exc)
        return None
    return StoredSession(host, port, user, key)


def translate(exc: BaseException, settings: ConnectionSettings) -> OmeroError | None:
    """The one-line :class:`OmeroError` for an omero-py/Ice failure; None for anything else.

    Anything else (a bug in this package or in a plug-in) is not an OMERO error
    and must not be reported as one.
    """
    if isinstance(exc, OmeroError):
        return exc
    if _ice.omero is None:
        return None
    Ice, Glacier2, omero = _ice.Ice, _ice.Glacier2, _ice.omero
    where = f"{settings.host}:{settings.port}"
    if isinstance(exc, Ice.ConnectionLostException):
        return ConnectionLostError(
            f"lost the connection to {where}; run the same command again to finish "
            "(complete images are kept, incomplete ones replaced)")
    if isinstance(exc, Glacier2.PermissionDeniedException):
        return LoginRefusedError(
            f"login refused for user {settings.user!r} on {where}: wrong user name or "
            "password (or an expired session key)")
    if isinstance(exc, Ice.DNSException):
        return UnknownHostError(f"unknown host {settings.host!r}")
    if isinstance(exc, Ice.ConnectionRefusedException):
        return ConnectionRefusedError_(f"connection refused by {where}: is OMERO running there?")
    if isinstance(exc, Ice.TimeoutException) or (
            isinstance(exc, omero.ClientError) and str(exc).startswith(NULL_PROXY)):
        return OmeroTimeoutError(f"no answer from {where} within {settings.timeout_s:.0f} s")
    if isinstance(exc, Ice.SocketException):
        return ConnectionRefusedError_(f"cannot connect to {where}: {type(exc).__name__}")
    if isinstance(exc, omero.ServerError):
        return OmeroError(f"OMERO error on {where}: {exc.message or type(exc).__name__}")
    if isinstance(exc, omero.ClientError | Ice.Exception):
        return OmeroError(f"OMERO error on {where}: {type(exc).__name__}: {exc}")
    return None


def as_omero_error(exc: BaseException, settings: ConnectionSettings) -> OmeroError:
    """Like :func:`translate`, but anything becomes a (generic) :class:`OmeroError`."""
    return translate(exc, settings) or OmeroError(
        f"OMERO error on {settings.host}:{settings.port}: {type(exc).__name__}: {exc}")


class Connection:
    """One logged-in OMERO session; close it (or use ``with``) on every exit path.

    Services are reached through :attr:`query`, :attr:`update`, ... which retry
    network failures; after a lost connection they log in again (Glacier2 ends
    the router session with its connection, so the old proxies are dead).
    """

    def __init__(self, settings: ConnectionSettings, client_factory: Callable[..., Any] | None
                 = None):
        require_omero()
        self.settings = settings
        self._factory = client_factory or _ice.omero.client
        self._lock = threading.RLock()
        #: Incremented by every reconnection; holders of stateful services
        #: (RawPixelsStore) compare it to know their proxy is dead.
        self.generation = 0
        self.client: Any = None
        self.login_client: Any = None  # the encrypted client, when pixels go unencrypted
        self.owns_session = not settings.session_key
        self._login()
        try:
            ctx = self.sf.getAdminService().getEventContext()
        except BaseException:
            self.close()
            raise
        self.user_id: int = ctx.userId
        self.group_id: int = ctx.groupId
        self.user_name: str = ctx.userName
        #: The server's database, as at the first login: a reconnection must reach it.
        self.db_uuid: str | None = self._database_uuid()

    @classmethod
    def open(cls, settings: ConnectionSettings,
             client_factory: Callable[..., Any] | None = None) -> Connection:
        """Log in (or join ``session_key``); every failure becomes an :class:`OmeroError`."""
        require_omero()
        try:
            return cls(settings, client_factory)
        except Exception as exc:
            raise as_omero_error(exc, settings) from None

    def _login(self) -> None:
        s = self.settings
        timeout_ms = int(s.timeout_s * 1000)
        client = login = None
        try:
            client = self._factory(host=s.host, port=s.port, args=[
                f"--Ice.Override.ConnectTimeout={timeout_ms}",
                f"--Ice.Override.Timeout={max(timeout_ms * 6, 120000)}",
                "--Ice.RetryIntervals=-1",
            ])
            if s.session_key:
                # joinSession adds a reference to the server session and closing
                # removes it; at zero the server ends the session unless the
                # client detached (omero-blitz omero/cmd/SessionI.java, ServiceFactoryI
                # detachOnDestroy; omero-py gateway/__init__.py and util/sessions.py
                # detach the same way).  The key stays usable after we close.
                client.joinSession(s.session_key).detachOnDestroy()
            else:
                client.createSession(s.user, s.password)
            if s.group:
                _switch_group(client, s.group)
            if not s.secure:
                # Pixels unencrypted over a second client joined to the same session
                # (omero-py clients.py createClient: "detachOnDestroy has NOT been
                # called ... clients are responsible for doing this"); the login went
                # over the encrypted client, closed last.
                login, client = client, client.createClient(secure=False)
                client.getSession().detachOnDestroy()
        except BaseException:
            _close_quietly(client)
            _close_quietly(login)
            raise
        self.client, self.login_client = client, login

    def reconnect(self, generation: int) -> None:
        """Log in again unless another thread already did since ``generation``."""
        with self._lock:
            if generation != self.generation:
                return
            old = (self.client, self.login_client)
            log.warning("lost the connection to %s:%s; logging in again",
                        self.settings.host, self.settings.port)
            self._login()
            self.generation += 1
            now = self._database_uuid()
            if self.db_uuid is not None and now is not None and now != self.db_uuid:
                # A server that came back empty (or another one at the same address):
                # nothing of this run is there, and writing on would scatter it.
                stale, self.client, self.login_client = (self.client, self.login_client), \
                    None, None
                for client in (*old, *stale):
                    _close_quietly(client)
                raise ConnectionLostError(
                    f"reconnected to {self.settings.host}:{self.settings.port}, but it is not "
                    f"the server this run started on (database {now} instead of "
                    f"{self.db_uuid}: restarted empty, or another server); stopping without "
                    "writing there")
        for client in old:  # their router session died with the connection
            _close_quietly(client)

    def _database_uuid(self) -> str | None:
        """``omero.db.uuid`` of the server logged in to (None where it cannot say)."""
        try:
            return str(self.client.getSession().getConfigService().getDatabaseUuid())
        except Exception as exc:  # an old or partial server: no check, not a failure
            log.debug("cannot read the database uuid: %s", exc)
            return None

    def retry(self, fn: Callable[[], Any], what: str, idempotent: bool = True,
              attempts: int | None = None) -> Any:
        """Call ``fn``, retrying network failures with exponential back-off.

        After a lost connection, log in again first.  A call that is not
        idempotent (a save) is repeated only when it never reached the server
        (``Ice.ConnectFailedException``); otherwise the failure is raised.
        """
        Ice = _ice.Ice
        attempts = attempts or RETRY_ATTEMPTS
        for attempt in range(attempts):
            generation = self.generation
            try:
                return fn()
            except (Ice.SocketException, Ice.TimeoutException,
                    Ice.CloseConnectionException) as exc:
                unsent = isinstance(exc, Ice.ConnectFailedException)
                if attempt == attempts - 1 or not (idempotent or unsent):
                    raise
                wait = RETRY_DELAY_S * 2**attempt
                log.warning("%s: %s, retrying in %.0f s", what, type(exc).__name__, wait)
                time.sleep(wait)
                if not isinstance(exc, Ice.TimeoutException):
                    with contextlib.suppress(Ice.SocketException, Ice.TimeoutException):
                        self.reconnect(generation)  # else: the next attempt fails and retries
        raise AssertionError("unreachable")

    def close(self) -> None:
        """End the session we created (a joined session is left alive) and the clients."""
        with self._lock:
            clients = [c for c in (self.client, self.login_client) if c is not None]
            self.client = self.login_client = None
        # The unencrypted client first (detached: only its reference goes); then the
        # login client, whose closeSession ends a session we created.
        for client in clients:
            _close_quietly(client)

    def worker_settings(self) -> ConnectionSettings:
        """Settings that join this session (its key, never the password), for workers."""
        s = self.settings
        key = s.session_key or self.client.getSessionId()
        return ConnectionSettings(s.host, s.port, s.user, None, s.group, s.secure, key,
                                  s.timeout_s)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def translate(self, exc: BaseException) -> OmeroError | None:
        """See :func:`translate`."""
        return translate(exc, self.settings)

    # services ---------------------------------------------------------------------
    @property
    def sf(self) -> Any:
        """The current ``ServiceFactoryPrx`` (changes after a reconnection)."""
        return self.client.getSession()

    @property
    def query(self) -> Any:
        return _Retrying(self, lambda sf: sf.getQueryService(), "IQuery")

    @property
    def update(self) -> Any:
        return _Retrying(self, lambda sf: sf.getUpdateService(), "IUpdate", idempotent=False)

    @property
    def pixels_service(self) -> Any:
        return _Retrying(self, lambda sf: sf.getPixelsService(), "IPixels")

    @property
    def admin(self) -> Any:
        return _Retrying(self, lambda sf: sf.getAdminService(), "IAdmin")


class _Retrying:
    """A stateless service whose every call goes through :meth:`Connection.retry`."""

    def __init__(self, conn: Connection, get: Callable[[Any], Any], name: str,
                 idempotent: bool = True):
        self._conn, self._get, self._name, self._idempotent = conn, get, name, idempotent

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_"):  # copy, pickle and friends probe for these
            raise AttributeError(method)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._conn.retry(
                lambda: getattr(self._get(self._conn.sf), method)(*args, **kwargs),
                f"{self._name}.{method}", self._idempotent)
        return call


def _close_quietly(client: Any) -> None:
    if client is None:
        return
    with contextlib.suppress(Exception):  # closing is best effort
        client.__del__()  # omero-py: closeSession(), then destroy the communicator


def _switch_group(client: Any, group: str) -> None:
    """Work in ``group``: IAdmin.lookupGroup, then ServiceFactory.setSecurityContext.

    The context is the server session's (omero-blitz ServiceFactoryI
    setSecurityContext -> SessionManager), so a client joined later shares it.
    """
    sf = client.getSession()
    try:
        g = sf.getAdminService().lookupGroup(group)
    except _ice.omero.ApiUsageException:
        raise LoginRefusedError(f"no OMERO group named {group!r}") from None
    try:
        sf.setSecurityContext(_ice.omero.model.ExperimenterGroupI(g.id.val, False))
    except _ice.omero.SecurityViolation:
        raise LoginRefusedError(f"you are not a member of the OMERO group {group!r}") from None


def connect(
    host: str | None = None,
    port: int | None = None,
    user: str | None = None,
    group: str | None = None,
    session_key: str | None = None,
    config: Path | None = None,
    secure: bool | None = None,
    environ: Mapping[str, str] | None = None,
    interactive: bool | None = None,
    use_stored_session: bool = True,
    client_factory: Callable[..., Any] | None = None,
    **prompts: Any,
) -> Connection:
    """Resolve the settings and log in once; the caller closes the connection.

    Each setting comes from the first source that has it: the arguments, the
    ``OMERO_*`` environment, ``config`` (never a password), the session that
    ``omero login`` stored (same host and port), a prompt.  ``prompts`` are
    passed on to :func:`pyomero_upload.credentials.resolve`.
    """
    settings = resolve_settings(host=host, port=port, user=user, group=group,
                                session_key=session_key, config=config, secure=secure,
                                environ=environ, interactive=interactive,
                                use_stored_session=use_stored_session, **prompts)
    return Connection.open(settings, client_factory)


def resolve_settings(
    host: str | None = None,
    port: int | None = None,
    user: str | None = None,
    group: str | None = None,
    session_key: str | None = None,
    config: Path | None = None,
    secure: bool | None = None,
    environ: Mapping[str, str] | None = None,
    interactive: bool | None = None,
    use_stored_session: bool = True,
    **prompts: Any,
) -> ConnectionSettings:
    """What :func:`connect` logs in with, resolved once (a prompt at most once): for a
    caller that logs in again later with the same settings (``watch``), the password
    in memory only."""
    require_omero()
    r = resolve(host=host, port=port, user=user, group=group, session_key=session_key,
                config=config, secure=secure, environ=environ, interactive=interactive,
                stored=(lambda: stored_session(environ)) if use_stored_session else None,
                **prompts)
    if r.from_stored_session:
        log.info("using the session `omero login` stored for %s@%s:%s", r.user, r.host, r.port)
    return ConnectionSettings(r.host, r.port, r.user, r.password, r.group, r.secure,
                              r.session_key)


__all__ = ["Connection", "ConnectionSettings", "connect", "resolve_settings", "stored_session",
           "translate"]
