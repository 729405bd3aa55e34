"""Pyramid sub-resolutions, as both writers make them: each half the one before.

A sub-resolution is the 2 x 2 mean of the level above it (odd last row or
column dropped), in the pixel type.  Only planes larger than
:data:`PYRAMID_THRESHOLD` on a side get them unless asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

#: Planes larger than this on either side get pyramid sub-resolutions.
PYRAMID_THRESHOLD = 4096
#: Sub-resolutions stop once the larger side is at most this.
PYRAMID_MIN_SIZE = 256


def pyramid_shapes(shape: tuple[int, int], pyramid: bool | None) -> list[tuple[int, int]]:
    """Shapes (Y, X) of the sub-resolutions of a plane of ``shape``, each half the previous.

    Args:
        shape: The full-resolution plane's (Y, X).
        pyramid: True or False to force them on or off; None for automatic
            (only planes beyond :data:`PYRAMID_THRESHOLD` get them).

    Returns:
        The sub-resolutions' shapes, largest first; empty for none.
    """
    y, x = shape
    if pyramid is False or (pyramid is None and max(y, x) <= PYRAMID_THRESHOLD):
        return []
    shapes = []
    while max(y, x) > PYRAMID_MIN_SIZE and min(y, x) >= 2:
        y, x = y // 2, x // 2
        shapes.append((y, x))
    return shapes


def downsample(plane: np.ndarray) -> np.ndarray:
    """Halve both sides by 2 x 2 averaging (odd edges dropped), in the same dtype.

    Integer means are rounded to the nearest value.
    """
    import numpy as np

    y, x = plane.shape[0] // 2 * 2, plane.shape[1] // 2 * 2
    blocks = plane[:y, :x].reshape(y // 2, 2, x // 2, 2)
    mean = blocks.mean(axis=(1, 3), dtype=np.float64)
    if np.issubdtype(plane.dtype, np.integer):
        mean = np.rint(mean)
    return mean.astype(plane.dtype)
