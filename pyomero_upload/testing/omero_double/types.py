"""The double's ITypes: the enumerations it knows (omero-server
src/main/java/ome/logic/TypesImpl.java): the ones kept as rows (PixelsType,
DimensionOrder, ...) and those the other services answer with (AdminPrivilege,
RenderingModel, Family), each with the ids those services use."""

from __future__ import annotations

import omero
import omero.api
import omero.model as M
from omero.rtypes import rlong, rstring, unwrap

from ._base import Servant, implements
from .admin import ADMIN_PRIVILEGES
from .model import ENUMS, kind_of, shallow
from .rendering import FAMILIES, MODELS

#: Enumerations served but not stored as rows: values in id order (ids from 1).
DERIVED = {"AdminPrivilege": ADMIN_PRIVILEGES, "RenderingModel": MODELS, "Family": FAMILIES}


@implements(omero.api.ITypes)
class TypesService(Servant):
    def _all(self, kind: str) -> list:
        kind = kind_of(kind)
        if kind in DERIVED:
            out = []
            for i, value in enumerate(DERIVED[kind], 1):
                obj = getattr(M, kind + "I")()
                obj.setId(rlong(i))
                obj.setValue(rstring(value))
                out.append(obj)
            return out
        if kind in ENUMS:
            return [shallow(o) for o in sorted(self.db.of_kind(kind), key=lambda o: unwrap(o.id))]
        raise omero.ApiUsageException(message=(
            f"{kind}: not an enumeration the OMERO double knows (it knows "
            f"{', '.join(sorted([*ENUMS, *DERIVED]))})"))

    def allEnumerations(self, kind, current):
        return self._all(kind)

    def getEnumeration(self, kind, value, current):
        found = [o for o in self._all(kind) if unwrap(o.value) == value]
        if not found:  # TypesImpl.getEnumeration
            raise omero.ApiUsageException(message=f"Unknown enumeration value: {value}")
        return found[0]

    def getEnumerationTypes(self, current):
        return [f"omero.model.{k}" for k in sorted([*ENUMS, *DERIVED])]

    def getEnumerationsWithEntries(self, current):
        return {f"omero.model.{k}": self._all(k) for k in sorted([*ENUMS, *DERIVED])}
