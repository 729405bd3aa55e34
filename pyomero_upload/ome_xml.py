"""OME-XML for one position's hypercube, built with ome-types.

The same facts go to OMERO later, so the mapping from our model to OME
concepts (channel colours, plane timing, annotations) lives here once.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from datetime import datetime, timezone

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

#: OME's names for pixel types that differ from numpy's.
OME_PIXEL_TYPES = {"float32": "float", "float64": "double"}

#: Namespace of the map annotation holding the source fingerprint.
SOURCE_NS = "pyomero-upload/source"


def source_fingerprint(exp: Experiment, position: Position) -> str:
    """SHA-256 over the name, size and modification time of every source plane.

    Cheap (no pixel reads) and changes whenever a plane file is replaced,
    added or removed; used to decide whether an existing output is current.
    """
    h = hashlib.sha256()
    h.update(f"{exp.t_values}|{exp.channels}|{exp.z_values}".encode())
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


def provenance_pairs(exp: Experiment, when: datetime | None = None) -> list[tuple[str, str]]:
    """Who made this and from what: tool, version, citation, source, time."""
    when = when or datetime.now(timezone.utc)
    return [
        ("Uploaded With", f"{TOOL_NAME} {__version__}"),
        ("Tool URL", TOOL_URL),
        ("Citation", CITATION),
        ("Source folder", exp.root.resolve().name),
        ("Export time", when.isoformat(timespec="seconds")),
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


def _delta_t(metadata: ExperimentMetadata | None, position: str, t: int, t_index: int):
    if metadata is None:
        return None
    acq = metadata.acquisition
    offsets = acq.timepoint_offsets_s.get(position, {})
    if t in offsets:
        return offsets[t]
    if acq.time_interval_s is not None:
        return t_index * acq.time_interval_s
    return None


def build_ome(
    exp: Experiment,
    position: Position,
    metadata: ExperimentMetadata | None = None,
    provenance: Sequence[tuple[str, str]] | None = None,
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

    stage = acq.positions.get(position.name) if acq else None
    planes = []
    for t_index, t in enumerate(exp.t_values):
        dt = _delta_t(metadata, position.name, t, t_index)
        for c_index, c in enumerate(exp.channels):
            exposure = _plane_exposure_ms(metadata, position.name, c)
            for z_index, _z in enumerate(exp.z_values):
                plane = ome.Plane(the_z=z_index, the_c=c_index, the_t=t_index)
                if dt is not None:
                    plane.delta_t = dt
                if exposure is not None:
                    plane.exposure_time = exposure
                    plane.exposure_time_unit = "ms"
                if stage is not None:
                    if stage.x_um is not None:
                        plane.position_x, plane.position_x_unit = stage.x_um, "µm"
                    if stage.y_um is not None:
                        plane.position_y, plane.position_y_unit = stage.y_um, "µm"
                    if stage.z_um is not None:
                        plane.position_z, plane.position_z_unit = stage.z_um, "µm"
                planes.append(plane)

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
        planes=planes,
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
        map_ann([("Source fingerprint", source_fingerprint(exp, position))], SOURCE_NS),
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


def ome_to_xml(doc: ome.OME) -> str:
    """Serialise to OME-XML text (UTF-8, with the XML declaration)."""
    return to_xml(doc)
