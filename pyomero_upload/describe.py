"""Each image described once: experiment + metadata -> :class:`~.model.ImageSpec`.

Every writer (OME-TIFF, OMERO, OME-Zarr) takes the same description, so the
rules live here only: channel colours and wavelengths, per-plane timing,
exposure and stage position, physical sizes, annotations, provenance and the
source fingerprint that decides whether an output is up to date.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from . import CITATION, TOOL_NAME, TOOL_URL, __version__
from .layout import Experiment, Position
from .model import (
    ChannelInfo,
    ChannelSpec,
    ExperimentMetadata,
    ImageSpec,
    PlaneSpec,
    channel_defaults,
)
from .planes import png_time


def fingerprint_settings(metadata: ExperimentMetadata | None, *options: object) -> str:
    """What besides the planes decides an output's content: the metadata and the
    writer's options; part of :func:`source_fingerprint`."""
    return json.dumps([metadata.to_dict() if metadata else None, *options],
                      sort_keys=True, default=str)


def source_fingerprint(exp: Experiment, position: Position, settings: str = "") -> str:
    """SHA-256 over the name, size and modification time of every source plane.

    Cheap (no pixel reads) and changes whenever a plane file is replaced,
    added or removed; used to decide whether an existing output is current.
    """
    h = hashlib.sha256()
    h.update(f"{exp.t_values}|{exp.channels}|{exp.z_values}|{settings}".encode())
    for path in exp.plane_paths(position):
        if path is None:
            h.update(b"<missing>\0")
            continue
        st = os.stat(path)
        h.update(f"{path.name}|{st.st_size}|{st.st_mtime_ns}\0".encode())
    return h.hexdigest()


def file_fingerprint(path: Path, settings: str = "") -> str:
    """The fingerprint of a single plane file (the one-image-per-file mode)."""
    st = path.stat()
    return hashlib.sha256(
        f"{path.name}|{st.st_size}|{st.st_mtime_ns}|{settings}".encode()
    ).hexdigest()


def channel_info(name: str, metadata: ExperimentMetadata | None) -> ChannelInfo:
    """The metadata's view of a channel, gaps filled from the name."""
    guess = channel_defaults(name)
    given = metadata.acquisition.channel(name) if metadata else None
    if given is None:
        return guess
    return ChannelInfo(
        name,
        given.exposure_ms,
        given.excitation_nm if given.excitation_nm is not None else guess.excitation_nm,
        given.emission_nm if given.emission_nm is not None else guess.emission_nm,
        given.color or guess.color,
    )


def channel_spec(name: str, metadata: ExperimentMetadata | None) -> ChannelSpec:
    info = channel_info(name, metadata)
    return ChannelSpec(name, info.color, info.excitation_nm, info.emission_nm)


def provenance_pairs(
    exp: Experiment, when: datetime | None = None, action: str = "Export"
) -> list[tuple[str, str]]:
    """Who made this and from what: tool, version, citation, source, time.

    ``action`` names the record: "Export" for files ("Exported With"),
    "Upload" for OMERO ("Uploaded With", the original toolkit's key).
    """
    when = when or datetime.now(timezone.utc)
    return [
        (f"{action}ed With", f"{TOOL_NAME} {__version__}"),
        ("Tool URL", TOOL_URL),
        ("Citation", CITATION),
        ("Source folder", exp.root.resolve().name),
        (f"{action} time", when.isoformat(timespec="seconds")),
    ]


def _plane_exposure_ms(
    metadata: ExperimentMetadata | None, position: str, channel: str
) -> float | None:
    if metadata is None:
        return None
    stage = metadata.acquisition.positions.get(position)
    if stage is not None:
        for name, ms in stage.exposures_ms.items():
            if name.lower() == channel.lower():
                return ms
    ch = metadata.acquisition.channel(channel)
    return ch.exposure_ms if ch else None


def _png_delta_t(exp: Experiment, position: Position) -> dict[tuple[int, int], float]:
    """{(t_index, c_index): seconds} from the PNG ``tIME`` chunk of each stack's
    first plane, counted from the first plane of the first position: tIME is
    UTC while the log's start is local time, so the two clocks are not mixed."""
    times = {}
    for t_index, t in enumerate(exp.t_values):
        for c_index, c in enumerate(exp.channels):
            path = position.files.get((t, c, exp.z_values[0]))
            when = png_time(path) if path is not None and path.suffix.lower() == ".png" else None
            if when is not None:
                times[(t_index, c_index)] = when
    if not times:
        return {}
    first = exp.plane_paths(exp.positions[0])[0]
    origin = (png_time(first) if first is not None else None) or min(times.values())
    return {key: (when - origin).total_seconds() for key, when in times.items()}


