"""A small synthetic experiment in exactly the lab's layout.

``pyomero-upload demo-data DIR`` writes position folders of 16-bit PNG
planes (``demo_{T:06d}_{channel}_{Z:03d}.png``) showing yeast-like cells
that drift and grow over time and blur out of focus away from the middle
z-section, plus ``demo_Acq.txt`` and ``demo_log.txt`` in the format of the
real acquisition software: the same sections and fields, CRLF line endings,
a Windows path, a machine log with a time stamp for every channel of every
position and timepoint.  Each PNG carries a ``tIME`` chunk (UTC) with the
moment its plane was taken, as the microscope's files do.  Deterministic:
the same arguments give byte-identical files.

The module's constants and :func:`stage_position` / :func:`plane_offset_s`
are what the files say, so tests can check a parse against them.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import imagecodecs
import numpy as np

from .errors import InputError


@dataclass(frozen=True)
class DemoChannel:
    """One channel as the Acq file's Channels table and the log's optics describe it."""

    name: str
    exposure_ms: int
    camera_mode: int
    voltage: float
    light: str  # the light source: "470nm LED" names the excitation wavelength
    light_path: str  # the lines between the light source and the filter block
    filter_block: str  # "535/50 emission filter" names the emission wavelength
    delay_s: int  # seconds after a position's first channel that this one is set
    excitation_nm: float | None = None
    emission_nm: float | None = None


_POLARIZER = '->(polarizer + prism + condenser)"]'
_GFP_BLOCK = "59022 exciter, 59022 dichroic, 535/50 emission filter"
CHANNELS = (
    DemoChannel("Brightfield", 30, 2, 1.0, "White LED", _POLARIZER, _GFP_BLOCK, 0),
    DemoChannel("DIC", 30, 2, 1.0, "White LED", _POLARIZER,
                "No exciter, No dichroic, Analyser", 3),
    DemoChannel("GFP", 60, 3, 4.0, "470nm LED",
                '->Combiner cube:[ No exciter in combiner cube,  495lp dichroic-> '
                '(425lp dichroic)"]', _GFP_BLOCK, 7, 470.0, 535.0),
)
#: GFP exposure (ms) at the positions of each group, cycling (the Points table
#: may differ from the Channels table, as in the lab's files).
GFP_EXPOSURE_BY_GROUP = (7, 60, 35)
PREFIX = "demo"
INTERVAL_S = 300
Z_SPACING_UM = 0.6
POSITION_PERIOD_S = 11  # seconds from one position's first channel to the next's
POSITIONS_PER_GROUP = 5
START = datetime(2018, 9, 28, 17, 18, 14)  # local time, as the log writes it
UTC_OFFSET = timedelta(hours=1)  # the PNG tIME chunks are UTC: START is 16:18:14 UTC
MICROSCOPE = "Demoscope"
AIM = "Demonstrate pyomero-upload on synthetic yeast-like cells"
STRAINS = ("Mig1-GFP", "Msn2-GFP")
AUTHORS = ("Ada Lovelace", "Rosalind Franklin")
COMMENTS = "Synthetic data written by pyomero-upload demo-data."
CONFIG_FILE = r"C:\Users\Public\Microscope control\Micromanager config files\Demoscope.txt"
PROJECT = "pyomero-upload demo"
TAGS = (START.strftime("%d-%b-%Y"), "synthetic")
FLOW_POST_SWITCH = (0.4, 4)
PUMPS = (("COM5", "14.43", "4.00", "INF", 1, "2% glucose in SC"),
         ("COM6", "14.43", "4.00", "INF", 0, "No media"))


def stage_position(index: int) -> tuple[float, float, float, int, dict[str, int]]:
    """(x, y, z in µm, group, exposure ms by channel) of the 0-based ``index``-th position,
    as the Acq file's Points table gives them."""
    group = index // POSITIONS_PER_GROUP + 1
    exposures = {c.name: c.exposure_ms for c in CHANNELS}
    exposures["GFP"] = GFP_EXPOSURE_BY_GROUP[(group - 1) % len(GFP_EXPOSURE_BY_GROUP)]
    x = round(10846.5 - 367.2 * (index // 2), 2)
    y = round(10208.1 - 402.5 * (index % 2), 2)
    z = round(3431.425 - 0.55 * index, 3)
    return x, y, z, group, exposures


def plane_offset_s(t_index: int, position_index: int, channel_index: int) -> int:
    """Seconds from :data:`START` to when the log says the channel was set at a
    position and timepoint (all 0-based)."""
    return (INTERVAL_S * t_index + 1 + POSITION_PERIOD_S * position_index
            + CHANNELS[channel_index].delay_s)


def _cells(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Cell centres (y, x), radii, and GFP brightness."""
    cells = np.empty((n, 4))
    cells[:, 0:2] = rng.uniform(0.1 * size, 0.9 * size, (n, 2))
    cells[:, 2] = rng.uniform(0.025, 0.045, n) * size
    cells[:, 3] = rng.uniform(0.3, 1.0, n)
    return cells


def _render(cells: np.ndarray, size: int, channel: str, focus: float, t: int,
            rng: np.random.Generator) -> np.ndarray:
    drift = np.array([0.004 * size * t, 0.003 * size * t])
    blur = 1.0 + 2.5 * abs(focus)
    image = np.zeros((size, size), np.float32)
    for cy, cx, r, bright in cells:
        r_t = r * (1 + 0.08 * t)
        # Each cell only within a window around it: its signal is ~0 further out.
        reach = int(r_t * (2.5 + blur)) + 2
        y0, x0 = max(int(cy + drift[0]) - reach, 0), max(int(cx + drift[1]) - reach, 0)
        y1, x1 = min(int(cy + drift[0]) + reach, size), min(int(cx + drift[1]) + reach, size)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        d = np.hypot(yy - cy - drift[0], xx - cx - drift[1]) / r_t
        if channel == "GFP":
            patch = bright * np.exp(-((d / 0.45) ** 2) * (1 / blur))
        else:
            ring = np.exp(-(((d - 1.0) * r_t / blur) ** 2))
            patch = (-0.6 if channel == "Brightfield" else 0.8) * ring
            if channel == "DIC":
                patch += 0.4 * np.exp(-((d / 0.7) ** 2)) * np.sign(xx - cx - drift[1])
        image[y0:y1, x0:x1] += patch
    if channel == "GFP":
        base, scale, noise = 300.0, 3500.0, 25.0
    else:
        base, scale, noise = 4000.0, 1500.0, 60.0
    counts = base + scale * image + rng.normal(0, noise, image.shape)
    return np.clip(counts, 0, 65535).astype(np.uint16)


def _png(plane: np.ndarray, taken: datetime) -> bytes:
    """The plane as PNG with a tIME chunk (UTC) right after the header, as the microscope
    writes them."""
    data = bytes(imagecodecs.png_encode(plane, level=1))  # fast; hardly larger on noisy planes
    ihdr_end = 8 + 8 + 13 + 4  # signature, IHDR length+type, IHDR data, CRC
    body = b"tIME" + struct.pack(">HBBBBB", taken.year, taken.month, taken.day,
                                 taken.hour, taken.minute, taken.second)
    chunk = struct.pack(">I", 7) + body + struct.pack(">I", zlib.crc32(body))
    return data[:ihdr_end] + chunk + data[ihdr_end:]


def _acq_text(positions: list[str], timepoints: int, z_sections: int) -> str:
    lines = [
        "Channels:",
        "Channel name, Exposure time, Skip, Z sect., Start time, Camera mode, EM gain, Voltage",
    ]
    for c in CHANNELS:
        lines.append(f"{c.name:>12},{c.exposure_ms:>14},    1,       1,          1,"
                     f"{c.camera_mode:>12},     270,   {c.voltage:.3f}")
    lines += ["Z_sectioning:", "Sections,Spacing,PFSon?,AnyZ?,Drift,Method",
              f"{z_sections:>8},   {Z_SPACING_UM:.2f},     0,    1,    0,     2",
              "Time_settings:", f"1,{INTERVAL_S},{timepoints},{INTERVAL_S * timepoints}",
              "Points:",
              "Position name, X position, Y position, Z position, PFS offset, Group, "
              + ", ".join(f"{c.name:>10}" for c in CHANNELS)]
    for i, name in enumerate(positions):
        x, y, z, group, exposures = stage_position(i)
        exp = ", ".join(f"{exposures[c.name]:>10}" for c in CHANNELS)
        lines.append(f"{name:>13},{x:>11.2f},{y:>11.2f},{z:>11.3f},     19.225,{group:>6}, {exp}")
    lines += ["", "Flow_control:", f"Syringe pump details: {len(PUMPS)} pumps.\r",
              "Pump states at beginning of experiment:\r",
              "Pump port, Diameter, Current rate, Direction, Running, Contents"]
    lines += [f"{port:>9},{dia:>9},{rate:>13},{way:>10},{run:>8}, {what}"
              for port, dia, rate, way, run, what in PUMPS]
    lines += ["", "Dynamic flow details:", "Number of pump changes:", "0",
              "Switching parameters:", "Infuse/withdraw volumes:", "50",
              "Infuse/withdraw rates:", "100", "Times:", "0", "Switched to:", "0",
              "Switched from:", "0", "Flow post switch:", *map(str, FLOW_POST_SWITCH)]
    return "\r\n".join(lines) + "\r\n"


def _stamp(t: datetime) -> str:
    return t.strftime("%d-%b-%Y %H:%M:%S")


def _log_text(positions: list[str], timepoints: int) -> str:
    lines = [START.strftime("%d-%b-%Y"), f"Microscope name is: {MICROSCOPE}",
             "Experiment details:", f"Aim: {AIM}", "Strain:", *STRAINS, "Authors:", *AUTHORS,
             "Comments:", COMMENTS, "Microscope setup for used channels:"]
    for c in CHANNELS:
        lines += [f"{c.name}:", f'"{c.light}', c.light_path,
                  f'->Filter block:["{c.filter_block}]', "->Emission filter wheel:[]"]
    lines += [f"Micromanager config file:{CONFIG_FILE}", "Omero project:", PROJECT,
              "Omero tags:", ",".join(TAGS) + ",", "PFS is locked", "",
              f"Experiment started at:{_stamp(START)}", "", "", ""]
    for t in range(timepoints):
        lines += [f"------Time point_{t + 1}------", ""]
        for p, name in enumerate(positions):
            x, y, z, group, exposures = stage_position(p)
            lines += [f"Position:{p + 1},{name}", "", f"Position group:{group}", "",
                      f"Moved to X:{x:g}, Y:{y:g}", ""]
            for ci, c in enumerate(CHANNELS):
                now = START + timedelta(seconds=plane_offset_s(t, p, ci))
                lines += [f"Channel configuration set to: {c.name}: {_stamp(now)}", "",
                          f"Channel:{c.name} set at:{_stamp(now)}", "",
                          f"Exposure time:{exposures[c.name]}ms", "",
                          f"captureStack (Demoscope). Z drive position before stack capture "
                          f"is: {z - 1:.4f}. {_stamp(now)}", ""]
        done = START + timedelta(seconds=plane_offset_s(t, len(positions) - 1, len(CHANNELS)
                                                       - 1) + 4)
        lines += [f"Timepoint:{t + 1} completed at:{_stamp(done)}", "",
                  f"Time since start of timelapse:{(done - START).total_seconds():.4f}", "",
                  "PFS is locked", ""]
    return "\r\n".join(lines) + "\r\n"


def write_demo_experiment(
    directory: str | os.PathLike[str],
    positions: int = 2,
    timepoints: int = 3,
    z_sections: int = 3,
    size: int = 256,
    seed: int = 0,
    prefix: str = PREFIX,
) -> Path:
    """Write the synthetic experiment into ``directory`` (created; must be empty).

    Planes are ``{prefix}_{T:06d}_{channel}_{Z:03d}.png`` (T and Z 1-based);
    the lab files ``{prefix}_Acq.txt`` and ``{prefix}_log.txt``.
    """
    root = Path(directory)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise InputError(root, "already exists and is not an empty folder")
    root.mkdir(parents=True, exist_ok=True)
    names = [f"pos{i + 1:03d}" for i in range(positions)]
    focus_mid = (z_sections - 1) / 2
    for p, name in enumerate(names):
        folder = root / name
        folder.mkdir()
        rng = np.random.default_rng([seed, p])
        cells = _cells(rng, 12, size)
        for t in range(timepoints):
            for ci, c in enumerate(CHANNELS):
                taken = START - UTC_OFFSET + timedelta(seconds=plane_offset_s(t, p, ci) + 1)
                for z in range(z_sections):
                    focus = (z - focus_mid) / max(focus_mid, 1)
                    plane = _render(cells, size, c.name, focus, t, rng)
                    path = folder / f"{prefix}_{t + 1:06d}_{c.name}_{z + 1:03d}.png"
                    path.write_bytes(_png(plane, taken + timedelta(seconds=z // 2)))
    (root / f"{prefix}_Acq.txt").write_bytes(_acq_text(names, timepoints, z_sections).encode())
    (root / f"{prefix}_log.txt").write_bytes(_log_text(names, timepoints).encode())
    return root
