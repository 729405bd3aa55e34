"""The double's ``submit(Delete2)``: a command handle, and what a delete takes with it."""

from __future__ import annotations

import time
from typing import Any

import omero
import omero.api  # noqa: F401  (loads omero.model first: after omero.cmd it fails)
import omero.cmd
import omero.model as M
from omero.rtypes import unwrap

from ._base import Servant, implements
from .model import kind_of

# What a delete takes with it (omero-blitz src/main/resources/ome/services/graph-rules/
# blitz-delete-rules.xml): containers their orphaned contents, images their pixels,
# channels and plane infos, every object its links; annotations left unlinked, but file
# and tag annotations only when the annotated object's owner owns them too.
#: What a delete of each kind takes with it: (collection, the end to follow or None).
CONTENTS: dict[str, list[tuple[str, str | None]]] = {
            "Project": [("datasetLinks", "child")], "Dataset": [("imageLinks", "child")],
            "Image": [("pixels", None)], "Pixels": [("channels", None), ("planeInfo", None)]}


@implements(omero.cmd.Handle)
class Handle(Servant):
    """A finished command: Delete2 runs at submit (omero-blitz omero/cmd/graphs/Delete2I.java)."""

    def __init__(self, sf: Any, req: Any) -> None:
        super().__init__(sf)
        self.req = req
        self.status = omero.cmd.Status()
        self.status.flags = []
        self.status.steps = 1
        self.status.currentStep = 1
        # omero-blitz src/main/java/omero/cmd/HandleI.java steps(): the request's
        # stopwatch sets startTime and stopTime (ms since the epoch) when the steps end,
        # successful or not (omero-py src/omero/cli.py print_report shows the elapsed
        # time from them, or "Unfinished." while either is 0).
        start = time.time()
        try:
            self.response = self._run(req)
        except omero.ServerError as exc:
            self.response = omero.cmd.ERR(category="::omero::cmd::Delete2", name="graph-fail",
                                          parameters={"message": exc.message})
        finally:
            self.status.startTime = int(start * 1000)
            self.status.stopTime = int(time.time() * 1000)
        if isinstance(self.response, omero.cmd.ERR):
            self.status.flags = [omero.cmd.State.FAILURE]

    def _run(self, req: Any) -> Any:
        if not isinstance(req, omero.cmd.Delete2):
            return omero.cmd.ERR(category=type(req).__name__, name="unsupported-request",
                                 parameters={"message": "the double runs Delete2 only"})
        targets: list[Any] = []
        for klass, ids in (req.targetObjects or {}).items():
            kind = kind_of(klass)
            if getattr(M, kind + "I", None) is None:
                return omero.cmd.GraphException(
                    category="::omero::cmd::Delete2", name="bad-class",
                    parameters={}, message=f"unknown class {klass}")
            for oid in ids:
                obj = self.db.get(kind, oid)
                if obj is None or not self.visible(obj):
                    return omero.cmd.GraphException(
                        category="::omero::cmd::Delete2", name="graph-fail", parameters={},
                        message=f"cannot read {kind}[{oid}]")
                if (unwrap(obj.details.owner.id) != self.session.user_id
                        and not self.session.is_admin()):
                    return omero.cmd.GraphException(
                        category="::omero::cmd::Delete2", name="graph-fail", parameters={},
                        message=f"not permitted to delete {kind}[{oid}]")
                targets.append(obj)
        doomed: dict[tuple[str, int], Any] = {}
        for obj in targets:
            self._collect(obj, doomed)
        # annotations left without any link
        for key, obj in list(doomed.items()):
            if key[0].endswith("AnnotationLink"):
                ann = self.db.get("Annotation", unwrap(obj.child.id))
                if ann is None:
                    continue
                if isinstance(ann, M.TagAnnotation | M.FileAnnotation) and unwrap(
                        ann.details.owner.id) != unwrap(obj.details.owner.id):
                    continue
                links = [o for (k, _), o in self.db.objects.items() if k.endswith(
                    "AnnotationLink") and unwrap(o.child.id) == unwrap(ann.id)]
                if all((kind_of(li), unwrap(li.id)) in doomed for li in links):
                    doomed[(kind_of(ann), unwrap(ann.id))] = ann
        out: dict[str, list[int]] = {}
        for kind, oid in doomed:
            out.setdefault(f"ome.model.{kind}", []).append(oid)
        if not req.dryRun:
            for key in doomed:
                self.db.objects.pop(key, None)
                if key[0] == "Pixels":
                    gone = self.db.pixel_data.pop(key[1], None)
                    if gone is not None:
                        gone.remove()
                if key[0] == "OriginalFile":
                    self.db.files.pop(key[1], None)
                    self.db.tables.pop(key[1], None)
        return omero.cmd.Delete2Response(deletedObjects=out)

    def _collect(self, obj: Any, doomed: dict) -> None:
        key = (kind_of(obj), unwrap(obj.id))
        if key in doomed:
            return
        doomed[key] = obj
        # every link pointing at it (link ends are stored as proxies of the concrete class)
        for (k, _), o in list(self.db.objects.items()):
            if k.endswith("Link") and key in ((kind_of(o.parent), unwrap(o.parent.id)),
                                              (kind_of(o.child), unwrap(o.child.id))):
                doomed[(k, unwrap(o.id))] = o
        for name, via in CONTENTS.get(key[0], []):
            for child in self.db.children(obj, name):
                target = self.db.get(kind_of(getattr(child, "_" + via)),
                                     unwrap(getattr(child, "_" + via).id)) if via else child
                if target is None:
                    continue
                if via:  # a contained object goes only when no other container holds it
                    others = [o for (k, _), o in self.db.objects.items() if k == kind_of(child)
                              and unwrap(o.child.id) == unwrap(target.id)
                              and (k, unwrap(o.id)) not in doomed and o is not child]
                    if others:
                        continue
                self._collect(target, doomed)
        if key[0] == "FileAnnotation" and obj.file is not None:
            f = self.db.get("OriginalFile", unwrap(obj.file.id))
            if f is not None:
                doomed[("OriginalFile", unwrap(f.id))] = f

    def getRequest(self, current):
        return self.req

    def getResponse(self, current):
        return self.response

    def getStatus(self, current):
        return self.status

    def addCallback(self, cb, current):
        pass

    def removeCallback(self, cb, current):
        pass

    def cancel(self, current):
        return False

    def close(self, current):
        self.sf.adapter.remove(current.id)
