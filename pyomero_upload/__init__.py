"""pyomero-upload: time-lapse microscopy experiments to annotated 5-D images.

The package turns a folder of single-plane image files (one sub-folder per
stage position) into one X, Y, Z, C, T hypercube per position, written as
OME-TIFF or OME-Zarr, or uploaded to OMERO.  Only the package
:mod:`pyomero_upload.omero` imports the OMERO libraries; everything else works
without them.

The Python API, all importable from here::

    import pyomero_upload as pu

    exp, metadata = pu.open_experiment("/data/run-42")
    pu.export_ome_tiff(exp, "/data/out", metadata=metadata)      # or export_ome_zarr
    with pu.connect(host="omero.example.org", user="alice") as conn:
        result = pu.upload_experiment(conn, exp, metadata, pu.UploadOptions(dataset="run-42"))
    print(result.to_dict())

Every error the package raises on purpose is a :class:`PyOmeroUploadError`.
Names are imported on first use (PEP 562), so ``import pyomero_upload`` and
``pyomero-upload --help`` load neither numpy nor pandas.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

TOOL_NAME = "pyomero-upload"
TOOL_URL = "https://pypi.org/project/pyomero-upload/"
# The toolkit this project rebuilds; cited in every upload's provenance.
CITATION = (
    "Hay J, Troup E, Clark I, Pietsch J, Zielinski T, Millar A. PyOmeroUpload: "
    "A Python toolkit for uploading images and metadata to OMERO. "
    "Wellcome Open Research 2020, 5:96 (PMC7388197)"
)

#: Public name -> the module that defines it.
_LAZY = {
    "open_experiment": ".experiment",
    "discover": ".layout",
    "Experiment": ".layout",
    "NamingRule": ".layout",
    "load_metadata": ".metadata",
    "ExperimentMetadata": ".model",
    "ImageSpec": ".describe",
    "export_ome_tiff": ".export",
    "export_ome_zarr": ".export",
    "ExportResult": ".export",
    "connect": ".omero.connection",
    "upload_experiment": ".upload",
    "UploadOptions": ".plugins.base",
    "UploadResult": ".plugins.base",
    "MetadataParser": ".plugins.base",
    "ImageProcessor": ".plugins.base",
    "PyOmeroUploadError": ".errors",
    "InputError": ".errors",
    "OmeroError": ".errors",
    "UsageError": ".errors",
    "Watcher": ".watch",
    "WatchOptions": ".watch",
}

__all__ = [
    "CITATION", "TOOL_NAME", "TOOL_URL", "__version__",
    "open_experiment", "discover", "Experiment", "NamingRule", "load_metadata",
    "ExperimentMetadata", "ImageSpec", "export_ome_tiff", "export_ome_zarr", "ExportResult",
    "connect", "upload_experiment", "UploadOptions", "UploadResult", "MetadataParser",
    "ImageProcessor", "PyOmeroUploadError", "InputError", "OmeroError", "UsageError",
    "Watcher", "WatchOptions",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from .describe import ImageSpec
    from .errors import InputError, OmeroError, PyOmeroUploadError, UsageError
    from .experiment import open_experiment
    from .export import ExportResult, export_ome_tiff, export_ome_zarr
    from .layout import Experiment, NamingRule, discover
    from .metadata import load_metadata
    from .model import ExperimentMetadata
    from .omero.connection import connect
    from .plugins.base import ImageProcessor, MetadataParser, UploadOptions, UploadResult
    from .upload import upload_experiment
    from .watch import Watcher, WatchOptions