def plane_specs(
    exp: Experiment, position: Position, metadata: ExperimentMetadata | None
) -> list[PlaneSpec]:
    """Per-plane facts in XYZCT order.

    DeltaT from the machine log's timestamps, else the PNG tIME chunks, else
    none; exposure per position and channel; stage position from the Points table.
    """
    acq = metadata.acquisition if metadata else None
    stage = acq.positions.get(position.name) if acq else None
    where = (stage.x_um, stage.y_um, stage.z_um) if stage is not None else (None, None, None)
    # Machine-log times by (timepoint number, channel): the k-th T value is the
    # log's 'Time point_k'.
    log_times = {
        (timepoint, name.lower()): seconds
        for (timepoint, name), seconds in (acq.plane_offsets_s.get(position.name, {})
                                           if acq else {}).items()
    }
    planes: list[PlaneSpec] = []
    png_times: dict[tuple[int, int], float] | None = None
    for t_index in range(exp.size_t):
        for c_index, c in enumerate(exp.channels):
            dt = log_times.get((t_index + 1, c.lower()))
            if dt is None:  # not in the log: the PNG's own timestamp, read once
                if png_times is None:
                    png_times = _png_delta_t(exp, position)
                dt = png_times.get((t_index, c_index))
            exposure = _plane_exposure_ms(metadata, position.name, c)
            planes.extend(PlaneSpec(z_index, c_index, t_index, dt, exposure, where)
                          for z_index in range(exp.size_z))
    return planes


def _annotations(metadata: ExperimentMetadata | None) -> dict:
    if metadata is None:
        return {}
    return {"tags": list(metadata.tags), "kvps": list(metadata.kvps),
            "description": metadata.description}


def describe(
    exp: Experiment,
    position: Position,
    metadata: ExperimentMetadata | None = None,
    *,
    provenance: Sequence[tuple[str, str]] | None = None,
    settings: str = "",
    fingerprint: str | None = None,
) -> ImageSpec:
    """One position as a 5-D image: channels, planes, physical sizes, annotations.

    ``settings`` (:func:`fingerprint_settings`) goes into the fingerprint;
    pass ``fingerprint`` when it was already computed for this position.
    """
    if position.shape is None or position.dtype is None:
        raise ValueError(f"{position.name}: discovered without probing; its size is unknown")
    acq = metadata.acquisition if metadata else None
    y, x = position.shape
    return ImageSpec(
        name=position.name,
        size=(x, y, exp.size_z, exp.size_c, exp.size_t),
        dtype=position.dtype.name,
        channels=[channel_spec(name, metadata) for name in exp.channels],
        planes=plane_specs(exp, position, metadata),
        sources=exp.plane_paths(position),
        fingerprint=fingerprint or source_fingerprint(exp, position, settings),
        pixel_size_um=acq.pixel_size_um if acq else None,
        z_spacing_um=acq.z_spacing_um if acq and exp.size_z > 1 else None,
        time_increment_s=acq.time_interval_s if acq and exp.size_t > 1 else None,
        acquisition_date=acq.started if acq else None,
        microscope=acq.microscope if acq else None,
        provenance=list(provenance or []),
        filled=[("Filled plane", f"T={t} C={c} Z={z}") for t, c, z in position.missing],
        **_annotations(metadata),
    )


def describe_file(
    path: Path,
    channel: str,
    shape: tuple[int, int],
    dtype: str,
    metadata: ExperimentMetadata | None = None,
    *,
    provenance: Sequence[tuple[str, str]] | None = None,
    settings: str = "",
) -> ImageSpec:
    """One plane file as its own single-plane image (the original's non-hypercube mode).

    The experiment-wide facts (channel, pixel size, date, tags, key-value
    pairs) apply; per-stack facts (z spacing, time increment) do not.
    """
    acq = metadata.acquisition if metadata else None
    y, x = shape
    annotations = _annotations(metadata)
    annotations.pop("description", None)
    return ImageSpec(
        name=path.name,
        size=(x, y, 1, 1, 1),
        dtype=dtype,
        channels=[channel_spec(channel, metadata)],
        planes=[],
        sources=[path],
        fingerprint=file_fingerprint(path, settings),
        pixel_size_um=acq.pixel_size_um if acq else None,
        acquisition_date=acq.started if acq else None,
        microscope=acq.microscope if acq else None,
        provenance=list(provenance or []),
        **annotations,
    )
