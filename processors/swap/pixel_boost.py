"""Pixel boost: swap a face crop larger than the swap model's input, as FaceFusion does.

The aligned crop is taken at k times the model's side (256 or 512 for a 128 model) and split
into k×k sub-images, sub-image (a, b) holding every k-th pixel from row a and column b on
(a pixel shuffle, not tiles: each sub-image is the whole face at the model's resolution,
shifted by a fraction of a pixel). Each is swapped on its own and the results are interleaved
back into a k-times crop, so the face pasted back carries k times the detail along each side
of what one 128 px swap gives. It costs k² swaps per face.
"""

from __future__ import annotations

import numpy as np


def split(crop: np.ndarray, k: int) -> np.ndarray:
    """[n, n, c] -> [k*k, n/k, n/k, c]: sub-image a*k + b is crop[a::k, b::k]."""
    return np.stack([crop[a::k, b::k] for a in range(k) for b in range(k)])


def join(pieces: np.ndarray, k: int) -> np.ndarray:
    """The inverse of `split`: [k*k, s, s, c] -> [s*k, s*k, c]."""
    count, side, _, channels = pieces.shape
    assert count == k * k, f"{count} sub-images for a {k}×{k} grid"
    crop = np.empty((side * k, side * k, channels), pieces.dtype)
    for a in range(k):
        for b in range(k):
            crop[a::k, b::k] = pieces[a * k + b]
    return crop
