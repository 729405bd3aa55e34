"""Moved to :mod:`pyomero_upload.export.ome_zarr_writer`; this name is kept for one release."""
from .export.ome_zarr_writer import *  # noqa: F403
