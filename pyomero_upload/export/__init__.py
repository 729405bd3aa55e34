"""Exports: every position of an experiment as one OME-TIFF file or OME-Zarr store.

:mod:`.frame` holds what both formats share (the dataset folder, its lock, the
temporaries, the ``metadata/`` folder and the one per-position loop);
:mod:`.ome_tiff_writer` and :mod:`.ome_zarr_writer` supply only their format.
"""

from .frame import ExportEntry, ExportResult, ImageWriter, run_export
from .ome_tiff_writer import OmeTiffWriter, export_ome_tiff
from .ome_zarr_writer import OmeZarrWriter, export_ome_zarr

__all__ = ["ExportEntry", "ExportResult", "ImageWriter", "OmeTiffWriter", "OmeZarrWriter",
           "export_ome_tiff", "export_ome_zarr", "run_export"]
