"""Plug-ins: metadata parsers and image processors.

``base`` has the abstract classes and the types an image processor is handed
(``DatasetRef``, ``UploadOptions``, ``UploadResult``), so a plug-in imports
from here only; ``registry`` finds and loads plug-ins of both kinds;
``auto``, ``acqlog`` and ``sidecar`` are the built-in parsers.
"""

from .base import DatasetRef, ImageProcessor, MetadataParser, UploadOptions, UploadResult
from .registry import (
    DEFAULT_PARSER,
    DEFAULT_PROCESSOR,
    available_parsers,
    available_processors,
    coerce_metadata,
    load_image_processor,
    load_module_class,
    load_parser,
)

__all__ = [
    "DEFAULT_PARSER", "DEFAULT_PROCESSOR", "DatasetRef", "ImageProcessor", "MetadataParser",
    "UploadOptions", "UploadResult",
    "available_parsers", "available_processors", "coerce_metadata", "load_image_processor",
    "load_module_class", "load_parser",
]
