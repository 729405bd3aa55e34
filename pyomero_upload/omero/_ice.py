"""The one place that imports the OMERO libraries (omero-py and zeroc-ice).

Where they are absent the names below are ``None`` and :func:`require_omero`
raises :class:`~pyomero_upload.errors.OmeroMissingError`, so the rest of the
package (and everything that merely imports this package) keeps working.
"""

from __future__ import annotations

from typing import Any

from ..errors import OmeroMissingError

#: What to install when the OMERO libraries are missing.
INSTALL_HINT = (
    "the OMERO Python libraries are not installed: run `make ice-wheel` and then "
    "`pip install .[omero]` (or `pip install omero-py` with a zeroc-ice 3.6.5 wheel "
    "for your Python), or use the omero_uploader Docker image"
)


def _load() -> tuple[Any, Any, Any]:
    import Glacier2
    import Ice
    import omero
    import omero.clients  # noqa: F401  (registers the model object factories)
    import omero.cmd  # noqa: F401
    import omero.grid  # noqa: F401
    import omero.model  # noqa: F401
    import omero.rtypes  # noqa: F401
    import omero.sys  # noqa: F401

    return Glacier2, Ice, omero


Glacier2: Any
Ice: Any
omero: Any
IMPORT_ERROR: ImportError | None = None
try:
    Glacier2, Ice, omero = _load()
except ImportError as _exc:  # pragma: no cover - exercised where omero-py is absent
    Glacier2 = Ice = omero = None
    IMPORT_ERROR = _exc


def require_omero() -> None:
    """Raise :class:`OmeroMissingError` (with what to install) if omero-py is absent."""
    if IMPORT_ERROR is not None:
        raise OmeroMissingError(f"{INSTALL_HINT} ({IMPORT_ERROR})")


def unwrap(value: Any) -> Any:
    """An rtype's Python value (``None`` stays ``None``)."""
    return omero.rtypes.unwrap(value)


def rstring(text: str) -> Any:
    return omero.rtypes.rstring(text)


def params(**values: Any) -> Any:
    """Typed HQL parameters: ints as longs, ``ids`` as a list of longs, the rest strings."""
    p = omero.sys.ParametersI()
    for key, value in values.items():
        if key == "ids":
            p.addIds(list(value))
        elif isinstance(value, bool):
            p.add(key, omero.rtypes.rbool(value))
        elif isinstance(value, int):
            p.addLong(key, value)
        else:
            p.addString(key, value)
    return p
