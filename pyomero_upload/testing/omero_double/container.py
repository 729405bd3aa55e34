"""The double's IContainer (omero-server src/main/java/ome/logic/PojosImpl.java): what
BlitzGateway's wrappers load through it (``ImageWrapper`` sizes, pixels, thumbnails and
rendering; ``BlitzObjectWrapper.__loadedHotSwap__`` for containers)."""

from __future__ import annotations

import omero
import omero.api
from omero.rtypes import rlist, rlong, unwrap

from ._base import Servant, implements
from .model import collection_of, kind_of


def _ids(ids) -> list[int]:
    return [int(unwrap(i)) for i in (ids or [])]


def _option(options, name: str):
    if options is None or not options.map:
        return None
    return unwrap(options.map.get(name))


def _params(options, ids: list[int]) -> omero.sys.ParametersI:
    """The query's parameters: the ids, and the owner/group filter of the options
    (PojoOptions: ``ParametersI.exp``/``grp`` put them in the Filter)."""
    p = omero.sys.ParametersI()
    p.add("ids", rlist([rlong(i) for i in ids]))
    f = options.theFilter if options is not None else None
    if f is not None:
        p.theFilter = omero.sys.Filter(ownerId=f.ownerId, groupId=f.groupId)
    return p


_IMAGE_FETCH = ("left outer join fetch img.details.creationEvent cre "
                "left outer join fetch img.details.updateEvent evt "
                "left outer join fetch img.pixels pix "
                "left outer join fetch pix.pixelsType pt "
                "left outer join fetch img.format format ")


@implements(omero.api.IContainer)
class ContainerService(Servant):
    def getImages(self, root, ids, options, current):
        # ome/services/query/PojosGetImagesQueryDefinition.java: the images under
        # Image/Dataset/Project ids, with their pixels, pixels type and events
        kind = kind_of(root)
        q = "select img from Image img " + _IMAGE_FETCH
        where = {
            "Image": "where img.id in (:ids)",
            "Dataset": "join img.datasetLinks dil join dil.parent ds where ds.id in (:ids)",
            "Project": ("join img.datasetLinks dil join dil.parent ds "
                        "join ds.projectLinks pdl join pdl.parent prj where prj.id in (:ids)"),
        }.get(kind)
        if where is None:
            raise omero.ApiUsageException(message=f"Query not implemented for {kind}")
        ids = _ids(ids)
        if not ids:
            return []
        return self.runner(current).run(q + where, _params(options, ids))

    def loadContainerHierarchy(self, root, ids, options, current):
        # ome/services/query/PojosLoadHierarchyQueryDefinition.java (Project, Dataset;
        # the images with option "leaves")
        kind = kind_of(root)
        leaves = bool(_option(options, "leaves"))
        f = options.theFilter if options is not None else None
        if ids is None and (f is None or (unwrap(f.ownerId) is None
                                          and unwrap(f.groupId) is None)):
            raise omero.ApiUsageException(message=(
                "Set of ids for loadContainerHierarchy() may not be null if experimenter "
                "and group options are null."))
        if kind == "Project":
            q = ("select this from Project this "
                 "left outer join fetch this.details.creationEvent "
                 "left outer join fetch this.datasetLinks pdl "
                 "left outer join fetch pdl.child ds "
                 "left outer join fetch ds.details.creationEvent ")
            if leaves:
                q += ("left outer join fetch ds.imageLinks dil "
                      "left outer join fetch dil.child img ")
        elif kind == "Dataset":
            q = ("select this from Dataset this "
                 "left outer join fetch this.details.creationEvent ")
            if leaves:
                q += ("left outer join fetch this.imageLinks dil "
                      "left outer join fetch dil.child img ")
        else:
            raise omero.ApiUsageException(message=(
                f"loadContainerHierarchy of {kind} is not implemented by the OMERO double "
                "(Project and Dataset are)"))
        if leaves:
            q += _IMAGE_FETCH
        ids = _ids(ids)
        if ids:
            q += "where this.id in (:ids)"
        return self.runner(current).run(q, _params(options, ids))

    def getCollectionCount(self, kind, prop, ids, options, current):
        # PojosImpl.getCollectionCount: size(table.property) for each id
        kind = kind_of(kind)
        prop = prop.rsplit("_", 1)[-1] if "_" in prop else prop  # LsidUtils.parseField
        if collection_of(kind, prop) is None:
            raise omero.ApiUsageException(message=f"{kind} has no collection {prop}")
        out = {}
        for oid in _ids(ids):
            obj = self.load(kind, oid)
            out[oid] = len([c for c in self.db.children(obj, prop) if self.visible(c)])
        return out
