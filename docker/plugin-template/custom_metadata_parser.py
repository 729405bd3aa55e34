"""A custom metadata parser to start from.

Try it:  pyomero-upload metadata EXPERIMENT -m ~/work/plugin-template -p
Then:    pyomero-upload export EXPERIMENT -o OUT -m ~/work/plugin-template -p
"""

from pathlib import Path

from pyomero_upload.model import ExperimentMetadata
from pyomero_upload.plugins import MetadataParser
from pyomero_upload.plugins.acqlog import AcqLogParser


class CustomMetadataParser(MetadataParser):
    """The lab's Acq/log files, plus what this lab adds (edit me)."""

    def extract_metadata(self, path) -> ExperimentMetadata:
        meta = AcqLogParser().extract_metadata(Path(path))
        meta.kvps.append(("Parsed by", "custom_metadata_parser.py"))
        meta.tags.append("custom-parser")
        return meta
