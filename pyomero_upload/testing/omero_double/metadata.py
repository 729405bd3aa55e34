"""The double's IMetadata: the annotation look-ups OMERO.web and BlitzGateway make
(omero-server src/main/java/ome/logic/MetadataImpl.java)."""

from __future__ import annotations

import omero
import omero.api
import omero.model as M
from omero.rtypes import unwrap

from ._base import Servant, implements
from .model import kind_of, shallow


def _kinds(types) -> list[type]:
    """The annotation classes asked for (``TagAnnotation`` or
    ``ome.model.annotations.TagAnnotation``); all annotations when none."""
    out = []
    for t in types or []:
        cls = getattr(M, kind_of(str(t)), None)
        if cls is None or not issubclass(cls, M.Annotation):
            raise omero.ApiUsageException(message=f"{t} is not an annotation type")
        out.append(cls)
    return out or [M.Annotation]


@implements(omero.api.IMetadata)
class MetadataService(Servant):
    def loadAnnotations(self, root, ids, types, annotators, options, current):
        # MetadataImpl.loadAnnotations: per root id, the annotations linked to it, of the
        # given types, linked by the given users (all when none are given)
        kind = kind_of(root)
        classes = _kinds(types)
        who = {int(unwrap(a)) for a in annotators or []}
        out = {}
        for oid in [int(unwrap(i)) for i in ids or []]:
            parent = self.load(kind, oid)
            found = []
            for link in self.db.children(parent, "annotationLinks"):
                if not self.visible(link) or (who and unwrap(link.details.owner.id)
                                              not in who):
                    continue
                ann = self.db.get("Annotation", unwrap(link.child.id))
                if ann is not None and self.visible(ann) and isinstance(ann, tuple(classes)):
                    found.append(shallow(ann))
            out[oid] = found
        return out

    def loadSpecifiedAnnotations(self, kind, include, exclude, options, current):
        # MetadataImpl.loadSpecifiedAnnotations: annotations of one type whose namespace
        # is one of ``include`` (any when empty) and none of ``exclude``; the options'
        # owner filter applies
        (cls,) = _kinds([kind])
        f = options.theFilter if options is not None else None
        owner = unwrap(f.ownerId) if f is not None else None
        out = []
        for ann in sorted(self.db.of_kind("Annotation"), key=lambda a: unwrap(a.id)):
            ns = unwrap(getattr(ann, "_ns", None))
            if not isinstance(ann, cls) or not self.visible(ann):
                continue
            if (include and ns not in include) or (exclude and ns in exclude):
                continue
            if owner is not None and owner >= 0 and unwrap(ann.details.owner.id) != owner:
                continue
            out.append(shallow(ann))
        return out
