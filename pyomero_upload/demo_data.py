"""A small synthetic experiment in exactly the lab's layout.

``pyomero-upload demo-data DIR`` writes position folders of 16-bit PNG
planes (``demo_{T:06d}_{channel}_{Z:03d}.png``) showing yeast-like cells
that drift and grow over time and blur out of focus away from the middle
z-section, plus ``demo_Acq.txt`` and ``demo_log.txt`` in the format of the
real acquisition software (CRLF line endings).  Deterministic: the same
arguments give byte-identical files.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

import imagecodecs
import numpy as np

from .errors import InputError

CHANNELS = (("Brightfield", 30), ("DIC", 30), ("GFP", 60))
PREFIX = "demo"
INTERVAL_S = 300
Z_SPACING_UM = 0.6
START = datetime(2018, 9, 28, 17, 18, 14)


def _cells(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Cell centres (y, x), radii, and GFP brightness."""
    cells = np.empty((n, 4))
    cells[:, 0:2] = rng.uniform(0.1 * size, 0.9 * size, (n, 2))
    cells[:, 2] = rng.uniform(0.025, 0.045, n) * size
    cells[:, 3] = rng.uniform(0.3, 1.0, n)
    return cells


def _render(cells: np.ndarray, size: int, channel: str, focus: float, t: int,
            rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    drift = np.array([0.004 * size * t, 0.003 * size * t])
    blur = 1.0 + 2.5 * abs(focus)
    image = np.zeros((size, size), np.float32)
    for cy, cx, r, bright in cells:
        r_t = r * (1 + 0.08 * t)
        d = np.hypot(yy - cy - drift[0], xx - cx - drift[1]) / r_t
        if channel == "GFP":
            image += bright * np.exp(-((d / 0.45) ** 2) * (1 / blur))
        else:
            ring = np.exp(-(((d - 1.0) * r_t / blur) ** 2))
            image += (-0.6 if channel == "Brightfield" else 0.8) * ring
            if channel == "DIC":
                image += 0.4 * np.exp(-((d / 0.7) ** 2)) * np.sign(xx - cx - drift[1])
    if channel == "GFP":
        base, scale, noise = 300.0, 3500.0, 25.0
    else:
        base, scale, noise = 4000.0, 1500.0, 60.0
    image = base + scale * image + rng.normal(0, noise, image.shape)
    return np.clip(image, 0, 65535).astype(np.uint16)


def _acq_text(positions: list[str], timepoints: int, z_sections: int) -> str:
    lines = [
        "Channels:",
        "Channel name, Exposure time, Skip, Z sect., Start time, Camera mode, EM gain, Voltage",
    ]
    for name, ms in CHANNELS:
        mode, volt = (3, "4.000") if name == "GFP" else (2, "1.000")
        row = f"{name:>12},{ms:>14},    1,       1,          1,{mode:>12},     270,   {volt}"
        lines.append(row)
    lines += ["Z_sectioning:", "Sections,Spacing,PFSon?,AnyZ?,Drift,Method",
              f"{z_sections:>8},   {Z_SPACING_UM:.2f},     0,    1,    0,     2",
              "Time_settings:", f"1,{INTERVAL_S},{timepoints},{INTERVAL_S * timepoints}",
              "Points:",
              "Position name, X position, Y position, Z position, PFS offset, Group, "
              + ", ".join(f"{n:>10}" for n, _ in CHANNELS)]
    for i, name in enumerate(positions):
        x, y, z = 10846.5 - 367.2 * i, 10208.1 - 402.5 * (i % 2), 3431.425 - 0.55 * i
        group = i // 5 + 1
        exp = ", ".join(f"{ms:>10}" for _, ms in CHANNELS)
        lines.append(f"{name:>13},{x:>11.2f},{y:>11.2f},{z:>11.3f},     19.225,{group:>6}, {exp}")
    lines += ["", "Flow_control:", "Syringe pump details: 2 pumps.\r",
              "Pump states at beginning of experiment:\r",
              "Pump port, Diameter, Current rate, Direction, Running, Contents",
              "     COM5,    14.43,         4.00,       INF,       1, 2% glucose in SC",
              "     COM6,    14.43,         4.00,       INF,       0, No media",
              "", "Dynamic flow details:", "Number of pump changes:", "0",
              "Switching parameters:", "Infuse/withdraw volumes:", "50",
              "Infuse/withdraw rates:", "100", "Times:", "0", "Switched to:", "0",
              "Switched from:", "0", "Flow post switch:", "0.4", "4"]
    return "\r\n".join(lines) + "\r\n"


def _stamp(t: datetime) -> str:
    return t.strftime("%d-%b-%Y %H:%M:%S")


def _log_text(positions: list[str], timepoints: int) -> str:
    lines = [START.strftime("%d-%b-%Y"), "Microscope name is: Demoscope", "Experiment details:",
             "Aim: Demonstrate pyomero-upload on synthetic yeast-like cells",
             "Strain:", "Mig1-GFP", "Msn2-GFP", "Authors:", "Ada Lovelace", "Rosalind Franklin",
             "Comments:", "Synthetic data written by pyomero-upload demo-data.",
             "Microscope setup for used channels:"]
    for name, _ in CHANNELS:
        light = "470nm LED" if name == "GFP" else "White LED"
        lines += [f"{name}:", f'"{light}', '->(polarizer + prism + condenser)"]',
                  "->Filter block:[\"59022 exciter, 59022 dichroic, 535/50 emission filter]",
                  "->Emission filter wheel:[]"]
    lines += [r"Micromanager config file:C:\Users\Public\Microscope control\demo_config.txt",
              "Omero project:", "pyomero-upload demo", "Omero tags:", "demo,synthetic,",
              "PFS is locked", "", f"Experiment started at:{_stamp(START)}", "", "", ""]
    for t in range(timepoints):
        now = START + timedelta(seconds=INTERVAL_S * t)
        lines += [f"------Time point_{t + 1}------", ""]
        for p, name in enumerate(positions):
            lines += [f"Position:{p + 1},{name}", "", f"Position group:{p // 5 + 1}", ""]
            for channel, ms in CHANNELS:
                lines += [f"Channel:{channel} set at:{_stamp(now)}", "",
                          f"Exposure time:{ms}ms", ""]
                now += timedelta(seconds=3)
        lines += [f"Timepoint:{t + 1} completed at:{_stamp(now)}", "",
                  f"Time since start of timelapse:{(now - START).total_seconds():.4f}", ""]
    return "\r\n".join(lines) + "\r\n"


def write_demo_experiment(
    directory: str | os.PathLike[str],
    positions: int = 2,
    timepoints: int = 3,
    z_sections: int = 3,
    size: int = 256,
    seed: int = 0,
) -> Path:
    """Write the synthetic experiment into ``directory`` (created; must be empty)."""
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
            for channel, _ in CHANNELS:
                for z in range(z_sections):
                    focus = (z - focus_mid) / max(focus_mid, 1)
                    plane = _render(cells, size, channel, focus, t, rng)
                    path = folder / f"{PREFIX}_{t + 1:06d}_{channel}_{z + 1:03d}.png"
                    path.write_bytes(imagecodecs.png_encode(plane))
    (root / f"{PREFIX}_Acq.txt").write_bytes(_acq_text(names, timepoints, z_sections).encode())
    (root / f"{PREFIX}_log.txt").write_bytes(_log_text(names, timepoints).encode())
    return root
