"""Images: write an :class:`~pyomero_upload.describe.ImageSpec` into a dataset.

An empty image first (linked, marked incomplete), then its pixels, then its
metadata, annotations, rendering settings and thumbnail, and the completion
mark last.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np

from ..describe import OME_PIXEL_TYPES, ImageSpec
from ..errors import OmeroError
from ..model import SOURCE_NS
from . import _ice
from ._ice import params, rstring, unwrap
from .annotations import AnnotationRef, link_annotations, new_maps, set_map
from .pixels import PixelWriter
from .queries import PENDING_IMAGE, Q_IMAGE, Q_MAP_ANNOTATION, Q_PIXELS, Q_PIXELS_TYPE

if TYPE_CHECKING:
    from .connection import Connection

@dataclass
class NewImage:
    """An image just created: its id, its pixels' id, its state annotation and identity."""

    image_id: int
    pixels_id: int
    source: AnnotationRef
    identity: str = ""


@dataclass
class WrittenImage:
    """An image written completely: its ids and the pixel calls it took."""

    image_id: int
    pixels_id: int
    pixel_calls: int


def create_image(conn: Connection, dataset_id: int, spec: ImageSpec,
                 identity: str = "") -> NewImage:
    """Create the empty image ``spec`` describes, link it to the dataset at once,
    mark it incomplete, with its ``identity`` (what it is the upload of).

    Until its pixels are in, the image's description names the dataset it is
    for (:data:`~.queries.PENDING_IMAGE`): a kill between ``createImage`` and the
    link leaves an image in no dataset, and the next run of the dataset finds it by
    that (:func:`~.queries.orphan_images`) and removes it.  Linked, the
    "incomplete" mark means the next run replaces it.
    """
    x, y, z, c, t = spec.size
    if spec.dtype not in OME_PIXEL_TYPES:
        raise OmeroError(f"OMERO has no pixel type for {spec.dtype}")
    ptype = conn.query.findByQuery(Q_PIXELS_TYPE, params(value=spec.ome_pixel_type))
    if ptype is None:
        raise OmeroError(f"the server does not know pixel type {spec.dtype}")
    image_id = unwrap(conn.retry(lambda: conn.sf.getPixelsService().createImage(
        x, y, z, t, list(range(c)), ptype, spec.name,
        PENDING_IMAGE.format(dataset_id=dataset_id)),
        "IPixels.createImage", idempotent=False))
    link_image(conn, dataset_id, image_id)
    source = new_maps(conn, [(_source_pairs(spec.fingerprint, "incomplete", identity),
                              SOURCE_NS)])
    link_annotations(conn, "Image", image_id, source, new_target=True)
    pixels = conn.query.findByQuery(Q_PIXELS, params(iid=image_id))
    return NewImage(image_id, pixels.id.val, source[0], identity)


def link_image(conn: Connection, dataset_id: int, image_id: int) -> None:
    """Put the image into the dataset."""
    model = _ice.omero.model
    link = model.DatasetImageLinkI()
    link.setParent(model.DatasetI(dataset_id, False))
    link.setChild(model.ImageI(image_id, False))
    conn.update.saveAndReturnObject(link)


def _source_pairs(fingerprint: str, status: str, identity: str, completed: str = ""
                  ) -> list[tuple[str, str]]:
    pairs = [("Source fingerprint", fingerprint), ("Status", status)]
    if identity:
        pairs.append(("Source", identity))
    if completed:
        pairs.append(("Completed", completed))
    return pairs


