"""The two plug-in points, as abstract base classes (bioio's habit).

* :class:`MetadataParser`: reads what is known about an experiment folder;
* :class:`ImageProcessor`: builds and uploads an experiment's images into an
  OMERO dataset (the original toolkit's image-processor plug-in).

Both are found by :mod:`.registry`: built-ins and installed packages through
entry points, or the original's ``--module-path DIR`` convention.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..model import ExperimentMetadata

if TYPE_CHECKING:  # the upload's types; no OMERO import happens here
    from ..layout import Experiment
    from ..omero.connection import Connection
    from ..upload import DatasetRef, UploadOptions, UploadResult


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
