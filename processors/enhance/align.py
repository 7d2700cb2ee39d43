"""Where a restoration model wants the face: the FFHQ five-point template, the crop aligned to it,
and the mask its restored crop is pasted back with.

GFPGAN, CodeFormer and GPEN-BFR were trained on FFHQ faces aligned by facexlib, whose 512×512
template puts the eyes a little below the middle of the crop and leaves hair, ears and some
background around the face — far more margin than the swapper's ArcFace crop.
"""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np

from processors.faces import similarity

# facexlib's FFHQ template for a 512×512 crop: eyes (image left, right), nose tip, mouth corners.
FFHQ_512 = np.array(
    [[192.98138, 239.94708], [318.90277, 240.19360], [256.63416, 314.01935],
     [201.26117, 371.41043], [313.08905, 371.15118]],
    np.float32,
)  # fmt: skip
# The restored crop fades out well inside the crop's edge (hair and background there): zero on
# the outer 7.5 %, a Gaussian feather of 3.75 % of the side — FaceFusion's box mask at its
# default blur, as fractions of the crop.
MASK_INSET = 0.075
MASK_SIGMA = 0.0375


def ffhq_template(size: int) -> np.ndarray:
    """The five template points for a size×size crop."""
    return FFHQ_512 * (size / 512.0)


def ffhq_matrix(kps: np.ndarray, size: int) -> np.ndarray:
    """The 2×3 similarity taking frame pixels to the size×size FFHQ crop of this face."""
    return similarity(kps, ffhq_template(size))


def aligned_crop(frame: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The face's crop; past the frame's edge the border pixels repeat (black there would be
    restored as part of the face)."""
    return cv2.warpAffine(
        frame, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


@cache
def restore_mask(size: int) -> np.ndarray:
    """A float32 [size, size] blend weight in crop coordinates; read-only, shared."""
    inset = max(1, round(size * MASK_INSET))
    mask = np.zeros((size, size), np.float32)
    mask[inset : size - inset, inset : size - inset] = 1.0
    mask = cv2.GaussianBlur(mask, (0, 0), size * MASK_SIGMA)
    mask.setflags(write=False)
    return mask
