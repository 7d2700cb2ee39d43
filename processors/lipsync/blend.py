"""Put the generated mouth back: a feathered lower-face mask, so no square shows.

The model returns the whole 96×96 face, but only its lower half was generated (the upper half
was given), and upscaling makes all of it softer than the frame. So only a soft ellipse over
the mouth and jaw is blended in; the mask falls to exactly zero well inside the face box, and
every pixel outside it keeps its original value bit for bit.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np


@lru_cache(maxsize=64)
def lower_face_mask(height: int, width: int) -> np.ndarray:
    """[h, w, 1] float32 weights in 0..1 for a face box of this size."""
    mask = np.zeros((height, width), np.float32)
    centre = (round(width * 0.5), round(height * 0.70))
    axes = (max(1, round(width * 0.30)), max(1, round(height * 0.22)))
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 1.0, thickness=-1)
    sigma = max(1.0, 0.05 * min(height, width))
    mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma, sigmaY=sigma)
    # Taper to zero over the outer 4 % so even a wide blur never reaches the box's edge.
    ramp_y = np.clip(np.minimum(np.arange(height), height - 1 - np.arange(height))
                     / max(1.0, 0.04 * height), 0, 1)  # fmt: skip
    ramp_x = np.clip(np.minimum(np.arange(width), width - 1 - np.arange(width))
                     / max(1.0, 0.04 * width), 0, 1)  # fmt: skip
    mask *= ramp_y[:, None].astype(np.float32) * ramp_x[None, :].astype(np.float32)
    mask[mask < 1.0 / 512] = 0.0  # would round to no change anyway; keep them exactly untouched
    mask.setflags(write=False)
    return mask[:, :, None]


def paste(frame: np.ndarray, face: np.ndarray, box: tuple[int, int, int, int]) -> None:
    """Blend `face` (RGB float 0..255, any size) into `frame` (uint8, in place) at `box`."""
    x1, y1, x2, y2 = box
    width, height = x2 - x1, y2 - y1
    resized = cv2.resize(face, (width, height), interpolation=cv2.INTER_LINEAR)
    region = frame[y1:y2, x1:x2].astype(np.float32)
    mask = lower_face_mask(height, width)
    blended = region + mask * (resized - region)
    frame[y1:y2, x1:x2] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
