"""OME-XML for one position's hypercube, built with ome-types.

The same facts go to OMERO later, so the mapping from our model to OME
concepts (channel colours, plane timing, annotations) lives here once.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any
from xml.sax.saxutils import escape

from ome_types import model as ome
from ome_types import to_xml

from . import CITATION, TOOL_NAME, TOOL_URL, __version__
from .layout import Experiment, Position
from .model import (
    CLIENT_MAP_NS,
    FILLED_NS,
    PROVENANCE_NS,
    ChannelInfo,
    ExperimentMetadata,
    channel_defaults,
)
from .planes import png_time

#: OME's names for pixel types that differ from numpy's.
OME_PIXEL_TYPES = {"float32": "float", "float64": "double"}

#: Namespace of the map annotation holding the source fingerprint.
SOURCE_NS = "pyomero-upload/source"


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


def provenance_pairs(
    exp: Experiment, when: datetime | None = None, action: str = "Export"
) -> list[tuple[str, str]]:
    """Who made this and from what: tool, version, citation, source, time."""
    when = when or datetime.now(timezone.utc)
    return [
        ("Uploaded With", f"{TOOL_NAME} {__version__}"),
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


def plane_records(
    exp: Experiment, position: Position, metadata: ExperimentMetadata | None
) -> list[dict[str, Any]]:
    """Per-plane facts (``ome.Plane`` field names) in XYZCT order.

    DeltaT from the machine log's timestamps, else the PNG tIME chunks, else
    none; exposure per position and channel; stage position from the Points table.
    """
    acq = metadata.acquisition if metadata else None
    stage = acq.positions.get(position.name) if acq else None
    where: dict[str, Any] = {}
    if stage is not None:
        for axis in ("x", "y", "z"):
            value = getattr(stage, f"{axis}_um")
            if value is not None:
                where[f"position_{axis}"] = value
                where[f"position_{axis}_unit"] = "µm"
    # Machine-log times by (timepoint number, channel): the k-th T value is the
    # log's 'Time point_k'.
    log_times = {
        (timepoint, name.lower()): seconds
        for (timepoint, name), seconds in (acq.plane_offsets_s.get(position.name, {})
                                           if acq else {}).items()
    }
    records = []
    png_times: dict[tuple[int, int], float] | None = None
    for t_index in range(exp.size_t):
        for c_index, c in enumerate(exp.channels):
            dt = log_times.get((t_index + 1, c.lower()))
            if dt is None:  # not in the log: the PNG's own timestamp, read once
                if png_times is None:
                    png_times = _png_delta_t(exp, position)
                dt = png_times.get((t_index, c_index))
            exposure = _plane_exposure_ms(metadata, position.name, c)
            for z_index in range(exp.size_z):
                rec: dict[str, Any] = {"the_z": z_index, "the_t": t_index, "the_c": c_index}
                if dt is not None:
                    rec["delta_t"] = dt
                    rec["delta_t_unit"] = "s"
                if exposure is not None:
                    rec["exposure_time"] = exposure
                    rec["exposure_time_unit"] = "ms"
                rec.update(where)
                records.append(rec)
    return records


# OME-XML attribute of each plane record key.
_PLANE_ATTRS = {
    "the_z": "TheZ", "the_t": "TheT", "the_c": "TheC",
    "delta_t": "DeltaT", "delta_t_unit": "DeltaTUnit",
    "exposure_time": "ExposureTime", "exposure_time_unit": "ExposureTimeUnit",
    "position_x": "PositionX", "position_x_unit": "PositionXUnit",
    "position_y": "PositionY", "position_y_unit": "PositionYUnit",
    "position_z": "PositionZ", "position_z_unit": "PositionZUnit",
}


def position_xml(
    exp: Experiment,
    position: Position,
    metadata: ExperimentMetadata | None = None,
    provenance: Sequence[tuple[str, str]] | None = None,
    settings: str = "",
) -> bytes:
    """OME-XML of one position, UTF-8 encoded, as :func:`build_ome` describes it.

    ome-types serialises a few hundred Plane elements slowly (tens of ms per
    position, which is several percent of an export), so the document is
    serialised without them and the Plane elements, plain attributes only,
    are formatted here and put at their place at the end of Pixels.  Tests
    validate the result against the OME schema.
    """
    doc = build_ome(exp, position, metadata, provenance, include_planes=False, settings=settings)
    xml = to_xml(doc)
    planes = "".join(
        "<Plane "
        + " ".join(f'{_PLANE_ATTRS[k]}="{escape(str(v))}"' for k, v in rec.items())
        + "/>"
        for rec in plane_records(exp, position, metadata)
    )
    head, sep, tail = xml.partition("</Pixels>")
    if not sep:
        raise RuntimeError("serialised OME-XML has no </Pixels>")
    # UTF-8, as the OME-TIFF specification and Bio-Formats' own writer have
    # it: Bio-Formats does not decode character references in attribute
    # values, so "&#181;m" would be an unknown unit and the file not OME-TIFF.
    return (head + planes + sep + tail).encode("utf-8")


def build_ome(
    exp: Experiment,
    position: Position,
    metadata: ExperimentMetadata | None = None,
    provenance: Sequence[tuple[str, str]] | None = None,
    include_planes: bool = True,
    settings: str = "",
) -> ome.OME:
    """OME model of one position: pixels, channels, planes and annotations."""
    assert position.shape is not None and position.dtype is not None
    acq = metadata.acquisition if metadata else None
    y, x = position.shape
    n_planes = exp.planes_per_position

    channels = []
    for c_index, name in enumerate(exp.channels):
        info = channel_info(name, metadata)
        channels.append(
            ome.Channel(
                id=f"Channel:0:{c_index}",
                name=name,
                samples_per_pixel=1,
                color=ome.Color(info.color) if info.color else None,
                excitation_wavelength=info.excitation_nm,
                emission_wavelength=info.emission_nm,
            )
        )

    pixels = ome.Pixels(
        id="Pixels:0",
        dimension_order="XYZCT",
        type=OME_PIXEL_TYPES.get(position.dtype.name, position.dtype.name),
        big_endian=False,
        size_x=x,
        size_y=y,
        size_z=exp.size_z,
        size_c=exp.size_c,
        size_t=exp.size_t,
        channels=channels,
        tiff_data_blocks=[ome.TiffData(ifd=0, plane_count=n_planes)],
        planes=[ome.Plane(**rec) for rec in plane_records(exp, position, metadata)]
        if include_planes
        else [],
    )
    if acq is not None:
        if acq.pixel_size_um:
            pixels.physical_size_x = pixels.physical_size_y = acq.pixel_size_um
        if acq.z_spacing_um and exp.size_z > 1:
            pixels.physical_size_z = acq.z_spacing_um
        if acq.time_interval_s and exp.size_t > 1:
            pixels.time_increment = acq.time_interval_s

    annotations = ome.StructuredAnnotations()
    refs: list[ome.AnnotationRef] = []

    def add(kind: str, ann) -> None:
        getattr(annotations, kind).append(ann)
        refs.append(ome.AnnotationRef(id=ann.id))

    def next_id() -> str:
        return f"Annotation:{len(refs)}"

    def map_ann(pairs: Sequence[tuple[str, str]], ns: str) -> ome.MapAnnotation:
        return ome.MapAnnotation(
            id=next_id(),
            namespace=ns,
            value=ome.Map(ms=[ome.Map.M(k=k, value=v) for k, v in pairs]),
        )

    if metadata is not None:
        for tag in metadata.tags:
            add("tag_annotations", ome.TagAnnotation(id=next_id(), value=tag))
        if metadata.kvps:
            add("map_annotations", map_ann(metadata.kvps, CLIENT_MAP_NS))
        if metadata.description:
            add(
                "comment_annotations",
                ome.CommentAnnotation(id=next_id(), value=metadata.description),
            )
    if provenance:
        add("map_annotations", map_ann(provenance, PROVENANCE_NS))
    if position.missing:
        filled = [("Filled plane", f"T={t} C={c} Z={z}") for t, c, z in position.missing]
        add("map_annotations", map_ann(filled, FILLED_NS))
    add(
        "map_annotations",
        map_ann([("Source fingerprint", source_fingerprint(exp, position, settings))], SOURCE_NS),
    )

    image = ome.Image(id="Image:0", name=position.name, pixels=pixels, annotation_refs=refs)
    instruments = []
    if acq is not None:
        if acq.started is not None:
            image.acquisition_date = acq.started
        if acq.microscope:
            instruments.append(
                ome.Instrument(id="Instrument:0", microscope=ome.Microscope(model=acq.microscope))
            )
            image.instrument_ref = ome.InstrumentRef(id="Instrument:0")
    if metadata is not None and metadata.description:
        image.description = metadata.description

    return ome.OME(
        creator=f"{TOOL_NAME} {__version__}",
        images=[image],
        instruments=instruments,
        structured_annotations=annotations,
    )
