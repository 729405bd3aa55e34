"""The two plug-in points, as abstract base classes (bioio's habit).

* :class:`MetadataParser`: reads what is known about an experiment folder;
* :class:`ImageProcessor`: builds and uploads an experiment's images into an
  OMERO dataset (the original toolkit's image-processor plug-in).

Both are found by :mod:`.registry`: built-ins and installed packages through
entry points, or the original's ``--module-path DIR`` convention.  The types an
image processor is handed (:class:`DatasetRef`, :class:`UploadOptions`,
:class:`UploadResult`) are defined here, with the contract, so a plug-in needs
this module only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..model import ExperimentMetadata

if TYPE_CHECKING:  # no OMERO import happens here
    from ..layout import Experiment
    from ..omero.connection import Connection


@dataclass
class UploadOptions:
    """What to upload into, and how.

    Attributes:
        dataset: The target dataset's name (found, else created).
        project: The project's name (default: the metadata's ``Omero project``).
        hypercube: One 5-D image per position (else one image per plane file).
        workers: CPU cores to use (default: all).
        provenance: Add the tool, version, citation and checksums as key-value pairs.
        dry_run: Report what would be created or skipped; write nothing.
        web_url: OMERO.web's address, for the links in the report (none: no links).
        dataset_id: Upload into this dataset (by id) instead of finding ``dataset``
            by name.
        checksum: Fingerprint the planes' contents (SHA-1 of every file) instead
            of their names, sizes and times, as ``rsync -c`` does.
        wait_s: How long to wait while another run writes into the dataset
            (0: refuse at once, naming it).
        engine: Run each position as a task on Dask (:mod:`pyomero_upload.engine`);
            ``workers`` is then the decode threads per task.
        max_uploads: With an engine, the OMERO writers at once across the cluster.
    """

    dataset: str
    project: str | None = None
    hypercube: bool = True
    workers: int | None = None
    provenance: bool = True
    dry_run: bool = False
    web_url: str | None = None
    dataset_id: int | None = None
    checksum: bool = False
    wait_s: float = 0.0
    #: Run positions as tasks on Dask (a :class:`pyomero_upload.engine.Engine`).
    engine: Any = field(default=None, repr=False)
    #: OMERO writers at once across a cluster.
    max_uploads: int = 4


@dataclass
class UploadResult:
    """What an upload created, replaced and skipped, by image name.

    An image processor records each image's name in one of ``created``,
    ``replaced`` or ``skipped``, and the id of each image it wrote in
    ``image_ids`` (of each it left as it was in ``skipped_ids``).
    """

    dataset_id: int | None = None
    project_id: int | None = None
    created: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    image_ids: dict[str, int] = field(default_factory=dict)
    planes: int = 0
    nbytes: int = 0
    pixel_calls: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    dataset_name: str | None = None
    project_name: str | None = None
    #: Ids of the complete images that were left as they were.
    skipped_ids: dict[str, int] = field(default_factory=dict)
    #: The position each image came from (the image's own name in hypercube mode).
    positions: dict[str, str] = field(default_factory=dict)
    web_url: str | None = None
    #: Why each replaced image is replaced (which images, and what changed).
    reasons: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for the user: what was uploaded, how much, how fast, where."""
        verb = "would upload" if self.dry_run else "uploaded"
        line = (f"{verb} {len(self.created)} image(s), {self.planes} planes, "
                f"{self.nbytes / 1e6:.1f} MB in {self.seconds:.1f} s "
                f"({self.pixel_calls} pixel calls) to dataset {self.dataset_id}")
        if self.skipped:
            line += f"; {len(self.skipped)} already complete, skipped"
        if self.replaced:
            line += f"; {len(self.replaced)} incomplete or changed, replaced"
        return line

    def _link(self, kind: str, oid: int | None) -> str | None:
        if not self.web_url or oid is None:
            return None
        return f"{self.web_url.rstrip('/')}/webclient/?show={kind}-{oid}"

    def to_dict(self) -> dict[str, Any]:
        """The report ``upload --json`` prints: the project, the dataset and every image
        with its id, status (``created``, ``replaced``, ``skipped``; ``would create`` ...
        in a dry run) and OMERO.web link where ``web_url`` is known."""
        prefix = "would " if self.dry_run else ""
        images = []
        for status, names in (("created", self.created), ("replaced", self.replaced),
                              ("skipped", self.skipped)):
            for name in names:
                oid = self.skipped_ids.get(name) if status == "skipped" else \
                    self.image_ids.get(name)
                word = status if status == "skipped" or not prefix else \
                    prefix + status[:-1]
                entry = {"name": name, "position": self.positions.get(name, name),
                         "status": word, "id": oid, "url": self._link("image", oid)}
                if status == "replaced" and name in self.reasons:
                    entry["reason"] = self.reasons[name]
                images.append(entry)
        order = {n: i for i, n in enumerate(self.positions)}
        images.sort(key=lambda e: order.get(str(e["name"]), len(order)))
        return {
            "dry_run": self.dry_run,
            "project": None if self.project_id is None and not self.project_name else
            {"id": self.project_id, "name": self.project_name,
             "url": self._link("project", self.project_id)},
            "dataset": {"id": self.dataset_id, "name": self.dataset_name,
                        "url": self._link("dataset", self.dataset_id)},
            "images": images,
            "planes": self.planes,
            "bytes": self.nbytes,
            "pixel_calls": self.pixel_calls,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class DatasetRef:
    """The target dataset as plug-ins see it: its id and name."""

    id: int
    name: str


class MetadataParser(ABC):
    """Base class of metadata parsers."""

    #: Name used by ``--parser``.
    name: str = ""

    @abstractmethod
    def extract_metadata(self, path: str | Path) -> ExperimentMetadata | dict[str, Any]:
        """Return what is known about the experiment in folder ``path``.

        Either our :class:`~pyomero_upload.model.ExperimentMetadata` or the
        original toolkit's dict ``{"description", "tags", "kvps", "tables"}``.
        """


class ImageProcessor(ABC):
    """Builds and uploads the images of an experiment into a dataset.

    The original toolkit's plug-in point: a custom processor gets the
    connection, the indexed experiment, its metadata and the target dataset.
    """

    @abstractmethod
    def process(
        self,
        conn: Connection,
        exp: Experiment,
        metadata: ExperimentMetadata | None,
        dataset: DatasetRef,
        options: UploadOptions,
        result: UploadResult,
        on_plane: Callable[[int], None] | None = None,
    ) -> None:
        """Create the images in ``dataset``; record them in ``result``."""
