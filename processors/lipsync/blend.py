"""Put the generated mouth back: a feathered lower-face mask that follows the landmarks.

The model returns the whole 96×96 face, but only its lower half was generated (the upper half
was given), and upscaling makes all of it softer than the frame. So only the lower face is
blended in: a shape laid out on the five landmarks (eyes, nose, mouth corners) — from just
below the nose, as wide as the jaw at the mouth, down past the chin — so an open generated
mouth never shows the original chin under it. The mask is blurred, and falls to exactly zero
before every crop edge that lies inside the frame: every pixel outside it keeps its original
value bit for bit and no square shows. At an edge the frame itself ends (a face cut off by the
frame's bottom) there is nothing to hide and the mask may stay on to the edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Where SCRFD puts the five landmarks in its own box (median over the real Pexels clip):
# eyes, nose, mouth corners as fractions of the box's width and height. The layout for faces
# that come with a box only (a detector without landmarks).
BOX_LANDMARKS = np.array(
    [[0.261, 0.381], [0.721, 0.385], [0.476, 0.542], [0.268, 0.715], [0.704, 0.714]], np.float32
)
# Shape of the blended region, in units of the face: half its width at the mouth, per mouth
# width (the jaw there is a little narrower than two mouths); its top, as the share of the
# nose-to-mouth distance kept above the mouth (the upper lip, not the nostrils); how far past
# the chin it reaches, per eye-to-mouth distance (an open jaw drops below the closed one).
JAW_HALF_WIDTH = 0.85
TOP = 0.65
PAST_CHIN = 0.12
SIGMA = 0.03  # blur, per the crop's smaller side
EDGE_BAND = 0.03  # the taper to zero at an inner crop edge, per that side's length


@dataclass(frozen=True)
class FaceLayout:
    """Where the face sits in its crop (crop pixels): its five landmarks and its chin line."""

    kps: np.ndarray  # [5, 2]
    chin: float  # y of the face box's bottom

    @staticmethod
    def from_box(width: float, height: float, x: float = 0.0, y: float = 0.0) -> FaceLayout:
        """The usual layout of a face whose box is (x, y, x + width, y + height)."""
        kps = BOX_LANDMARKS * np.array([width, height], np.float32) + np.array([x, y], np.float32)
        return FaceLayout(kps, y + height)


def lower_face_mask(
    height: int, width: int, layout: FaceLayout | None = None, *, open_bottom: bool = False
) -> np.ndarray:
    """[h, w, 1] float32 weights in 0..1 for a crop of this size.

    `layout`: the face in the crop (default: a face whose box fills the crop). `open_bottom`:
    the crop's bottom edge is the frame's, so the mask need not fall to zero there.
    """
    if layout is None:
        layout = FaceLayout.from_box(width, height)
    kps = np.asarray(layout.kps, np.float64)
    eyes, nose = kps[:2].mean(0), kps[2]
    mouth = kps[3:5].mean(0)
    down = mouth - eyes
    span = max(float(np.linalg.norm(down)), 1.0)  # eye-to-mouth distance
    down /= span
    right = np.array([-down[1], down[0]])
    half = max(JAW_HALF_WIDTH * float(np.linalg.norm(kps[4] - kps[3])), 0.3 * span)
    top = TOP * min(float((nose - mouth) @ down), -0.1 * span)  # above the mouth: negative
    chin = max(float((layout.chin - mouth[1]) / max(down[1], 0.5)), 0.6 * span)
    bottom = chin + PAST_CHIN * span
    sigma = max(1.0, SIGMA * min(height, width))
    if not open_bottom:
        # The blurred bottom must have faded before the edge band: the crop's margin below the
        # chin (processor.CHIN_MARGIN) leaves room for that on any face the crop holds whole.
        limit = height - 1 - max(1.0, EDGE_BAND * height) - 1.5 * sigma
        bottom = max(0.1 * span, min(bottom, (limit - mouth[1]) / max(down[1], 0.5)))
    # The outline in the face's own frame (right, down), mouth at the origin: a band from
    # under the nose to the mouth, then a half ellipse through the point past the chin.
    arc = [(half * np.cos(t), bottom * np.sin(t)) for t in np.linspace(0, np.pi, 33)]
    outline = [(-half, top), (half, top), *arc]
    points = np.array([mouth + a * right + b * down for a, b in outline])
    mask = np.zeros((height, width), np.float32)
    cv2.fillPoly(mask, [np.round(points * 16).astype(np.int32)], 1.0, cv2.LINE_AA, shift=4)
    # The upper half of the crop was given to the model, not generated: never blend it.
    mask[: height // 2] = 0.0
    mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma, sigmaY=sigma)
    ramp_y = _ramp(height, open_end=open_bottom)
    ramp_x = _ramp(width, open_end=False)
    mask *= ramp_y[:, None] * ramp_x[None, :]
    mask[mask < 1.0 / 512] = 0.0  # would round to no change anyway; keep them exactly untouched
    return mask[:, :, None]


def _ramp(length: int, *, open_end: bool) -> np.ndarray:
    """1 inside, falling to exactly 0 at both ends over the edge band (only the start when
    `open_end`)."""
    index = np.arange(length, dtype=np.float32)
    band = max(1.0, EDGE_BAND * length)
    start = np.clip(index / band, 0, 1)
    end = np.ones_like(start) if open_end else np.clip((length - 1 - index) / band, 0, 1)
    return np.minimum(start, end)


def paste(
    frame: np.ndarray,
    face: np.ndarray,
    box: tuple[int, int, int, int],
    layout: FaceLayout | None = None,
    shows: np.ndarray | None = None,
) -> None:
    """Blend `face` (RGB float 0..255, any size) into `frame` (uint8, in place) at `box`.
    `shows`: float32 [h, w] over the box, 0 where something covers the face (an occluder's
    weight): the mask is limited by it, so a covered pixel keeps its value."""
    x1, y1, x2, y2 = box
    width, height = x2 - x1, y2 - y1
    resized = cv2.resize(face, (width, height), interpolation=cv2.INTER_LINEAR)
    region = frame[y1:y2, x1:x2].astype(np.float32)
    mask = lower_face_mask(height, width, layout, open_bottom=y2 >= frame.shape[0])
    if shows is not None:
        mask = np.minimum(mask, shows[:, :, None])
    blended = region + mask * (resized - region)
    frame[y1:y2, x1:x2] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
