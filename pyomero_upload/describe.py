"""Each image described once: experiment + metadata -> :class:`ImageSpec`.

The writers' model (:class:`ImageSpec`, :class:`ChannelSpec`,
:class:`PlaneSpec`) and the one function that fills it in (:func:`describe`).
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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from . import CITATION, TOOL_NAME, TOOL_URL, __version__
from .layout import Experiment, Position
from .model import (
    CLIENT_MAP_NS,
    FILLED_NS,
    PROVENANCE_NS,
    SOURCE_NS,
    ChannelInfo,
    ExperimentMetadata,
    channel_defaults,
)
from .planes import png_time

#: numpy's pixel type names -> OME's (OME-XML ``Pixels/@Type``, OMERO's PixelsType).
OME_PIXEL_TYPES = {
    "int8": "int8", "uint8": "uint8", "int16": "int16", "uint16": "uint16",
    "int32": "int32", "uint32": "uint32", "float32": "float", "float64": "double",
}


@dataclass(frozen=True)
class ChannelSpec:
    """One channel of an image as every writer shows it."""

    name: str
    color: tuple[int, int, int] | None = None
    excitation_nm: float | None = None
    emission_nm: float | None = None


@dataclass(frozen=True)
class PlaneSpec:
    """Facts of one plane: its place (0-based) and when, how long, where it was taken."""

    z: int
    c: int
    t: int
    delta_t_s: float | None = None
    exposure_ms: float | None = None
    position_um: tuple[float | None, float | None, float | None] = (None, None, None)


@dataclass
class ImageSpec:
    """One image, described once, written by every writer (OME-TIFF, OMERO, ...).

    Sizes are (X, Y, Z, C, T) with dimension order XYZCT: ``planes`` and
    ``sources`` are in that order.  ``sources`` are the plane files (None for a
    plane filled with zeros); ``dtype`` is numpy's name of the pixel type.
    """

    name: str
    size: tuple[int, int, int, int, int]
    dtype: str
    channels: list[ChannelSpec]
    planes: list[PlaneSpec]
    sources: list[Path | None]
    fingerprint: str
    pixel_size_um: float | None = None
    z_spacing_um: float | None = None
    time_increment_s: float | None = None
    acquisition_date: datetime | None = None
    description: str = ""
    microscope: str | None = None
    tags: list[str] = field(default_factory=list)
    #: Key-value pairs (OMERO.web's editable namespace).
    kvps: list[tuple[str, str]] = field(default_factory=list)
    provenance: list[tuple[str, str]] = field(default_factory=list)
    #: Planes filled with zeros (--allow-missing), as "Filled plane" pairs.
    filled: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ome_pixel_type(self) -> str:
        return OME_PIXEL_TYPES[self.dtype]

    @property
    def n_planes(self) -> int:
        return self.size[2] * self.size[3] * self.size[4]

    @property
    def nbytes(self) -> int:
        """Bytes of pixels (numpy's names end in the bits per pixel: uint16, float32)."""
        bits = int("".join(ch for ch in self.dtype if ch.isdigit()))
        return self.n_planes * self.size[0] * self.size[1] * bits // 8

    @property
    def plane_shape(self) -> tuple[int, int]:
        """(Y, X), as numpy has it."""
        return self.size[1], self.size[0]

    def map_annotations(self, *, source: bool = True) -> list[tuple[list[tuple[str, str]], str]]:
        """The image's key-value groups with their namespaces, in a fixed order;
        ``source`` adds the fingerprint record."""
        groups = [(list(self.kvps), CLIENT_MAP_NS), (list(self.provenance), PROVENANCE_NS),
                  (list(self.filled), FILLED_NS)]
        if source:
            groups.append(([("Source fingerprint", self.fingerprint)], SOURCE_NS))
        return [(pairs, ns) for pairs, ns in groups if pairs]


def fingerprint_settings(metadata: ExperimentMetadata | None, *options: object) -> str:
    """What besides the planes decides an output's content: the metadata and the
    writer's options; part of :func:`source_fingerprint`."""
    return json.dumps([metadata.to_dict() if metadata else None, *options],
                      sort_keys=True, default=str)


def content_sha1(path: Path) -> str:
    """SHA-1 of a file's bytes (the ``--checksum`` fingerprints, as ``rsync -c``)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _file_facts(path: Path, checksum: bool) -> str:
    if checksum:
        return f"{path.name}|sha1:{content_sha1(path)}"
    st = os.stat(path)
    return f"{path.name}|{st.st_size}|{st.st_mtime_ns}"


def source_fingerprint(exp: Experiment, position: Position, settings: str = "",
                       checksum: bool = False) -> str:
    """SHA-256 over the name, size and modification time of every source plane.

    Cheap (no pixel reads) and changes whenever a plane file is replaced,
    added or removed; used to decide whether an existing output is current.
    With ``checksum`` each plane's contents are hashed instead of its size and
    time (slower: every file is read), so a change that keeps both is seen too.
    """
    h = hashlib.sha256()
    h.update(f"{exp.t_values}|{exp.channels}|{exp.z_values}|{settings}".encode())
    for path in exp.plane_paths(position):
        if path is None:
            h.update(b"<missing>\0")
            continue
        h.update(f"{_file_facts(path, checksum)}\0".encode())
    return h.hexdigest()


def file_fingerprint(path: Path, settings: str = "", identity: str = "",
                     checksum: bool = False) -> str:
    """The fingerprint of a single plane file (the one-image-per-file mode).

    ``identity`` (the file's path in the experiment) is part of it, so that the
    same file name in two positions never has the same fingerprint.
    """
    facts = _file_facts(path, checksum)
    if identity:
        facts = f"{identity}|{facts}"
    return hashlib.sha256(f"{facts}|{settings}".encode()).hexdigest()


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
    fingerprint: str | None = None,
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
        fingerprint=fingerprint or file_fingerprint(path, settings),
        pixel_size_um=acq.pixel_size_um if acq else None,
        acquisition_date=acq.started if acq else None,
        microscope=acq.microscope if acq else None,
        provenance=list(provenance or []),
        **annotations,
    )

