"""The double's IScript: it holds no scripts (omero-blitz
src/main/java/ome/services/blitz/impl/ScriptI.java getScripts lists the official
scripts of the server's script repository; the double has no repository, so none)."""

from __future__ import annotations

import omero
import omero.api

from ._base import Servant, implements


@implements(omero.api.IScript)
class ScriptService(Servant):
    def getScripts(self, current):
        return []  # the double's script repository is empty: no script to list

    def getScriptsByMimetype(self, mimetype, current):
        return []

    def getScriptID(self, path, current):
        # ScriptI.getScriptID: -1 when no script has that path
        return -1
