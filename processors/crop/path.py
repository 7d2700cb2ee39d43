"""The virtual camera: where the crop window sits in each frame.

The window centre at frame i is a Gaussian-weighted mean of the subject centres detected in
frames [i - r, i + r]. Because it depends only on that bounded window of detections, a chunk
that decodes r frames of pre- and post-roll computes exactly the path a single task would, so
chunk seams are invisible. Frames with no detection in their window fall back to the centre.
"""

from __future__ import annotations

import math

import numpy as np


def gaussian_weights(radius: int) -> np.ndarray:
    if radius == 0:
        return np.ones(1)
    sigma = max(radius / 2.0, 1e-6)
    offsets = np.arange(-radius, radius + 1)
    return np.exp(-0.5 * (offsets / sigma) ** 2)


def window_size(width: int, height: int, aspect: tuple[int, int]) -> tuple[int, int]:
    """The largest window of the target aspect inside the frame, even in both dimensions."""
    aw, ah = aspect
    if width * ah >= height * aw:  # frame is wider than the target: full height
        h = height
        w = height * aw / ah
    else:
        w = width
        h = width * ah / aw
    even = lambda v, limit: max(2, min(limit - limit % 2, math.floor(v / 2) * 2))  # noqa: E731
    return even(w, width), even(h, height)


def smoothed_centre(
    centres: dict[int, tuple[float, float] | None],
    index: int,
    radius: int,
    weights: np.ndarray,
    fallback: tuple[float, float],
) -> tuple[float, float]:
    total = 0.0
    sx = sy = 0.0
    for offset in range(-radius, radius + 1):
        centre = centres.get(index + offset)
        if centre is None:
            continue
        w = float(weights[offset + radius])
        total += w
        sx += w * centre[0]
        sy += w * centre[1]
    if total == 0.0:
        return fallback
    return sx / total, sy / total


def place_window(
    centre: tuple[float, float], size: tuple[int, int], frame: tuple[int, int]
) -> tuple[int, int]:
    """Top-left corner of a window centred on `centre`, kept inside the frame."""
    (cx, cy), (w, h), (fw, fh) = centre, size, frame
    x0 = min(max(0, round(cx - w / 2)), fw - w)
    y0 = min(max(0, round(cy - h / 2)), fh - h)
    return int(x0), int(y0)
