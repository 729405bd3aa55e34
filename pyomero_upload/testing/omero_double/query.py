"""The double's IQuery: HQL through :mod:`.hql`, get/find with OMERO's visibility."""

from __future__ import annotations

import omero
import omero.api

from ._base import Servant, implements
from .model import kind_of, shallow


@implements(omero.api.IQuery)
class QueryService(Servant):
    def findAllByQuery(self, query, params, current):
        return self.runner(current).run(query, params)

    def findByQuery(self, query, params, current):
        found = self.runner(current).run(query, params)
        if len(found) > 1:  # omero-server src/main/java/ome/logic/QueryImpl.java throwNonUnique
            raise omero.ApiUsageException(message=(
                f"Query named:\n\n\t{query}\n\nhas returned more than one Object\n"
                "findBy methods must return a single value.\n"
                "Please try findAllBy methods for queries which return Lists."))
        return found[0] if found else None

    def projection(self, query, params, current):
        return self.runner(current).run(query, params, projection=True)

    def get(self, klass, oid, current):
        return shallow(self.load(kind_of(klass), oid))

    def find(self, klass, oid, current):
        obj = self.db.get(kind_of(klass), oid)
        return shallow(obj) if obj is not None and self.visible(obj) else None

    def findAll(self, klass, flt, current):
        return [shallow(o) for o in self.db.of_kind(kind_of(klass)) if self.visible(o)]
