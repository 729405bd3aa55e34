"""The original toolkit's command line, working as documented.

    python -m pyomero_upload.upload_cli -d DATA -n DATASET [-y] [-s HOST] [-o PORT] [-u USER]
        [-c CONFIG] [-m DIR [-p] [-i]] [-v | --no-include-provenance-metadata] [-x]

Fixed relative to the original: ``-p``/``-i`` load exactly what they name,
provenance can be turned off, the port defaults to 4064, the password is
prompted (or taken from OMERO_PASSWORD), and failures give a message and a
non-zero exit code.  Without ``-y`` each plane file becomes its own image,
as in the original.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .cli import main as cli_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pyomero_upload.upload_cli",
                                description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config-file", type=Path, help="YAML with server, port, user")
    p.add_argument("-u", "--username", help="OMERO user")
    p.add_argument("-s", "--server", help="OMERO server host")
    p.add_argument("-o", "--port", type=int, default=None, help="port (default 4064)")
    p.add_argument("-d", "--data-path", type=Path, required=True, help="experiment folder")
    p.add_argument("-n", "--dataset-name", required=True, help="target dataset")
    p.add_argument("-y", "--hypercube", action="store_true",
                   help="one 5-D image per position (without: one image per file)")
    p.add_argument("-m", "--module-path", type=Path, help="folder of custom plug-ins")
    p.add_argument("-p", "--custom-metadata-parser", action="store_true",
                   help="use CustomMetadataParser from MODULE_PATH/custom_metadata_parser.py")
    p.add_argument("-i", "--custom-image-processor", action="store_true",
                   help="use CustomImageProcessor from MODULE_PATH/custom_image_processor.py")
    p.add_argument("-v", "--include-provenance-metadata", action=argparse.BooleanOptionalAction,
                   default=True, help="add provenance key-value pairs (default: on)")
    p.add_argument("-x", "--ignore-metadata", action="store_true", help="skip metadata parsing")
    return p


def translate(args: argparse.Namespace) -> list[str]:
    """The equivalent ``pyomero-upload upload`` arguments."""
    argv = ["upload", str(args.data_path), "--dataset", args.dataset_name]
    for flag, value in (("--config", args.config_file), ("--user", args.username),
                        ("--host", args.server), ("--port", args.port),
                        ("--module-path", args.module_path)):
        if value is not None:
            argv += [flag, str(value)]
    argv.append("--hypercube" if args.hypercube else "--no-hypercube")
    argv.append("--provenance" if args.include_provenance_metadata else "--no-provenance")
    if args.custom_metadata_parser:
        argv.append("--custom-metadata-parser")
    if args.custom_image_processor:
        argv.append("--custom-image-processor")
    if args.ignore_metadata:
        argv.append("--ignore-metadata")
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    return cli_main(translate(args))


if __name__ == "__main__":
    sys.exit(main())