def set_image_metadata(conn: Connection, image_id: int, spec: ImageSpec) -> None:
    """Physical sizes, channel names/colours/wavelengths, PlaneInfo, date.

    Call after the pixels are saved: the Image and Pixels are loaded here, so
    they carry the update event RawPixelsStore.save() gave them; saving an
    older copy fails the server's optimistic-lock check (OmeroInterceptor).
    """
    model, units = _ice.omero.model, _ice.omero.model.enums
    micron = units.UnitsLength.MICROMETER
    img = conn.query.findByQuery(Q_IMAGE, params(iid=image_id))
    pixels = conn.query.findByQuery(Q_PIXELS, params(iid=image_id))
    if img is None or pixels is None:
        raise gone(image_id, spec.name)
    img.setDescription(None if spec.description is None else rstring(spec.description))
    if spec.acquisition_date is not None:
        img.setAcquisitionDate(
            _ice.omero.rtypes.rtime(int(spec.acquisition_date.timestamp() * 1000)))
    if spec.pixel_size_um:
        pixels.setPhysicalSizeX(model.LengthI(spec.pixel_size_um, micron))
        pixels.setPhysicalSizeY(model.LengthI(spec.pixel_size_um, micron))
    if spec.z_spacing_um:
        pixels.setPhysicalSizeZ(model.LengthI(spec.z_spacing_um, micron))
    if spec.time_increment_s:
        pixels.setTimeIncrement(model.TimeI(spec.time_increment_s, units.UnitsTime.SECOND))
    objects = [img, pixels]
    rint = _ice.omero.rtypes.rint
    for channel, facts in zip(pixels.copyChannels(), spec.channels, strict=True):
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
    for p in spec.planes:
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


def write(
    conn: Connection,
    dataset_id: int,
    spec: ImageSpec,
    planes: Iterable[np.ndarray],
    tags: Sequence[AnnotationRef] = (),
    on_plane: Callable[[int], None] | None = None,
    new: NewImage | None = None,
) -> WrittenImage:
    """Write the image ``spec`` describes into a dataset: pixels, metadata, annotations.

    ``planes`` come in XYZCT order; ``tags`` are the experiment's tags, made
    once per dataset; ``new`` is the image if :func:`create_image` already
    made it.  The image is marked complete only as the very last step.
    """
    if new is None:
        new = create_image(conn, dataset_id, spec)
    _x, _y, size_z, size_c, size_t = spec.size
    writer = PixelWriter(conn, new.pixels_id, size_z, size_c, size_t)
    try:
        for plane in planes:
            writer.add(plane)
            if on_plane:
                on_plane(plane.nbytes)
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    set_image_metadata(conn, new.image_id, spec)
    link_annotations(conn, "Image", new.image_id,
                     new_maps(conn, spec.map_annotations(source=False)) + list(tags),
                     new_target=True)
    finish_rendering(conn, new.image_id, new.pixels_id, writer.minmax)
    mark_complete(conn, new.source, spec.fingerprint, new.identity)
    return WrittenImage(new.image_id, new.pixels_id, writer.calls)


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


def source_status(conn: Connection, image: NewImage) -> str | None:
    """The Status our source record gives the image (``incomplete``, ``writing``,
    ``complete``), or None where the record has gone."""
    ann = conn.query.findByQuery(Q_MAP_ANNOTATION, params(id=image.source.id))
    if ann is None:
        return None
    return {nv.name: nv.value for nv in ann.getMapValue()}.get("Status")


def gone(image_id: int, name: str) -> OmeroError:
    """The one line for an image deleted under the run that was writing it."""
    return OmeroError(f"image {image_id} ({name}) was deleted by another process while "
                      "this run was writing it; run the same command again")


def is_gone(conn: Connection, image_id: int) -> bool:
    """True where the server answers that the image does not exist (any other
    failure to ask: False)."""
    try:
        return conn.query.findByQuery(Q_IMAGE, params(iid=image_id)) is None
    except Exception:
        return False


def mark_writing(conn: Connection, image: NewImage, fingerprint: str) -> None:
    """A task has begun sending the image's pixels: a later attempt that finds this
    knows the pixels may be half-written (and OMERO opens them read-only)."""
    set_map(conn, image.source.id, _source_pairs(fingerprint, "writing", image.identity))


def mark_complete(conn: Connection, source: AnnotationRef, fingerprint: str,
                  identity: str = "") -> None:
    """The last step of an image: only now does a re-run treat it as done.  The time
    (UTC) is recorded, so a dry run can name the plane files changed since."""
    completed = datetime.now(timezone.utc).isoformat(timespec="seconds")
    set_map(conn, source.id, _source_pairs(fingerprint, "complete", identity, completed))


__all__ = ["NewImage", "WrittenImage", "create_image", "finish_rendering", "gone", "is_gone",
           "link_image", "mark_complete", "mark_writing", "set_image_metadata", "source_status",
           "write"]
