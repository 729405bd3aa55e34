"""The double's RenderingEngine: planes rendered from the pixels it holds, with OMERO's
default settings and rendering rules, for OMERO.web's ``render_image``, the viewer's
channel settings and the right-hand panel.

Defaults follow omero-server src/main/java/ome/logic/RenderingSettingsImpl.java
resetDefaults: default Z the middle section, T 0; the RGB model for 2 to 9 channels,
greyscale otherwise; the first three channels active; each channel's window its
StatsInfo's global min/max (``IPixels.setChannelGlobalMinMax``), else the pixels type's
range; the linear family, coefficient 1.0.  Rendering follows omero-renderer
(src/main/java/omeis/providers/re/): a channel's values are mapped linearly from its
window onto 0..255 (``quantum/Quantization_8_16_bit.java``, values outside the window
clipped), then coloured and added up, channel by channel, clipped at 255
(``HSBStrategy.java``; ``GreyScaleStrategy.java`` renders the first active channel
grey); the reverse-intensity codomain map turns v into 255 - v; the JPEG quality is the
compression level (``RenderingBean.renderCompressed``, default 0.85).  Not modelled:
other families than linear (an error), lookup tables (an error), overlays.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import omero
import omero.api
import omero.model as M
import omero.romio
from omero.rtypes import rint, rlong, rstring, unwrap

from ._base import Stateful, implements
from .model import PixelData

MODELS = ("rgb", "greyscale")  # omero-model RenderingModel values (ids in this order)
FAMILIES = ("linear", "polynomial", "exponential", "logarithmic")
MAX_CHANNELS = 10  # omeis/providers/re/Renderer.java MAX_CHANNELS
RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767),
          "uint16": (0, 65535), "int32": (-2**31, 2**31 - 1), "uint32": (0, 2**32 - 1),
          "bit": (0, 1), "float": (-3.4028234663852886e38, 3.4028234663852886e38),
          "double": (-1.7976931348623157e308, 1.7976931348623157e308)}


def _enum(cls: type, values: tuple[str, ...], value: str) -> Any:
    obj = cls()
    obj.setId(rlong(values.index(value) + 1))
    obj.setValue(rstring(value))
    return obj


def _enum_value(obj: Any, values: tuple[str, ...]) -> str:
    value = unwrap(getattr(obj, "_value", None))
    if value is None and obj is not None and unwrap(obj.id) is not None:
        value = values[int(unwrap(obj.id)) - 1] if 0 < unwrap(obj.id) <= len(values) else None
    if value not in values:
        raise omero.ApiUsageException(message=f"no such enumeration value: {value!r}")
    return value


def _color(i: int) -> list[int]:
    # ColorsFactory, for channels without emission data: red, green, blue by index,
    # then white
    return [[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255]][i] if i < 3 else \
        [255, 255, 255, 255]


@implements(omero.api.RenderingEngine)
class RenderingEngine(Stateful):
    pid: int = -1  # none yet
    pixels: Any = None
    settings: dict[str, Any] | None = None
    compression = 0.85
    level = 0

    # --- what is rendered -------------------------------------------------------------
    def _need_pixels(self) -> Any:
        if self.pixels is None:
            raise omero.ApiUsageException(message="Pixels not set: call lookupPixels first")
        return self.pixels

    def _need(self) -> dict[str, Any]:
        if self.settings is None:
            raise omero.ApiUsageException(message=(
                "The rendering engine is not ready: call lookupRenderingDef (or "
                "loadRenderingDef) and load first"))
        return self.settings

    def _data(self) -> PixelData:
        d = self.db.pixel_data.get(self.pid)
        if d is None or not d.exists:  # PixelsService._getPixelBuffer in read mode
            raise omero.LockTimeout(message="Import in progress.", backOff=15000, seconds=0)
        return d

    def _channel(self, w: int) -> dict[str, Any]:
        chans = self._need()["channels"]
        if not 0 <= w < len(chans):
            raise omero.ValidationException(message=f"no channel {w}: the image has "
                                                    f"{len(chans)}")
        return chans[w]

    def lookupPixels(self, pid, current):
        q = ("select p from Pixels p join fetch p.pixelsType join fetch p.channels c "
             "join fetch c.logicalChannel left outer join fetch c.statsInfo "
             "where p.id = :id")
        found = self.runner(current).run(q, omero.sys.ParametersI().addId(pid))
        if not found:
            raise omero.ValidationException(message=f"Cannot find pixels id={pid}")
        self.pid, self.pixels, self.settings = pid, found[0], None

    def _key(self) -> tuple[int, int] | None:
        """The (pixels, user) whose settings apply: the caller's, else the owner's
        (RenderingBean.lookupRenderingDef)."""
        px = self._need_pixels()
        for user in (self.session.user_id, unwrap(px.details.owner.id)):
            if (self.pid, user) in self.db.rendering:
                return self.pid, user
        return None

    def lookupRenderingDef(self, pid, current):
        if pid != self.pid:
            self.lookupPixels(pid, current)
        key = self._key()
        if key is None:
            return False
        self._rdef_id(key)
        return True

    def _rdef_id(self, key: tuple[int, int]) -> int:
        ids = self.db.rendering_def_ids
        if key not in ids:
            ids[key] = next(self.db.rendering_def_seq)
        return ids[key]

    def getRenderingDefId(self, current):
        key = self._key()
        if key is None:
            raise omero.ApiUsageException(message="No rendering definition for these pixels")
        return self._rdef_id(key)

    def loadRenderingDef(self, rdid, current):
        ids = self.db.rendering_def_ids
        if (self.pid, self.session.user_id) in ids and ids[(self.pid,
                                                            self.session.user_id)] == rdid:
            return
        if rdid not in ids.values():
            raise omero.ValidationException(message=f"No rendering definition {rdid}")

    def load(self, current):
        key = self._key()
        if key is None:
            raise omero.ResourceError(message="RenderingDef not set: call lookupRenderingDef")
        stored = self.db.rendering_defs.get(key)
        self.settings = _copy(stored) if stored is not None else self._defaults()

    def _defaults(self) -> dict[str, Any]:
        px = self._need_pixels()
        ptype = unwrap(px.pixelsType.value)
        lo, hi = RANGES.get(ptype, (0, 255))
        chans = []
        for i, ch in enumerate(px.copyChannels()):
            stats = ch.getStatsInfo()
            start, end = (lo, hi) if stats is None or not stats.isLoaded() else (
                unwrap(stats.globalMin), unwrap(stats.globalMax))
            if abs(end - start) < 1e-12:
                start, end = lo, hi
            chans.append({"active": i < 3, "start": float(start), "end": float(end),
                          "rgba": _color(i), "family": "linear", "coefficient": 1.0,
                          "noise": False, "lut": None, "reverse": False})
        size_c = len(chans)
        return {"z": unwrap(px.sizeZ) // 2, "t": 0,
                "model": "rgb" if 1 < size_c < MAX_CHANNELS else "greyscale",
                "channels": chans}

    def resetDefaultSettings(self, save, current):
        self._need_pixels()
        self._data()  # the defaults are computed from the pixels (RenderingSettingsImpl)
        self.settings = self._defaults()
        if save:
            self._save(self.settings)
        return self._rdef_id((self.pid, self.session.user_id)) if save else -1

    def _save(self, settings: dict[str, Any]) -> None:
        key = (self.pid, self.session.user_id)
        self.db.rendering.add(key)
        self.db.rendering_defs[key] = _copy(settings)

    def saveCurrentSettings(self, current):
        self._save(self._need())
        return None

    def saveAsNewSettings(self, current):
        self._save(self._need())
        return self._rdef_id((self.pid, self.session.user_id))

    # --- settings ---------------------------------------------------------------------
    def getPixels(self, current):
        return self._need_pixels()

    def getAvailableModels(self, current):
        return [_enum(M.RenderingModelI, MODELS, v) for v in MODELS]

    def getAvailableFamilies(self, current):
        return [_enum(M.FamilyI, FAMILIES, v) for v in FAMILIES]

    def getModel(self, current):
        return _enum(M.RenderingModelI, MODELS, self._need()["model"])

    def setModel(self, model, current):
        self._need()["model"] = _enum_value(model, MODELS)

    def getDefaultZ(self, current):
        return self._need()["z"]

    def getDefaultT(self, current):
        return self._need()["t"]

    def setDefaultZ(self, z, current):
        if not 0 <= z < unwrap(self._need_pixels().sizeZ):
            raise omero.ValidationException(message=f"z {z} outside the image")
        self._need()["z"] = z

    def setDefaultT(self, t, current):
        if not 0 <= t < unwrap(self._need_pixels().sizeT):
            raise omero.ValidationException(message=f"t {t} outside the image")
        self._need()["t"] = t

    def setChannelWindow(self, w, start, end, current):
        ch = self._channel(w)
        ch["start"], ch["end"] = float(start), float(end)

    def getChannelWindowStart(self, w, current):
        return self._channel(w)["start"]

    def getChannelWindowEnd(self, w, current):
        return self._channel(w)["end"]

    def setRGBA(self, w, red, green, blue, alpha, current):
        self._channel(w)["rgba"] = [red, green, blue, alpha]

    def getRGBA(self, w, current):
        return list(self._channel(w)["rgba"])

    def setActive(self, w, active, current):
        self._channel(w)["active"] = bool(active)

    def isActive(self, w, current):
        return self._channel(w)["active"]

    def setChannelLookupTable(self, w, lut, current):
        self._channel(w)["lut"] = lut or None

    def getChannelLookupTable(self, w, current):
        return self._channel(w)["lut"] or ""

    def setQuantizationMap(self, w, family, coefficient, noise, current):
        ch = self._channel(w)
        ch["family"] = _enum_value(family, FAMILIES)
        ch["coefficient"], ch["noise"] = float(coefficient), bool(noise)

    def getChannelFamily(self, w, current):
        return _enum(M.FamilyI, FAMILIES, self._channel(w)["family"])

    def getChannelCurveCoefficient(self, w, current):
        return self._channel(w)["coefficient"]

    def getChannelNoiseReduction(self, w, current):
        return self._channel(w)["noise"]

    def setQuantumStrategy(self, bits, current):
        if bits != 255:
            raise omero.ApiUsageException(message=(
                "the OMERO double renders with OMERO's default bit resolution (255) only"))

    def setCodomainInterval(self, start, end, current):
        if (start, end) != (0, 255):
            raise omero.ApiUsageException(message=(
                "the OMERO double renders onto OMERO's default codomain (0..255) only"))

    def getQuantumDef(self, current):
        q = M.QuantumDefI()
        q.setCdStart(rint(0))
        q.setCdEnd(rint(255))
        q.setBitResolution(rint(255))
        return q

    def getCodomainMapContext(self, w, current):
        return [M.ReverseIntensityContextI()] if self._channel(w)["reverse"] else []

    def addCodomainMapToChannel(self, ctx, w, current):
        self._codomain(ctx, w, True)

    def removeCodomainMapFromChannel(self, ctx, w, current):
        self._codomain(ctx, w, False)

    def _codomain(self, ctx, w, on: bool) -> None:
        # the romio context names the map (omero.romio.ReverseIntensityMapContext); the
        # channel then lists it as the model's ReverseIntensityContext
        if not isinstance(ctx, omero.romio.ReverseIntensityMapContext):
            raise omero.ApiUsageException(message=(
                f"the OMERO double renders the reverse-intensity map only, not "
                f"{type(ctx).__name__}"))
        self._channel(w)["reverse"] = on

    def setCompressionLevel(self, level, current):
        if not 0 < level <= 1:  # RenderingBean.setCompressionLevel
            raise omero.ApiUsageException(message=f"compression level {level} not in (0, 1]")
        self.compression = float(level)

    def getCompressionLevel(self, current):
        return self.compression

    def isPixelsTypeSigned(self, current):
        return unwrap(self._need_pixels().pixelsType.value).startswith("int") or unwrap(
            self._need_pixels().pixelsType.value) in ("float", "double")

    def getPixelsTypeLowerBound(self, w, current):
        return float(RANGES[unwrap(self._need_pixels().pixelsType.value)][0])

    def getPixelsTypeUpperBound(self, w, current):
        return float(RANGES[unwrap(self._need_pixels().pixelsType.value)][1])

    # the PyramidService part: the double keeps every image at one resolution
    def requiresPixelsPyramid(self, current):
        return self._data().pyramid

    def getResolutionLevels(self, current):
        return 1

    def getResolutionDescriptions(self, current):
        d = self._data()
        return [omero.api.ResolutionDescription(d.size_x, d.size_y)]

    def getResolutionLevel(self, current):
        return 0

    def setResolutionLevel(self, level, current):
        if level != 0:
            raise omero.ApiUsageException(message=(
                f"resolution level {level}: the OMERO double holds one resolution (0)"))

    def getTileSize(self, current):
        d = self._data()
        return [d.size_x, d.size_y]

    # --- rendering --------------------------------------------------------------------
    def _plane(self, d: PixelData, z: int, c: int, t: int) -> np.ndarray:
        dtype = {"float": ">f4", "double": ">f8"}.get(
            d.pixels_type, f">{'u' if d.pixels_type.startswith('u') else 'i'}{d.byte_width}")
        return np.frombuffer(d.plane(z, c, t), dtype).reshape(d.size_y, d.size_x)

    def _rgb(self, planes) -> np.ndarray:
        """planes: callable(c) -> 2-D array of channel c; the rendered RGB (uint8)."""
        s = self._need()
        active = [(i, ch) for i, ch in enumerate(s["channels"]) if ch["active"]]
        for _, ch in active:
            if ch["family"] != "linear":
                raise omero.ApiUsageException(message=(
                    f"the OMERO double renders the linear family only, not {ch['family']}"))
            if ch["lut"]:
                raise omero.ApiUsageException(message=(
                    f"the OMERO double does not render lookup tables ({ch['lut']})"))
        if s["model"] == "greyscale":
            active = active[:1]
        out = None
        for i, ch in active:
            plane = planes(i).astype(np.float64)
            span = ch["end"] - ch["start"]
            v = np.clip((plane - ch["start"]) / span * 255 if span else
                        np.where(plane >= ch["end"], 255.0, 0.0), 0, 255)
            v = np.floor(v + 0.5)
            if ch["reverse"]:
                v = 255 - v
            if out is None:
                out = np.zeros(v.shape + (3,))
            if s["model"] == "greyscale":
                out[...] = v[..., None]
            else:
                r, g, b, a = ch["rgba"]
                out += v[..., None] * (np.array([r, g, b]) / 255.0) * (a / 255.0)
        if out is None:  # no active channel: black
            d = self._data()
            out = np.zeros((d.size_y, d.size_x, 3))
        return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)

    def _region(self, pd, rgb: np.ndarray) -> np.ndarray:
        if pd.slice != omero.romio.XY:
            raise omero.ApiUsageException(message="the OMERO double renders XY planes only")
        r = pd.region
        if r is not None and (r.width or r.height):
            h, w = rgb.shape[:2]
            if r.x < 0 or r.y < 0 or r.x + r.width > w or r.y + r.height > h:
                raise omero.ValidationException(message=(
                    f"region {r.x},{r.y} {r.width}x{r.height} outside the plane"))
            rgb = rgb[r.y:r.y + r.height, r.x:r.x + r.width]
        if pd.stride:
            rgb = rgb[::pd.stride + 1, ::pd.stride + 1]
        return rgb

    def _render(self, pd) -> np.ndarray:
        d = self._data()
        if not (0 <= pd.z < d.size_z and 0 <= pd.t < d.size_t):
            raise omero.ValidationException(message=f"z={pd.z} t={pd.t} outside the image")
        return self._region(pd, self._rgb(lambda c: self._plane(d, pd.z, c, pd.t)))

    def _jpeg(self, rgb: np.ndarray) -> bytes:
        from PIL import Image

        out = io.BytesIO()
        Image.fromarray(rgb, "RGB").save(out, "JPEG", quality=int(round(self.compression
                                                                       * 100)))
        return out.getvalue()

    def renderCompressed(self, pd, current):
        return self._jpeg(self._render(pd))

    def renderAsPackedInt(self, pd, current):
        rgb = self._render(pd).astype(np.int64)
        packed = (255 << 24) | (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        return [int(v) - (1 << 32) if v >= (1 << 31) else int(v) for v in packed.ravel()]

    def _projected(self, algorithm, t, stepping, start, end) -> np.ndarray:
        d = self._data()
        if not (0 <= start <= end < d.size_z) or stepping < 1:
            raise omero.ValidationException(message=(
                f"projection range {start}..{end} step {stepping} outside the image"))
        kinds = {omero.constants.projection.ProjectionType.MAXIMUMINTENSITY: np.max,
                 omero.constants.projection.ProjectionType.MEANINTENSITY: np.mean,
                 omero.constants.projection.ProjectionType.SUMINTENSITY: np.sum}

        def planes(c):
            stack = np.stack([self._plane(d, z, c, t)
                              for z in range(start, end + 1, stepping)])
            return kinds[algorithm](stack.astype(np.float64), axis=0)

        return self._rgb(planes)

    def renderProjectedCompressed(self, algorithm, t, stepping, start, end, current):
        return self._jpeg(self._projected(algorithm, t, stepping, start, end))


def _copy(settings: dict[str, Any]) -> dict[str, Any]:
    return {**settings, "channels": [dict(ch, rgba=list(ch["rgba"]))
                                     for ch in settings["channels"]]}

