"""Five-point face alignment: the ArcFace template and the similarity that maps landmarks onto
it. Apart from faces.py (which re-exports them) so the recogniser that aligns its crops and the
analyser that builds the recogniser form no circle of files."""

from __future__ import annotations

import numpy as np

# The five-point ArcFace template for a 112×112 crop (insightface's `arcface_dst`).
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
     [70.7299, 92.2041]],
    np.float32,
)  # fmt: skip


def template(size: int) -> np.ndarray:
    """The template for a size×size crop, as insightface scales it (112 or multiples of 128)."""
    if size % 112 == 0:
        return ARCFACE_112 * (size / 112.0)
    ratio = size / 128.0
    return ARCFACE_112 * ratio + np.array([8.0 * ratio, 0.0], np.float32)


def align_matrix(kps: np.ndarray, size: int) -> np.ndarray:
    """The 2×3 similarity that maps the landmarks onto the template (least squares, Umeyama)."""
    return similarity(kps, template(size))


def similarity(points: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2×3 similarity (rotation, uniform scale, shift) that maps `points` onto `target`
    with the least squared error (Umeyama); a step aligning to its own template uses it."""
    src = np.asarray(points, np.float64)
    dst = np.asarray(target, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    scale = np.trace(np.diag(sig) @ sign) / s.var(0).sum()
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = mu_d - scale * rot @ mu_s
    return matrix
