"""Where the speaking face is in each frame, and a box steady enough to paste a mouth into.

Faces come from the swap step's analysis when the chain has one (the face contract of
processors/faces.py: one list of `Face` per frame, no second detection pass); otherwise from
the SCRFD detector of an analyser pack when the model store holds one; otherwise from OpenCV's
frontal-face Haar cascade, which ships inside the opencv wheel (no weights to fetch). With
`target: largest` one face per frame is synced, the largest, since the audio is one speaker's;
with `target: all` every face is, each smoothed over the neighbouring frames' boxes of the same
face (`smooth_all`).

A face travels as one flat tuple — its box, then its five landmarks — so smoothing and
interpolation move the landmarks with the box, and the blend mask follows them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from processors.crop.detectors import scaled_gray
from processors.faces import FaceAnalyser, FrameFaces, choose_providers
from processors.geometry import iou
from processors.lipsync.blend import BOX_LANDMARKS, FaceLayout
from processors.lipsync.reach import context_reach  # noqa: F401 (the step's own name for it)
from processors.models.store import ModelMissing, open_model_store

log = logging.getLogger("dropbatch.lipsync")

# x1, y1, x2, y2 in frame pixels, then the five landmarks' x, y (eyes, nose, mouth corners).
Box = tuple[float, ...]
# A Haar box stops around the lower lip; face detectors the model was trained with (S3FD)
# reach the chin. Extending it by this share of its height makes up the difference.
HAAR_CHIN = 0.12
# The crop reaches at least this share of the face's height below its box: room for the blend
# mask to pass the chin and fade out before the crop's edge (Wav2Lip's own 10 px pad, scaled).
CHIN_MARGIN = 0.12
SAME_FACE_IOU = 0.3  # neighbours' boxes below this overlap belong to someone else (a cut)
# Where SCRFD's landmarks fall in a Haar box (chin extension included), median over the real
# Pexels clip: the layout a Haar face gets, since the cascade gives no landmarks.
HAAR_LANDMARKS = np.array(
    [[0.302, 0.367], [0.680, 0.362], [0.485, 0.512], [0.307, 0.697], [0.670, 0.700]], np.float32
)


def face_shape(box: Sequence[float], kps: np.ndarray | None, layout: np.ndarray) -> Box:
    """Box and landmarks as one flat tuple; landmarks from `layout` (fractions of the box)
    when the detector gave none."""
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    if kps is None or not np.any(kps):
        kps = layout * np.array([x1 - x0, y1 - y0], np.float32) + np.array([x0, y0], np.float32)
    return (x0, y0, x1, y1, *(float(v) for v in np.asarray(kps).reshape(-1)))


def _area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def largest(boxes: Sequence[Box]) -> Box | None:
    return max(boxes, key=_area) if boxes else None


def shapes_from_faces(faces: Sequence[FrameFaces]) -> list[list[Box]]:
    """Every face (box and landmarks) per frame from an earlier step's faces."""
    return [
        [face_shape(face.box, face.kps, BOX_LANDMARKS) for face in frame_faces]
        for frame_faces in faces
    ]


def boxes_from_faces(faces: Sequence[FrameFaces]) -> list[Box | None]:
    """The largest face (box and landmarks) per frame from an earlier step's faces."""
    return [largest(shapes) for shapes in shapes_from_faces(faces)]


def pack_detector(store: str | Path | None) -> tuple[str, Path] | None:
    """(pack name, verified detection file) of the first analyser pack whose files are all in
    the model store, in catalog order; None when it holds none."""
    opened = open_model_store(store)
    if opened is None:
        return None
    for name, entry in opened.entries().items():
        if entry.role != "analyser" or "detection" not in entry.modules.values():
            continue
        try:
            fetched = opened.fetch(name)  # a present but corrupt file raises: fix the store
        except ModelMissing:
            continue
        return name, fetched.module("detection")
    return None


class ScrfdFaces:
    """Faces and their landmarks by an analyser pack's SCRFD detector."""

    def __init__(self, detector: Path, det_size: int = 640) -> None:
        self._analyser = FaceAnalyser(
            detector, None, det_size=det_size, providers=choose_providers()
        )

    def all(self, frame: np.ndarray) -> list[Box]:
        """Every face found, largest first."""
        return [face_shape(f.box, f.kps, BOX_LANDMARKS) for f in self._analyser.detect(frame)]

    def largest(self, frame: np.ndarray) -> Box | None:
        faces = self.all(frame)  # largest first
        return faces[0] if faces else None


class HaarFaces:
    """Frontal faces by OpenCV's Haar cascade, on the crop detectors' small grey copy."""

    def __init__(self) -> None:
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise RuntimeError(f"cannot load {path}")

    def largest(self, frame: np.ndarray) -> Box | None:
        return largest(self.all(frame))

    def all(self, frame: np.ndarray) -> list[Box]:
        """Every face the cascade finds, its box reaching the chin."""
        height = frame.shape[0]
        gray, scale = scaled_gray(frame)
        found = self._cascade.detectMultiScale(
            gray, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24)
        )
        boxes: list[Box] = []
        for x, y, w, h in found:
            x, y, w, h = (float(v) / scale for v in (x, y, w, h))
            box = (x, y, x + w, min(float(height), y + h * (1 + HAAR_CHIN)))
            boxes.append(face_shape(box, None, HAAR_LANDMARKS))
        return boxes


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


def _same_face(box: Box, others: Sequence[Box]) -> Box | None:
    """The box of `others` that overlaps `box` most, if it shows the same face."""
    best = max(others, key=lambda b: iou(b, box), default=None)
    return best if best is not None and iou(best, box) >= SAME_FACE_IOU else None


def smooth_all(window: Sequence[Sequence[Box]], centre: int, bridge: bool = True) -> list[Box]:
    """Every face of the centre frame of `window` (each frame's boxes), each smoothed as
    `smooth` smooths the one face, over the boxes of the other frames that show the same face
    (the one overlapping it most, at least SAME_FACE_IOU). With `bridge`, a face the centre
    frame misses but the frames on both sides of it show gets a box too (a detector miss).

    There is no vote between faces: every face found is synced, so a face seen in one frame
    only is synced in that frame (with `target: largest` its neighbours would outvote it).
    """
    seeds = list(window[centre])
    if bridge:
        later = window[centre + 1 :]
        for boxes in reversed(window[:centre]):  # the nearest frame's box of a face first
            for box in boxes:
                missed = _same_face(box, seeds) is None
                if missed and any(_same_face(box, after) is not None for after in later):
                    seeds.append(box)
    found: list[Box] = []
    for seed in seeds:
        track = [_same_face(seed, boxes) for boxes in window]
        box = smooth(track, centre, bridge=bridge)
        if box is not None:
            found.append(box)
    return found


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


def placed(
    face: Box, pads: Sequence[int], width: int, height: int
) -> tuple[tuple[int, int, int, int], FaceLayout] | None:
    """The crop a face is synced in (its box padded, the bottom at least CHIN_MARGIN of the
    face below the chin) and where the face sits in it; None if too little is in the frame."""
    top, bottom, left, right = pads
    bottom = max(bottom, round(CHIN_MARGIN * (face[3] - face[1])))
    crop = crop_box(face, (top, bottom, left, right), width, height)
    if crop is None:
        return None
    x0, y0 = crop[:2]
    kps = np.array(face[4:14], np.float32).reshape(5, 2) - np.array([x0, y0], np.float32)
    return crop, FaceLayout(kps, face[3] - y0)
