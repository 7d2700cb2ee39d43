"""Where the speaking face is in each frame, and a box steady enough to paste a mouth into.

Boxes come from the swap step's analysis when the chain has one (the face contract of
processors/faces.py: one list of `Face` per frame, no second detection pass); otherwise from
OpenCV's frontal-face Haar cascade, which ships inside the opencv wheel (no weights to fetch).
One face per frame is synced: the largest, since the audio is one speaker's.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from processors.crop.detectors import scaled_gray
from processors.faces import FrameFaces
from processors.lipsync.reach import context_reach  # noqa: F401 (the step's own name for it)

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels
# A Haar box stops around the lower lip; face detectors the model was trained with (S3FD)
# reach the chin. Extending it by this share of its height makes up the difference.
HAAR_CHIN = 0.12
SAME_FACE_IOU = 0.3  # neighbours' boxes below this overlap belong to someone else (a cut)


def _area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def largest(boxes: Sequence[Box]) -> Box | None:
    return max(boxes, key=_area) if boxes else None


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def boxes_from_faces(faces: Sequence[FrameFaces]) -> list[Box | None]:
    """The largest face's box per frame from an earlier step's per-frame faces."""
    out: list[Box | None] = []
    for frame_faces in faces:
        boxes = [tuple(float(v) for v in face.box[:4]) for face in frame_faces]
        out.append(largest(boxes))  # type: ignore[arg-type]
    return out


class HaarFaces:
    """Frontal faces by OpenCV's Haar cascade, on the crop detectors' small grey copy."""

    def __init__(self) -> None:
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise RuntimeError(f"cannot load {path}")

    def largest(self, frame: np.ndarray) -> Box | None:
        height = frame.shape[0]
        gray, scale = scaled_gray(frame)
        found = self._cascade.detectMultiScale(
            gray, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24)
        )
        boxes: list[Box] = []
        for x, y, w, h in found:
            x, y, w, h = (float(v) / scale for v in (x, y, w, h))
            boxes.append((x, y, x + w, min(float(height), y + h * (1 + HAAR_CHIN))))
        return largest(boxes)


def interpolate(before: Box | None, after: Box | None, t: float) -> Box | None:
    """A box between two keyframes' boxes (t in 0..1), or the nearer one's if they are not the
    same face (or one has none)."""
    if before is not None and after is not None and iou(before, after) >= SAME_FACE_IOU:
        return tuple(b + (a - b) * t for b, a in zip(before, after, strict=True))  # type: ignore[return-value]
    return before if t <= 0.5 else after


def checked_keyframe(raw: Box | None, before: Box | None, after: Box | None) -> Box | None:
    """A keyframe's box, unless both neighbouring keyframes agree on a face it does not show
    (a false detection or a miss): then the mean of theirs."""
    if before is None or after is None or iou(before, after) < SAME_FACE_IOU:
        return raw
    if raw is not None and iou(raw, before) >= SAME_FACE_IOU:
        return raw
    return tuple((b + a) / 2 for b, a in zip(before, after, strict=True))  # type: ignore[return-value]


def smooth(window: Sequence[Box | None], centre: int, bridge: bool = True) -> Box | None:
    """Mean of the boxes in `window` that show the face most of the window agrees on.

    The face is chosen by vote (the box with the most same-face boxes around it, the centre's
    own on a tie), so one frame where the detector jumps to a false face is outvoted by its
    neighbours. A centre frame with no box gets one only when the same face is on both sides
    of it inside the window (a detector miss of a frame or two) and `bridge` is set; otherwise
    it has no face and passes through untouched.
    """
    present = [b for b in window if b is not None]

    def support(box: Box) -> list[Box]:
        return [b for b in present if iou(b, box) >= SAME_FACE_IOU]

    middle = window[centre]
    if middle is None:
        if not bridge:
            return None
        after = [b for b in window[centre + 1 :] if b is not None]
        bridging = [
            b
            for b in window[:centre]
            if b is not None and any(iou(b, a) >= SAME_FACE_IOU for a in after)
        ]
        if not bridging:
            return None
        middle = bridging[-1]
    anchor = max(present, key=lambda b: (len(support(b)), b is middle))
    return tuple(float(v) for v in np.mean(np.array(support(anchor)), axis=0))  # type: ignore[return-value]


def crop_box(
    box: Box, pads: Sequence[int], width: int, height: int
) -> tuple[int, int, int, int] | None:
    """The padded face region (pads: top, bottom, left, right in pixels), clipped to the frame;
    None if too little of it is left to be a face."""
    top, bottom, left, right = pads
    x1 = max(0, round(box[0] - left))
    y1 = max(0, round(box[1] - top))
    x2 = min(width, round(box[2] + right))
    y2 = min(height, round(box[3] + bottom))
    if x2 - x1 < 8 or y2 - y1 < 8:
        return None
    return x1, y1, x2, y2
