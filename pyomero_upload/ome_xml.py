"""An :class:`~.model.ImageSpec` as OME-XML (ome-types), and nothing else.

What goes into the image is decided in :mod:`pyomero_upload.describe`; this
module only maps it onto OME's schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import quoteattr

from ome_types import model as ome
from ome_types import to_xml

from . import TOOL_NAME, __version__
from .model import ImageSpec, PlaneSpec

MICROMETER = "µm"


def _plane_attrs(p: PlaneSpec) -> dict[str, object]:
    """OME-XML attributes of one Plane, in schema order."""
    attrs: dict[str, object] = {"TheZ": p.z, "TheT": p.t, "TheC": p.c}
    if p.delta_t_s is not None:
        attrs |= {"DeltaT": p.delta_t_s, "DeltaTUnit": "s"}
    if p.exposure_ms is not None:
        attrs |= {"ExposureTime": p.exposure_ms, "ExposureTimeUnit": "ms"}
    for axis, value in zip("XYZ", p.position_um, strict=True):
        if value is not None:
            attrs |= {f"Position{axis}": value, f"Position{axis}Unit": MICROMETER}
    return attrs


def image_xml(spec: ImageSpec) -> bytes:
    """OME-XML of one image, UTF-8 encoded, as :func:`build_ome` describes it.

    ome-types serialises a few hundred Plane elements slowly (tens of ms per
    image, several percent of an export), so the document is serialised
    without them and the Plane elements, plain attributes only, are
    formatted here and put at their place at the end of Pixels.  Tests
    validate the result against the OME schema.
    """
    xml = to_xml(build_ome(spec, include_planes=False))
    planes = "".join(
        "<Plane " + " ".join(f"{k}={quoteattr(str(v))}" for k, v in _plane_attrs(p).items())
        + "/>"
        for p in spec.planes
    )
    head, sep, tail = xml.partition("</Pixels>")
    if not sep:
        raise RuntimeError("serialised OME-XML has no </Pixels>")
    # UTF-8, as the OME-TIFF specification and Bio-Formats' own writer have
    # it: Bio-Formats does not decode character references in attribute
    # values, so "&#181;m" would be an unknown unit and the file not OME-TIFF.
    return (head + planes + sep + tail).encode("utf-8")


def build_ome(spec: ImageSpec, include_planes: bool = True) -> ome.OME:
    """OME model of one image: pixels, channels, planes and annotations."""
    x, y, size_z, size_c, size_t = spec.size
    channels = []
    for c_index, ch in enumerate(spec.channels):
        channel = ome.Channel(
            id=f"Channel:0:{c_index}",
            name=ch.name,
            samples_per_pixel=1,
            excitation_wavelength=ch.excitation_nm,
            emission_wavelength=ch.emission_nm,
        )
        if ch.color:
            channel.color = ome.Color(ch.color)
        channels.append(channel)
    pixels = ome.Pixels(
        id="Pixels:0",
        dimension_order=ome.Pixels_DimensionOrder.XYZCT,
        type=ome.PixelType(spec.ome_pixel_type),
        big_endian=False,
        size_x=x,
        size_y=y,
        size_z=size_z,
        size_c=size_c,
        size_t=size_t,
        channels=channels,
        tiff_data_blocks=[ome.TiffData(ifd=0, plane_count=size_z * size_c * size_t)],
        planes=[_plane(p) for p in spec.planes] if include_planes else [],
    )
    if spec.pixel_size_um:
        pixels.physical_size_x = pixels.physical_size_y = spec.pixel_size_um
    if spec.z_spacing_um:
        pixels.physical_size_z = spec.z_spacing_um
    if spec.time_increment_s:
        pixels.time_increment = spec.time_increment_s

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

    for tag in spec.tags:
        add("tag_annotations", ome.TagAnnotation(id=next_id(), value=tag))
    if spec.description:
        add("comment_annotations", ome.CommentAnnotation(id=next_id(), value=spec.description))
    for pairs, ns in spec.map_annotations():
        add("map_annotations", map_ann(pairs, ns))

    image = ome.Image(id="Image:0", name=spec.name, pixels=pixels, annotation_refs=refs)
    instruments = []
    if spec.acquisition_date is not None:
        image.acquisition_date = spec.acquisition_date
    if spec.microscope:
        instruments.append(
            ome.Instrument(id="Instrument:0", microscope=ome.Microscope(model=spec.microscope))
        )
        image.instrument_ref = ome.InstrumentRef(id="Instrument:0")
    if spec.description:
        image.description = spec.description

    return ome.OME(
        creator=f"{TOOL_NAME} {__version__}",
        images=[image],
        instruments=instruments,
        structured_annotations=annotations,
    )


def _plane(p: PlaneSpec) -> ome.Plane:
    """The same Plane as :func:`_plane_attrs`, as an ome-types object."""
    fields: dict[str, Any] = {"the_z": p.z, "the_t": p.t, "the_c": p.c}
    if p.delta_t_s is not None:
        fields |= {"delta_t": p.delta_t_s, "delta_t_unit": ome.UnitsTime.SECOND}
    if p.exposure_ms is not None:
        fields |= {"exposure_time": p.exposure_ms,
                   "exposure_time_unit": ome.UnitsTime.MILLISECOND}
    for axis, value in zip("xyz", p.position_um, strict=True):
        if value is not None:
            fields |= {f"position_{axis}": value,
                       f"position_{axis}_unit": ome.UnitsLength.MICROMETER}
    return ome.Plane(**fields)
