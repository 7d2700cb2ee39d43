"""Box geometry the steps share: overlap of two boxes, of one box with many, greedy NMS.

Boxes are (x1, y1, x2, y2) in pixels. Crop's camera path, swap's face tracks and lipsync's
face boxes link detections by `iou`; the YOLO and SCRFD decoders suppress duplicates with
`greedy_nms`, each with its own reference's conventions (ultralytics: plain areas and a cap
on the count kept; insightface: pixel-inclusive areas, +1 per side).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes (0 when they do not overlap)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray, *, inclusive: bool = False) -> np.ndarray:
    """IoU of `box` with each row of `boxes` [N, 4]. `inclusive`: a box covers the pixels of
    both its corners, so each side is one pixel longer (insightface's convention)."""
    one = 1.0 if inclusive else 0.0
    w = np.maximum(0.0, np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]) + one)
    h = np.maximum(0.0, np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]) + one)
    inter = w * h
    area = (box[2] - box[0] + one) * (box[3] - box[1] + one)
    areas = (boxes[:, 2] - boxes[:, 0] + one) * (boxes[:, 3] - boxes[:, 1] + one)
    return inter / np.maximum(area + areas - inter, 1e-9)


def greedy_nms(
    boxes: np.ndarray,
    order: np.ndarray,
    threshold: float,
    *,
    inclusive: bool = False,
    limit: int | None = None,
) -> list[int]:
    """Indices of the boxes kept, best first: walk `order` (best first), keep a box and drop
    every later one overlapping it by more than `threshold`; stop at `limit` kept."""
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        if limit is not None and len(keep) == limit:
            break
        rest = order[1:]
        order = rest[iou_one_to_many(boxes[best], boxes[rest], inclusive=inclusive) <= threshold]
    return keep
