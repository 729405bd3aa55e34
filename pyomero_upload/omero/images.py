"""Images: create one empty image in a dataset, then its metadata, rendering
settings, thumbnail and completion mark once the pixels are in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from ..errors import OmeroError
from ..model import SOURCE_NS
from . import _ice
from ._ice import params, rstring, unwrap
from .annotations import AnnotationRef, link_annotations, new_maps, set_map
from .queries import Q_IMAGE, Q_PIXELS, Q_PIXELS_TYPE

if TYPE_CHECKING:
    from .connection import Connection

#: numpy dtype name -> OMERO PixelsType value.
PIXEL_TYPES = {
    "int8": "int8", "uint8": "uint8", "int16": "int16", "uint16": "uint16",
    "int32": "int32", "uint32": "uint32", "float32": "float", "float64": "double",
}


@dataclass
class NewImage:
    """An image just created: its id, its pixels' id, and its state annotation."""

    image_id: int
    pixels_id: int
    source: AnnotationRef


@dataclass
class ChannelFacts:
    """What to record about one channel."""

    name: str
    color: tuple[int, int, int] | None = None
    excitation_nm: float | None = None
    emission_nm: float | None = None


@dataclass
class PlaneFacts:
    """What to record about one plane (PlaneInfo)."""

    z: int
    c: int
    t: int
    delta_t_s: float | None = None
    exposure_ms: float | None = None
    position_um: tuple[float | None, float | None, float | None] = (None, None, None)


def create_image(conn: Connection, dataset_id: int, name: str, size: tuple[int, int, int, int, int],
                 dtype: np.dtype, description: str = "", fingerprint: str = "") -> NewImage:
    """Create an empty image, link it to the dataset at once, mark it incomplete.

    ``size`` is (X, Y, Z, C, T).  Linking first means an interruption never
    leaves an image outside its dataset; the "incomplete" mark means the next
    run replaces it.
    """
    model = _ice.omero.model
    x, y, z, c, t = size
    if dtype.name not in PIXEL_TYPES:
        raise OmeroError(f"OMERO has no pixel type for {dtype.name}")
    ptype = conn.query.findByQuery(Q_PIXELS_TYPE, params(value=PIXEL_TYPES[dtype.name]))
    if ptype is None:
        raise OmeroError(f"the server does not know pixel type {dtype.name}")
    image_id = unwrap(conn.retry(lambda: conn.sf.getPixelsService().createImage(
        x, y, z, t, list(range(c)), ptype, name, description), "IPixels.createImage",
        idempotent=False))
    link = model.DatasetImageLinkI()
    link.setParent(model.DatasetI(dataset_id, False))
    link.setChild(model.ImageI(image_id, False))
    conn.update.saveAndReturnObject(link)
    source = new_maps(conn, [([("Source fingerprint", fingerprint), ("Status", "incomplete")],
                              SOURCE_NS)])
    link_annotations(conn, "Image", image_id, source, new_target=True)
    pixels = conn.query.findByQuery(Q_PIXELS, params(iid=image_id))
    return NewImage(image_id, pixels.id.val, source[0])


def set_image_metadata(
    conn: Connection,
    image_id: int,
    channels: Sequence[ChannelFacts],
    planes: Sequence[PlaneFacts],
    pixel_size_um: float | None = None,
    z_spacing_um: float | None = None,
    time_increment_s: float | None = None,
    acquisition_date: datetime | None = None,
    description: str = "",
) -> None:
    """Physical sizes, channel names/colours/wavelengths, PlaneInfo, date.

    Call after the pixels are saved: the Image and Pixels are loaded here, so
    they carry the update event RawPixelsStore.save() gave them; saving an
    older copy fails the server's optimistic-lock check (OmeroInterceptor).
    """
    model, units = _ice.omero.model, _ice.omero.model.enums
    micron = units.UnitsLength.MICROMETER
    img = conn.query.findByQuery(Q_IMAGE, params(iid=image_id))
    pixels = conn.query.findByQuery(Q_PIXELS, params(iid=image_id))
    if acquisition_date is not None:
        img.setAcquisitionDate(_ice.omero.rtypes.rtime(int(acquisition_date.timestamp() * 1000)))
    if description:
        img.setDescription(rstring(description))
    if pixel_size_um:
        pixels.setPhysicalSizeX(model.LengthI(pixel_size_um, micron))
        pixels.setPhysicalSizeY(model.LengthI(pixel_size_um, micron))
    if z_spacing_um:
        pixels.setPhysicalSizeZ(model.LengthI(z_spacing_um, micron))
    if time_increment_s:
        pixels.setTimeIncrement(model.TimeI(time_increment_s, units.UnitsTime.SECOND))
    objects = [img, pixels]
    rint = _ice.omero.rtypes.rint
    for channel, facts in zip(pixels.copyChannels(), channels, strict=True):
        lc = channel.getLogicalChannel()
        lc.setName(rstring(facts.name))
        if facts.excitation_nm:
            lc.setExcitationWave(model.LengthI(facts.excitation_nm, units.UnitsLength.NANOMETER))
        if facts.emission_nm:
            lc.setEmissionWave(model.LengthI(facts.emission_nm, units.UnitsLength.NANOMETER))
        if facts.color:
            r, g, b = facts.color
            channel.setRed(rint(r))
            channel.setGreen(rint(g))
            channel.setBlue(rint(b))
            channel.setAlpha(rint(255))
        objects += [channel, lc]
    conn.update.saveArray(objects)
    infos = []
    for p in planes:
        info = model.PlaneInfoI()
        info.setPixels(model.PixelsI(pixels.id.val, False))
        info.setTheZ(rint(p.z))
        info.setTheC(rint(p.c))
        info.setTheT(rint(p.t))
        if p.delta_t_s is not None:
            info.setDeltaT(model.TimeI(p.delta_t_s, units.UnitsTime.SECOND))
        if p.exposure_ms is not None:
            info.setExposureTime(model.TimeI(p.exposure_ms, units.UnitsTime.MILLISECOND))
        for axis, value in zip("XYZ", p.position_um, strict=True):
            if value is not None:
                getattr(info, f"setPosition{axis}")(model.LengthI(value, micron))
        infos.append(info)
    if infos:
        conn.update.saveArray(infos)


def finish_rendering(conn: Connection, image_id: int, pixels_id: int,
                     minmax: Sequence[Sequence[float]]) -> None:
    """Channel min/max from the real pixels, default rendering settings, a thumbnail."""
    for c, (lo, hi) in enumerate(minmax):
        if np.isfinite(lo):
            conn.pixels_service.setChannelGlobalMinMax(pixels_id, c, float(lo), float(hi))
    conn.retry(lambda: conn.sf.getRenderingSettingsService().resetDefaultsInSet(
        "Image", [image_id]), "IRenderingSettings.resetDefaultsInSet")

    def thumbnail() -> None:
        thumbs = conn.sf.createThumbnailStore()
        try:
            if thumbs.setPixelsId(pixels_id):
                thumbs.getThumbnailByLongestSide(_ice.omero.rtypes.rint(96))
        finally:
            thumbs.close()

    conn.retry(thumbnail, "ThumbnailStore")


def mark_complete(conn: Connection, source: AnnotationRef, fingerprint: str) -> None:
    """The last step of an image: only now does a re-run treat it as done."""
    set_map(conn, source.id, [("Source fingerprint", fingerprint), ("Status", "complete")])


__all__ = ["PIXEL_TYPES", "ChannelFacts", "NewImage", "PlaneFacts", "create_image",
           "finish_rendering", "mark_complete", "set_image_metadata"]
