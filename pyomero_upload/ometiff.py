"""Moved to :mod:`pyomero_upload.export`; this name is kept for one release."""
from .export.folder import *  # noqa: F403
from .export.frame import *  # noqa: F403
from .export.ome_tiff_writer import *  # noqa: F403
from .export.pyramid import *  # noqa: F403
