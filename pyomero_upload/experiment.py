"""Opening an experiment: its layout and its metadata, in one call.

The command line, :class:`~pyomero_upload.pyomero_upload.PyOmeroUploader`
and the notebooks all start here, so the order of the steps and the channel
rule are the same everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import InputError
from .layout import Experiment, NamingRule, discover
from .model import ExperimentMetadata


def open_experiment(
    root: str | os.PathLike[str],
    *,
    parser: str | type | Any | None = None,
    module_path: str | os.PathLike[str] | None = None,
    ignore_metadata: bool = False,
    rule: NamingRule | None = None,
    channel_order: Sequence[str] | None = None,
    allow_missing: bool = False,
    workers: int | None = None,
) -> tuple[Experiment, ExperimentMetadata | None]:
    """Index the experiment folder ``root`` and read its metadata.

    The layout is read first (its errors are the likelier ones), then the
    metadata; the metadata's channel order applies unless ``channel_order``
    is given.

    Args:
        root: The experiment folder (holding pos001, pos002, ...).
        parser: A metadata parser: its name (``pyomero-upload plugins``), a
            class or an instance; default ``auto``.
        module_path: A folder with ``custom_metadata_parser.py`` (wins over ``parser``).
        ignore_metadata: Read no metadata (returns None for it).
        rule: How position folders and plane files are named.
        channel_order: Channel names in the order wanted; each must exist.
        allow_missing: Missing planes become zeros instead of an error.
        workers: Threads reading plane headers where they come slowly (default: all cores).

    Returns:
        The indexed experiment and its metadata (None with ``ignore_metadata``).

    Raises:
        InputError: The folder, a file in it or the metadata cannot be used.
    """
    from .metadata import load_metadata

    order = [c.strip() for c in channel_order or [] if c.strip()] or None
    exp = discover(root, rule, channel_order=order, allow_missing=allow_missing, workers=workers)
    if order:
        found = {c.lower() for c in exp.channels}
        unknown = [c for c in order if c.lower() not in found]
        if unknown:
            raise InputError(
                root, f"channel order names channel(s) not found in any file: "
                f"{', '.join(unknown)} (found: {', '.join(exp.channels)})",
            )
    metadata = load_metadata(Path(root), parser=parser,
                             module_path=Path(module_path) if module_path else None,
                             ignore=ignore_metadata)
    if metadata is not None and not order:
        exp.reorder_channels(metadata.channel_order())
    return exp, metadata
