"""Paste a swapped face crop back into its frame, touching only the face's box.

insightface's own paste-back warps the crop, a white mask and a difference image to the full
frame, erodes and blurs the full-frame mask, and blends every pixel of the frame — for a 1080p
frame that is several full-frame passes per face. Here the feathered mask is built once per
crop size in crop coordinates (its erosion and blur are a fixed fraction of the crop, as
insightface's are of the face), and the crop and mask are warped with the inverse affine into
the face's bounding box only; the blend runs over that box. Pixels outside it are never read
or written, and inside it a zero mask leaves the original byte for byte.
"""

from __future__ import annotations

import math
from functools import cache

import cv2
import numpy as np

from processors.faces import template

# insightface erodes its mask by ~1/10 of the face's size (a k×k kernel takes ~k/2 off each side)
# and blurs it with a Gaussian whose sigma is ~0.3·(size/20 − 1) + 0.8 frame pixels; in crop
# pixels both are nearly constant fractions of the crop.
EROSION = 0.05
SIGMA = 0.017


@cache
def feather_mask(size: int, mouth: bool = False) -> np.ndarray:
    """A float32 [size, size] blend weight in crop coordinates; read-only, shared."""
    inset = round(size * EROSION)
    mask = np.zeros((size, size), np.float32)
    mask[inset : size - inset, inset : size - inset] = 1.0
    mask = cv2.GaussianBlur(mask, (0, 0), size * SIGMA)
    if mouth:
        mask *= 1.0 - mouth_mask(size)
    mask.setflags(write=False)
    return mask


@cache
def mouth_mask(size: int) -> np.ndarray:
    """A feathered ellipse over the aligned crop's mouth (where the template puts it)."""
    points = template(size)
    left, right = points[3], points[4]
    centre = (left + right) / 2 + np.array([0, size * 0.02])
    half_width = np.linalg.norm(right - left) * 0.75
    area = np.zeros((size, size), np.float32)
    cv2.ellipse(
        area,
        (round(float(centre[0])), round(float(centre[1]))),
        (round(float(half_width)), round(size * 0.1)),
        0, 0, 360, 1.0, -1,
    )  # fmt: skip
    return cv2.GaussianBlur(area, (0, 0), size * 0.03)


def box_of(matrix: np.ndarray, size: int, width: int, height: int) -> tuple[int, int, int, int]:
    """The frame box (x0, y0, x1, y1) the crop covers once warped back, clipped to the frame."""
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64)
    xy = corners @ inverse.T
    x0 = max(0, math.floor(xy[:, 0].min()))
    y0 = max(0, math.floor(xy[:, 1].min()))
    x1 = min(width, math.ceil(xy[:, 0].max()) + 1)
    y1 = min(height, math.ceil(xy[:, 1].max()) + 1)
    return x0, y0, x1, y1


def paste_back(
    frame: np.ndarray,
    crop: np.ndarray,
    matrix: np.ndarray,
    *,
    mouth: bool = False,
    opacity: float = 1.0,
    mask: np.ndarray | None = None,
) -> tuple[int, int, int, int] | None:
    """Blend `crop` (the swapped, aligned face; `matrix` maps frame -> crop) into `frame` in
    place. `mask`: a float32 [size, size] weight in crop coordinates (occlusion, regions),
    combined with the feathered box by the minimum. Returns the box it touched, or None when
    the face lies outside the frame."""
    size = crop.shape[0]
    height, width = frame.shape[:2]
    x0, y0, x1, y1 = box_of(matrix, size, width, height)
    if x1 <= x0 or y1 <= y0:
        return None
    inverse = cv2.invertAffineTransform(matrix)
    inverse[:, 2] -= (x0, y0)  # warp straight into the box, not the whole frame
    box_size = (x1 - x0, y1 - y0)
    face = cv2.warpAffine(crop, inverse, box_size, flags=cv2.INTER_LINEAR, borderValue=0)
    blend = feather_mask(size, mouth)
    if mask is not None:
        blend = np.minimum(blend, mask)
    weight = cv2.warpAffine(blend, inverse, box_size, flags=cv2.INTER_LINEAR, borderValue=0)
    if opacity < 1.0:
        weight *= opacity
    region = frame[y0:y1, x0:x1]
    # One pass in C, rounding to nearest; where the weight is 0 it returns the original exactly.
    region[...] = cv2.blendLinear(face, np.ascontiguousarray(region), weight, 1.0 - weight)
    return x0, y0, x1, y1
