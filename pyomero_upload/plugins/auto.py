"""The default metadata parser: the lab's Acq/log files, merged with a sidecar if present."""

from __future__ import annotations

import logging
from pathlib import Path

from ..model import ExperimentMetadata
from .acqlog import AcqLogParser
from .base import MetadataParser
from .sidecar import find_sidecar, merge, parse_sidecar

log = logging.getLogger(__name__)


class AutoParser(MetadataParser):
    """The default: the lab's Acq/log files, merged with ``experiment.yml`` if present
    (the sidecar wins where both say something)."""

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
