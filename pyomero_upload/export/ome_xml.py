"""An :class:`~pyomero_upload.describe.ImageSpec` as OME-XML, and nothing else.

What goes into the image is decided in :mod:`pyomero_upload.describe`; this
module only maps it onto the OME schema (2016-06), element by element in the
schema's order, with the standard library's ElementTree: building it with
ome-types costs more than half a second of import and milliseconds per image
on the export's critical path.  The tests validate every document against the
schema (ome-types, and Bio-Formats as the reference reader).
"""

from __future__ import annotations

from xml.etree import ElementTree as ET

from .. import TOOL_NAME, __version__
from ..describe import ImageSpec, PlaneSpec
from ..model import SOURCE_NS

OME_NS = "http://www.openmicroscopy.org/Schemas/OME/2016-06"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
MICROMETER = "µm"


def _num(value: float) -> str:
    return repr(float(value))


def ome_color(rgb: tuple[int, int, int], alpha: int = 255) -> int:
    """OME's Color: RGBA packed into a signed 32-bit integer (white is -1)."""
    r, g, b = rgb
    packed = (r << 24) | (g << 16) | (b << 8) | alpha
    return packed - (1 << 32) if packed >= 1 << 31 else packed


def _plane_attrs(p: PlaneSpec) -> dict[str, str]:
    """OME-XML attributes of one Plane."""
    attrs = {"TheZ": str(p.z), "TheT": str(p.t), "TheC": str(p.c)}
    if p.delta_t_s is not None:
        attrs |= {"DeltaT": _num(p.delta_t_s), "DeltaTUnit": "s"}
    if p.exposure_ms is not None:
        attrs |= {"ExposureTime": _num(p.exposure_ms), "ExposureTimeUnit": "ms"}
    for axis, value in zip("XYZ", p.position_um, strict=True):
        if value is not None:
            attrs |= {f"Position{axis}": _num(value), f"Position{axis}Unit": MICROMETER}
    return attrs


def _sub(parent: ET.Element, tag: str, attrs: dict[str, str] | None = None,
         text: str | None = None) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs or {})
    if text is not None:
        element.text = text
    return element


def build_ome(spec: ImageSpec, tiff: bool = True) -> ET.Element:
    """The OME element of one image: instrument, image, pixels, channels, planes, annotations.

    ``tiff``: the pixels are the file's TIFF pages (``TiffData``); else they are
    kept apart from this document (``MetadataOnly``, as in OME-Zarr).
    """
    ome = ET.Element("OME", {
        "xmlns": OME_NS, "xmlns:xsi": XSI_NS, "Creator": f"{TOOL_NAME} {__version__}",
        "xsi:schemaLocation": f"{OME_NS} {OME_NS}/ome.xsd",
    })
    if spec.microscope:
        instrument = _sub(ome, "Instrument", {"ID": "Instrument:0"})
        _sub(instrument, "Microscope", {"Model": spec.microscope})

    image = _sub(ome, "Image", {"ID": "Image:0", "Name": spec.name})
    if spec.acquisition_date is not None:
        _sub(image, "AcquisitionDate", text=spec.acquisition_date.isoformat())
    if spec.description:
        _sub(image, "Description", text=spec.description)
    if spec.microscope:
        _sub(image, "InstrumentRef", {"ID": "Instrument:0"})

    x, y, size_z, size_c, size_t = spec.size
    bits = "".join(ch for ch in spec.dtype if ch.isdigit())
    pixels_attrs = {
        "ID": "Pixels:0", "DimensionOrder": "XYZCT", "Type": spec.ome_pixel_type,
        "SignificantBits": bits, "Interleaved": "false", "BigEndian": "false",
        "SizeX": str(x), "SizeY": str(y), "SizeZ": str(size_z), "SizeC": str(size_c),
        "SizeT": str(size_t),
    }
    if spec.pixel_size_um:
        size = _num(spec.pixel_size_um)
        pixels_attrs |= {"PhysicalSizeX": size, "PhysicalSizeXUnit": MICROMETER,
                         "PhysicalSizeY": size, "PhysicalSizeYUnit": MICROMETER}
    if spec.z_spacing_um:
        pixels_attrs |= {"PhysicalSizeZ": _num(spec.z_spacing_um),
                         "PhysicalSizeZUnit": MICROMETER}
    if spec.time_increment_s:
        pixels_attrs |= {"TimeIncrement": _num(spec.time_increment_s), "TimeIncrementUnit": "s"}
    pixels = _sub(image, "Pixels", pixels_attrs)
    for c_index, ch in enumerate(spec.channels):
        attrs = {"ID": f"Channel:0:{c_index}", "Name": ch.name, "SamplesPerPixel": "1"}
        if ch.color:
            attrs["Color"] = str(ome_color(ch.color))
        if ch.excitation_nm is not None:
            attrs |= {"ExcitationWavelength": _num(ch.excitation_nm),
                      "ExcitationWavelengthUnit": "nm"}
        if ch.emission_nm is not None:
            attrs |= {"EmissionWavelength": _num(ch.emission_nm),
                      "EmissionWavelengthUnit": "nm"}
        _sub(pixels, "Channel", attrs)
    if tiff:
        _sub(pixels, "TiffData", {"IFD": "0", "PlaneCount": str(size_z * size_c * size_t)})
    else:
        _sub(pixels, "MetadataOnly")
    for plane in spec.planes:
        _sub(pixels, "Plane", _plane_attrs(plane))

    annotations = ET.Element("StructuredAnnotations")

    def annotate(tag: str, attrs: dict[str, str] | None = None) -> ET.Element:
        ann_id = f"Annotation:{len(annotations)}"
        _sub(image, "AnnotationRef", {"ID": ann_id})
        return _sub(annotations, tag, {"ID": ann_id, **(attrs or {})})

    for tag in spec.tags:
        _sub(annotate("TagAnnotation"), "Value", text=tag)
    if spec.description:
        _sub(annotate("CommentAnnotation"), "Value", text=spec.description)
    for pairs, ns in spec.map_annotations():
        value = _sub(annotate("MapAnnotation", {"Namespace": ns}), "Value")
        for k, v in pairs:
            _sub(value, "M", {"K": k}, text=v)
    if len(annotations):
        ome.append(annotations)
    return ome


def image_xml(spec: ImageSpec, tiff: bool = True) -> bytes:
    """OME-XML of one image, UTF-8 encoded (``tiff`` as in :func:`build_ome`).

    UTF-8, as the OME-TIFF specification and Bio-Formats' own writer have it:
    Bio-Formats does not decode character references in attribute values, so
    "&#181;m" would be an unknown unit and the file not OME-TIFF.
    """
    body = ET.tostring(build_ome(spec, tiff), encoding="unicode")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + body).encode("utf-8")


def fingerprint_in_xml(xml: str | bytes) -> str | None:
    """The "Source fingerprint" an OME-XML document of ours records, if any."""
    root = ET.fromstring(xml)
    ns = {"ome": OME_NS}
    for ann in root.iterfind("ome:StructuredAnnotations/ome:MapAnnotation", ns):
        if ann.get("Namespace") == SOURCE_NS:
            for m in ann.iterfind("ome:Value/ome:M", ns):
                if m.get("K") == "Source fingerprint":
                    return m.text
    return None
