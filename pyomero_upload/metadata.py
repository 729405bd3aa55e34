"""Getting an experiment's metadata: pick the parser, run it, normalise the result.

The parsers themselves are plug-ins (:mod:`pyomero_upload.plugins`): the
built-in ``auto``, ``acqlog`` and ``sidecar`` are found the way any installed
one is.
"""

from __future__ import annotations

from pathlib import Path

from .errors import InputError
from .model import ExperimentMetadata
from .plugins.auto import AutoParser
from .plugins.base import MetadataParser
from .plugins.registry import coerce_metadata, instantiate, load_parser
from .plugins.sidecar import SidecarParser

# AutoParser and SidecarParser: where the built-in parsers lived before they were
# plug-ins like any other.
__all__ = ["AutoParser", "SidecarParser", "load_metadata"]


def load_metadata(
    root: str | Path,
    parser: str | type | MetadataParser | None = None,
    module_path: str | Path | None = None,
    ignore: bool = False,
) -> ExperimentMetadata | None:
    """Run the chosen parser on ``root``; None when ``ignore``.

    ``parser`` is a parser's name (default ``auto``), a parser class or an
    instance; ``module_path`` (the original's ``-m DIR -p``) wins over it.
    """
    if ignore:
        return None
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "folder does not exist" if not root.exists() else "is not a folder")
    if module_path is not None or parser is None or isinstance(parser, str):
        instance = load_parser(parser if isinstance(parser, str) else None,
                               Path(module_path) if module_path else None)
    elif isinstance(parser, type):
        instance = instantiate(parser, f"parser class {parser.__name__}", "extract_metadata")
    else:
        instance = parser
    source = f"{type(instance).__module__}.{type(instance).__name__}"
    try:
        result = instance.extract_metadata(root)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            source, f"metadata parser failed on {root}: {type(exc).__name__}: {exc}"
        ) from None
    return coerce_metadata(result, source)
