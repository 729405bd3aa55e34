"""Getting an experiment's metadata: pick the parser, run it, normalise the result."""

from __future__ import annotations

import logging
from pathlib import Path

from .errors import InputError
from .model import ExperimentMetadata
from .plugins.acqlog import AcqLogParser
from .plugins.base import MetadataParser
from .plugins.registry import coerce_metadata, instantiate, load_parser
from .plugins.sidecar import find_sidecar, merge, parse_sidecar

log = logging.getLogger(__name__)


class SidecarParser(MetadataParser):
    """Only ``experiment.yml`` / ``experiment.json``."""

    name = "sidecar"

    def extract_metadata(self, path: str | Path) -> ExperimentMetadata:
        sidecar = find_sidecar(Path(path))
        if sidecar is None:
            log.warning("%s: no experiment.yml or experiment.json", path)
            return ExperimentMetadata()
        return parse_sidecar(sidecar)


class AutoParser(MetadataParser):
    """The default: the lab's Acq/log files, merged with a sidecar if present."""

    name = "auto"

    def extract_metadata(self, path: str | Path) -> ExperimentMetadata:
        root = Path(path)
        sidecar = find_sidecar(root)
        base = AcqLogParser().extract_metadata(root) if _has_lab_files(root) else None
        if sidecar is None:
            if base is None:
                log.warning("%s: no Acq/log files and no experiment.yml: no metadata", root)
            return base or ExperimentMetadata()
        over = parse_sidecar(sidecar)
        if base is None:
            return over
        log.warning("%s: merging %s over the Acq/log metadata (the sidecar wins)",
                    root, sidecar.name)
        return merge(base, over)


def _has_lab_files(root: Path) -> bool:
    return any(
        p.is_file() and p.name.lower().endswith(("acq.txt", "log.txt")) for p in root.iterdir()
    )


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
