"""Connection settings and exit codes, where omero-py may be absent."""

from __future__ import annotations

import pytest

from pyomero_upload import cli
from pyomero_upload.credentials import StoredSession, resolve
from pyomero_upload.errors import (
    ConnectionRefusedError_,
    InputError,
    LoginRefusedError,
    OmeroError,
    OmeroMissingError,
    OmeroTimeoutError,
    PluginError,
    UnknownHostError,
    UsageError,
)

STORED = StoredSession("omero.lab", 14064, "bob", "stored-key")


def _never(text: str) -> str:
    raise AssertionError(f"prompted: {text}")


def test_arguments_beat_environment_beat_config(tmp_path):
    cfg = tmp_path / "omero.yml"
    cfg.write_text("host: cfg.host\nport: 4333\nuser: carol\ngroup: cfg-group\n")
    env = {"OMERO_HOST": "env.host", "OMERO_USER": "dave", "OMERO_PASSWORD": "pw"}
    r = resolve(host="arg.host", config=cfg, environ=env, interactive=False)
    assert (r.host, r.port, r.user, r.group, r.password) == ("arg.host", 4333, "dave",
                                                             "cfg-group", "pw")
    r = resolve(config=cfg, environ={"OMERO_PASSWORD": "pw"}, interactive=False)
    assert (r.host, r.user) == ("cfg.host", "carol") and "pw" not in repr(r)


def test_password_in_config_file_is_refused(tmp_path):
    cfg = tmp_path / "omero.yml"
    cfg.write_text("host: h\nuser: u\npassword: secret\n")
    with pytest.raises(InputError, match="passwords are never read from files"):
        resolve(config=cfg, environ={}, interactive=False)


def test_stored_session_used_only_without_a_user_and_on_its_host_and_port():
    r = resolve(environ={}, interactive=False, stored=lambda: STORED, prompt=_never,
                prompt_password=_never)
    assert (r.host, r.port, r.user, r.session_key, r.password) == (
        "omero.lab", 14064, "bob", "stored-key", None)
    assert r.from_stored_session
    r = resolve(host="omero.lab", environ={}, interactive=False, stored=lambda: STORED)
    assert r.session_key == "stored-key" and r.port == 14064  # the stored port is kept
    for kwargs in ({"host": "elsewhere"}, {"host": "omero.lab", "port": 4064}):
        r = resolve(environ={"OMERO_PASSWORD": "pw"}, interactive=True, stored=lambda: STORED,
                    prompt=lambda text: "eve", **kwargs)
        assert r.session_key is None and r.user == "eve", kwargs
    r = resolve(host="omero.lab", user="bob", environ={"OMERO_PASSWORD": "pw"},
                interactive=False, stored=lambda: STORED)
    assert r.session_key is None and r.password == "pw" and r.port == 4064


def test_prompts_in_order_when_nothing_is_given():
    asked = []

    def ask(text):
        asked.append(text)
        return {"OMERO server: ": "typed.host", "OMERO user: ": "frank"}[text]

    r = resolve(environ={}, interactive=True, stored=lambda: None, prompt=ask,
                prompt_password=lambda text: asked.append(text) or "pw")
    assert asked == ["OMERO server: ", "OMERO user: ", "Password for frank@typed.host: "]
    assert (r.host, r.port, r.password) == ("typed.host", 4064, "pw")


@pytest.mark.parametrize("exc, code", [
    (InputError(None, "x"), 1), (PluginError("plug", "x"), 1), (UsageError("x"), 2),
    (LoginRefusedError("x"), 3), (UnknownHostError("x"), 4), (ConnectionRefusedError_("x"), 5),
    (OmeroTimeoutError("x"), 6), (OmeroError("x"), 7), (OmeroMissingError("x"), 8),
    (ValueError("a bug"), None),
])
def test_exit_codes_in_one_place(exc, code):
    assert cli.exit_code(exc) == code
