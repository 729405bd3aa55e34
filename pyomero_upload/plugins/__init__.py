"""Plug-ins: metadata parsers and image processors.

``base`` has the abstract classes, ``registry`` finds and loads plug-ins of
both kinds, ``acqlog`` and ``sidecar`` are the built-in parsers.
"""

from .base import ImageProcessor, MetadataParser
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
    "DEFAULT_PARSER", "DEFAULT_PROCESSOR", "ImageProcessor", "MetadataParser",
    "available_parsers", "available_processors", "coerce_metadata", "load_image_processor",
    "load_module_class", "load_parser",
]
