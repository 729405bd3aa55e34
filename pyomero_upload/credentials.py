"""Connection settings: arguments, then ``OMERO_*`` variables, then a config
file, then the session ``omero login`` stored, then a prompt.  The password is
never read from a file, never logged and never stored.

No OMERO import here: the settings resolve (and their rules are tested) where
omero-py is absent; :func:`pyomero_upload.omero.connection.connect` adds the
stored-session lookup, which needs omero-py.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError

ENV = {
    "host": "OMERO_HOST",
    "port": "OMERO_PORT",
    "user": "OMERO_USER",
    "password": "OMERO_PASSWORD",
    "group": "OMERO_GROUP",
    "session_key": "OMERO_SESSION_KEY",
}
CONFIG_KEYS = {"host", "server", "port", "user", "username", "group", "secure"}


@dataclass
class StoredSession:
    """The session ``omero login`` left current."""

    host: str
    port: int
    user: str
    key: str = field(repr=False)


@dataclass
class Resolved:
    """The settings one login needs (the password only in memory)."""

    host: str
    port: int
    user: str | None
    password: str | None = field(repr=False)
    group: str | None
    session_key: str | None = field(repr=False)
    secure: bool
    from_stored_session: bool = False


def read_config(path: Path) -> dict:
    """host/port/user/group from a YAML file; a password there is refused."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise InputError(path, f"cannot read config file ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise InputError(path, f"not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise InputError(path, "config file must be a mapping of host, port, user, group")
    if "password" in data or "pass" in data:
        raise InputError(
            path,
            "contains a password; passwords are never read from files (they end up in "
            "backups and version control): remove it and use the prompt, OMERO_PASSWORD "
            "or --session-key",
        )
    unknown = sorted(set(data) - CONFIG_KEYS)
    if unknown:
        raise InputError(path, f"unknown key(s) {', '.join(unknown)}; allowed: host, port, "
                         "user, group, secure")
    return data


def resolve(
    host: str | None = None,
    port: int | None = None,
    user: str | None = None,
    group: str | None = None,
    session_key: str | None = None,
    config: Path | None = None,
    secure: bool | None = None,
    environ: Mapping[str, str] | None = None,
    prompt: Callable[[str], str] | None = None,
    prompt_password: Callable[[str], str] | None = None,
    interactive: bool | None = None,
    stored: Callable[[], StoredSession | None] | None = None,
) -> Resolved:
    """Fill in each setting from the first source that has it.

    Args:
        host, port, user, group, session_key, secure: from the command line or caller.
        config: a YAML file with host, port, user, group, secure (never a password).
        environ: the ``OMERO_*`` variables (default: ``os.environ``).
        prompt, prompt_password: how to ask (default: ``input``, ``getpass``).
        interactive: whether asking is possible (default: stdin is a terminal).
        stored: returns the session ``omero login`` stored; used when no user or
            session key was given anywhere and its host and port match.

    Returns:
        The resolved settings.

    Raises:
        InputError: a setting is missing and cannot be asked for, or the config
            file is unusable.
    """
    env = os.environ if environ is None else environ
    cfg = read_config(config) if config else {}
    interactive = sys.stdin.isatty() if interactive is None else interactive
    ask = prompt or input
    ask_password = prompt_password or getpass.getpass

    host = host or env.get(ENV["host"]) or cfg.get("host") or cfg.get("server")
    port_text = port or env.get(ENV["port"]) or cfg.get("port")
    try:
        port = int(port_text) if port_text else None
    except (TypeError, ValueError):
        raise InputError(None, f"port must be a number, not {port_text!r}") from None
    user = user or env.get(ENV["user"]) or cfg.get("user") or cfg.get("username")
    group = group or env.get(ENV["group"]) or cfg.get("group")
    session_key = session_key or env.get(ENV["session_key"])
    secure = secure if secure is not None else bool(cfg.get("secure", True))
    password = None
    from_stored = False
    if not session_key and not user and stored is not None:
        found = stored()
        if found and host in (None, "", found.host) and port in (None, found.port):
            host, port, user, session_key = found.host, found.port, found.user, found.key
            from_stored = True
    port = port or 4064
    if not host:
        if not interactive:
            raise InputError(None, "no OMERO server given: use --server/--host, OMERO_HOST "
                             "or a config file")
        host = ask("OMERO server: ").strip()
    if not session_key:
        if not user:
            if not interactive:
                raise InputError(None, "no OMERO user given: use --user or OMERO_USER "
                                 "(or --session-key)")
            user = ask("OMERO user: ").strip()
        password = env.get(ENV["password"])
        if password is None:
            if not interactive:
                raise InputError(None, "no password: set OMERO_PASSWORD or run in a terminal "
                                 "to be prompted (or use --session-key)")
            password = ask_password(f"Password for {user}@{host}: ")
    return Resolved(host, port, user, password, group, session_key, secure, from_stored)
