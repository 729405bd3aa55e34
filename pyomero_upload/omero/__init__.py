"""Everything that talks to OMERO; the only package that imports ``omero``.

Functions take the :class:`~pyomero_upload.omero.connection.Connection` first
(ezomero's habit) and return ids and small dataclasses, never omero objects:

* :mod:`.connection` -- settings, login or join, group, retries, reconnection;
* :mod:`.queries` -- HQL lookups (projects, datasets, tags, images, pixels);
* :mod:`.containers` -- find or create projects and datasets, delete images;
* :mod:`.annotations` -- tags, key-value maps, files, tables, links;
* :mod:`.pixels` -- RawPixelsStore writing as the store allows;
* :mod:`.images` -- create an image, its metadata, rendering and completion.

Importing this package never needs omero-py; connecting does (exit 8 where
it is absent).
"""

from ._ice import INSTALL_HINT, require_omero
from .connection import Connection, ConnectionSettings, connect

__all__ = ["INSTALL_HINT", "Connection", "ConnectionSettings", "connect", "require_omero"]
