"""YOLO pre- and post-processing shared by the onnxruntime and ultralytics backends.

The maths follows ultralytics' own predictor, so an exported model gives the boxes the
PyTorch one gives: letterbox (scale to fit, pad with grey 114 centred, padding rounded as
`round(pad/2 ∓ 0.1)`), decode the `[84, N]` head (cx, cy, w, h, then 80 class scores already
through a sigmoid), keep a box when its best class is `person` with a score above the
threshold, greedy NMS, and map boxes back by undoing pad and scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from processors.geometry import greedy_nms

INPUT_SIZE = 640
PAD_VALUE = 114
PERSON = 0  # COCO class 0
IOU_THRESHOLD = 0.7  # ultralytics' predict default
MAX_DETECTIONS = 300
MAX_NMS_CANDIDATES = 30000


@dataclass(frozen=True)
class Letterbox:
    """How a frame was fitted into the square network input."""

    scale_x: float
    scale_y: float
    left: int
    top: int
    width: int  # the original frame's size, for clipping
    height: int

    def to_frame(self, boxes: np.ndarray) -> np.ndarray:
        """xyxy boxes in network-input pixels → frame pixels, clipped to the frame."""
        out = boxes.astype(np.float64, copy=True)
        out[:, [0, 2]] = (out[:, [0, 2]] - self.left) / self.scale_x
        out[:, [1, 3]] = (out[:, [1, 3]] - self.top) / self.scale_y
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, self.width)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, self.height)
        return out


def letterbox_params(width: int, height: int, size: int = INPUT_SIZE) -> tuple[Letterbox, tuple]:
    r = min(size / height, size / width)
    new_w, new_h = max(round(width * r), 1), max(round(height * r), 1)
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    # The resize rounds each side, so the effective scale per axis is new/old, not r.
    box = Letterbox(new_w / width, new_h / height, left, top, width, height)
    return box, (new_w, new_h, top, bottom, left, right)


def letterbox(frame: np.ndarray, size: int = INPUT_SIZE, out: np.ndarray | None = None):
    """RGB frame → (square uint8 image [size, size, 3], Letterbox).

    Writes into `out` when given (a slot of a preallocated batch): one resize per frame.
    """
    height, width = frame.shape[:2]
    box, (new_w, new_h, top, _, left, _) = letterbox_params(width, height, size)
    if out is None:
        out = np.empty((size, size, 3), np.uint8)
    out[:] = PAD_VALUE
    inner = out[top : top + new_h, left : left + new_w]
    if (new_w, new_h) == (width, height):
        inner[:] = frame
    else:
        inner[:] = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return out, box


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = IOU_THRESHOLD) -> np.ndarray:
    """Greedy NMS: indices of kept boxes, best first; a box overlapping a kept one by more
    than `iou_threshold` is dropped (the rule torchvision.ops.nms applies)."""
    order = np.argsort(-scores, kind="stable")
    return np.asarray(greedy_nms(boxes, order, iou_threshold, limit=MAX_DETECTIONS), np.int64)


def decode_head(
    head: np.ndarray, confidence: float, iou_threshold: float = IOU_THRESHOLD
) -> tuple[np.ndarray, np.ndarray]:
    """One image's `[4 + classes, N]` output → (person boxes xyxy in input pixels, scores)."""
    scores_all = head[4:]
    best = scores_all.argmax(axis=0)
    score = scores_all[best, np.arange(head.shape[1])]
    # The best class must be person: a box the model calls a car more than a person is a car.
    keep = np.flatnonzero((score > confidence) & (best == PERSON))
    if keep.size > MAX_NMS_CANDIDATES:
        keep = keep[np.argsort(-score[keep], kind="stable")[:MAX_NMS_CANDIDATES]]
    cx, cy, w, h = (head[k, keep].astype(np.float64) for k in range(4))
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    scores = score[keep].astype(np.float64)
    kept = nms(boxes, scores, iou_threshold)
    return boxes[kept], scores[kept]
